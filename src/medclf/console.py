"""A console that says only what matters: the warnings, log lines and progress bars of other
libraries that a medclf user can do nothing about are filtered where they arise; real
warnings stay. Each filter names the library and the message it drops, and each is tested
(tests/test_console.py). ``verbose=true`` keeps everything.

Filtered:

* torch's ``isinstance(treespec, LeafSpec)`` FutureWarning about Lightning's own use of
  torch's pytree API (every fit and test);
* MLflow's "Add type hints to the `predict` method" UserWarning (medclf's pyfunc model takes
  images or a dict of images and metadata, which its type hints cannot describe), dropped
  where the model class is defined (:func:`without_warning`: MLflow resets the filters
  around it), and its "Validating input example" line;
* MLflow's "Creating initial MLflow database tables" / "Updating database tables" lines of a
  new local store, and its "Downloading artifacts" progress bars;
* Lightning's accelerator lines ("GPU available: False"), its checkpoint restoring lines
  and "`Trainer.fit` stopped: `max_epochs=N` reached" (the run's own log says what ran).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator

WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, "torch, for lightning"),
)
"""(message regex, category, library) of the warnings dropped."""

LOG_LINES: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": (
        r"^(GPU|TPU|HPU|IPU) available: ",
        r"^Restoring states from the checkpoint path at ",
        r"^Loaded model weights from the checkpoint at ",
        r"^`Trainer\.fit` stopped: ",
        r"^💡 Tip",
    ),
    "mlflow.store.db.utils": (r"^Creating initial MLflow database tables", r"^Updating database"),
    "mlflow.pyfunc": (r"^Validating input example against model signature",),
}
"""Logger name → regexes of the INFO lines dropped from it."""


class _Drop(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = str(record.msg)
        return not any(p.search(message) for p in self.patterns)


_installed: list[tuple[logging.Logger, logging.Filter]] = []
_verbose = False


TYPE_HINT_ADVICE = r".*Add type hints to the `predict` method"
"""MLflow's advice on a PythonModel without type hints (with ANSI colour codes)."""


@contextlib.contextmanager
def without_warning(pattern: str) -> Iterator[None]:
    """Drop the warnings whose message matches ``pattern`` while the block runs, also where
    the library emitting them resets the warning filters (MLflow wraps its checks in
    ``catch_warnings`` with ``simplefilter("once")``): the display is replaced, not the
    filters. After ``quiet(verbose=True)`` they are shown."""
    if _verbose:
        yield
        return
    shown = warnings.showwarning
    match = re.compile(pattern).match

    def show(message, category, filename, lineno, file=None, line=None):
        if not match(str(message)):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def quiet(verbose: bool = False) -> None:
    """Install the filters (once; ``verbose``: remove them)."""
    for logger, found in _installed:
        logger.removeFilter(found)
    _installed.clear()
    global _verbose
    _verbose = verbose
    if verbose:
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for message, category, _ in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, patterns in LOG_LINES.items():
        logger = logging.getLogger(name)
        found = _Drop(patterns)
        logger.addFilter(found)
        _installed.append((logger, found))
