"""A quiet console (medclf.console): each filter drops exactly its library's noise and keeps
real warnings; ``python train.py`` as ``make train`` runs it prints no third-party warning,
no progress bar after training, and ends with the summary."""

from __future__ import annotations

import logging
import re
import warnings

import pytest

from helpers import FAST, TINY_PROCESS, train_process
from medclf import console


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        console.quiet()  # as every run in this process installs it
        yield


def test_each_warning_filter_drops_its_warning_and_keeps_others(quiet) -> None:
    import torch.utils._pytree as pytree

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # pytest's own filters off, then medclf's on
        console.quiet()
        pytree.LeafSpec()  # torch's deprecation, as Lightning triggers it
        warnings.warn("a real warning of the user's own", UserWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` said another", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in seen]
    assert not any("is deprecated, use `isinstance(treespec, TreeSpec)" in m for m in messages)
    assert "a real warning of the user's own" in messages
    assert len(messages) == 2, messages  # another category with a similar text stays


def test_mlflow_type_hint_advice_is_dropped_where_it_arises() -> None:
    """MLflow resets the filters around its check, so the display is what is replaced."""
    import mlflow

    def shown(block: bool) -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if block:
                with console.without_warning(console.TYPE_HINT_ADVICE):

                    class Quiet(mlflow.pyfunc.PythonModel):
                        def predict(self, context, model_input, params=None):
                            return model_input

            else:

                class Loud(mlflow.pyfunc.PythonModel):
                    def predict(self, context, model_input, params=None):
                        return model_input

        return [str(w.message) for w in seen]

    assert any("Add type hints" in m for m in shown(block=False))
    assert not any("Add type hints" in m for m in shown(block=True))


@pytest.mark.parametrize(
    ("logger", "line"),
    [
        ("lightning.pytorch.utilities.rank_zero", "GPU available: False, used: False"),
        ("lightning.pytorch.utilities.rank_zero", "`Trainer.fit` stopped: `max_epochs=1` reached."),
        ("lightning.pytorch.utilities.rank_zero", "Restoring states from the checkpoint path at x"),
        ("mlflow.store.db.utils", "Creating initial MLflow database tables..."),
        ("mlflow.pyfunc", "Validating input example against model signature"),
    ],
)
def test_each_log_filter_drops_its_info_line_and_keeps_warnings(quiet, logger, line) -> None:
    target = logging.getLogger(logger)
    kept: list[tuple[int, str]] = []
    handler = logging.Handler()
    handler.emit = lambda record: kept.append((record.levelno, record.getMessage()))
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        target.info(line)
        target.warning(line)  # a warning with the same words is kept
        target.info("anything else")
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
    assert kept == [(logging.WARNING, line), (logging.INFO, "anything else")]


@pytest.mark.slow
def test_train_py_says_only_what_matters(tmp_path) -> None:
    # (log_every_n_steps: FAST's 4 batches would rightly make Lightning warn about it)
    result = train_process(
        tmp_path,
        *TINY_PROCESS,
        *FAST,
        "trainer.log_every_n_steps=1",
        "eval.bootstrap=100",
        "logger.mlflow.save_model=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    third_party = [
        line
        for line in lines
        if re.search(r"site-packages/(?!medclf).*(Warning|: )", line) or "color_warning(" in line
    ]
    assert not third_party, third_party
    assert not any("Downloading artifacts" in line for line in lines)
    assert not any("Test metric" in line or "DataLoader 0" in line for line in lines)
    end = next(i for i, line in enumerate(lines) if "test report written" in line)
    assert not any("━" in line or "it/s" in line for line in lines[end:]), lines[end:]
    tail = [re.sub(r"^\[[^]]*\]\[[^]]*\]\[INFO\] - ", "", line) for line in lines[-10:]]
    summary = tail[next(i for i, line in enumerate(tail) if line.startswith("test: test/")) :]
    assert summary[0].startswith("test: test/accuracy=") and "[" in summary[0]
    assert summary[1].startswith("calibration: test ECE")
    assert summary[2].startswith("decoded cache (memory): 1797 images")  # digits' default
    assert summary[3].startswith("data wait (time/data_wait_fraction): ")
    assert summary[4].startswith("run report: ") and summary[-1].startswith("open it: ")
    assert len(summary) == 8  # + run directory, MLflow run
    warned = [line for line in lines if "WARNING" in line]
    assert not warned, warned  # e.g. the default data waits no more
