"""Errors a user can cause: each names the key, file or value at fault and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class MedclfError(Exception):
    """Base class of user-facing errors; the message alone is shown, without a traceback.
    ``problems`` lists each problem when the error reports several at once."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class ConfigError(MedclfError):
    """A composed config value is invalid (names the key)."""


class DataError(MedclfError):
    """A data file or folder is missing, empty or unreadable (names the path)."""


class Problems:
    """Collects the user errors of independent checks, to report them all in one error
    instead of stopping at the first::

        problems = Problems()
        with problems.check():
            check_columns()
        with problems.check():
            check_files()
        problems.raise_any()
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.kinds: list[type[MedclfError]] = []

    def add(self, message: str, kind: type[MedclfError] | None = None) -> None:
        self.messages.append(message)
        self.kinds.append(kind or DataError)

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except MedclfError as exc:
            for message in exc.problems:
                self.add(message, type(exc))

    def raise_any(self) -> None:
        """Raise one error holding every problem found (none: return): of the problems'
        class when they share one (ConfigError, DataError...), else a MedclfError."""
        if not self.messages:
            return
        kinds = set(self.kinds)
        kind = kinds.pop() if len(kinds) == 1 else MedclfError
        if len(self.messages) == 1:
            raise kind(self.messages[0])
        listed = "\n  - ".join(self.messages)
        raise kind(f"{len(self.messages)} problems:\n  - {listed}", self.messages)


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest names, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), sorted(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class NonFiniteLossError(MedclfError):
    """The training loss became NaN or infinite."""
