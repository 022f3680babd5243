"""Errors a user can cause: each names the key, file or value at fault and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedclfError(Exception):
    """Base class of user-facing errors; the message alone is shown, without a traceback."""


class ConfigError(MedclfError):
    """A composed config value is invalid (names the key)."""


class DataError(MedclfError):
    """A data file or folder is missing, empty or unreadable (names the path)."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest names, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), sorted(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class NonFiniteLossError(MedclfError):
    """The training loss became NaN or infinite."""


def exit_on_user_error(run, cfg):
    """``run(cfg)`` for a command's Hydra main: a medclf error is logged and printed as one
    line, then the process exits 2 (no traceback)."""
    import logging
    import sys

    try:
        return run(cfg)
    except MedclfError as exc:
        logging.getLogger(run.__module__).error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
