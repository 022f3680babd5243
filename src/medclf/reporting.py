"""After testing: per-sample predictions, a per-class report and a confusion matrix.

Files go to ``<run dir>/test/`` and, when an MLflow logger is attached, into the run's
artifacts under ``test/``. ``test_predictions.csv`` has the columns ``sample``, ``label``,
``prediction`` and one ``prob_<class>`` column per class, written with 9 significant digits
(float32 round-trips exactly), so its metrics can be recomputed independently.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from medclf.tracking import mlflow_loggers

log = logging.getLogger(__name__)


def predictions_frame(
    samples: np.ndarray, target: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """One row per sample: id, true and predicted class name, one probability per class."""
    names = np.asarray(class_names, dtype=object)
    frame = pd.DataFrame(
        {"sample": samples, "label": names[target], "prediction": names[probs.argmax(axis=1)]}
    )
    for i, name in enumerate(class_names):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


def per_class_report(frame: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """scikit-learn's classification report as a table (precision, recall, F1, support)."""
    from sklearn.metrics import classification_report

    report = classification_report(
        frame["label"],
        frame["prediction"],
        labels=class_names,
        output_dict=True,
        zero_division=0,
    )
    report.pop("accuracy", None)  # a scalar, not a per-class row; logged as test/accuracy
    table = pd.DataFrame(report).T.rename(columns={"f1-score": "f1"})
    table["support"] = table["support"].astype(int)
    table.index.name = "class"
    return table


class TestReport(Callback):
    """Write and log the test report once testing ends (global rank zero only)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir) / "test"

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outputs = getattr(pl_module, "test_predictions", None)
        if not trainer.is_global_zero or not outputs or trainer.datamodule is None:
            return
        from sklearn.metrics import confusion_matrix

        from medclf.plots import confusion_matrix_figure, save_figure

        class_names = list(pl_module.class_names)
        test = trainer.datamodule.split_frame("test")
        index = outputs["index"].numpy()
        frame = predictions_frame(
            test["sample"].to_numpy()[index],
            outputs["target"].numpy(),
            outputs["probs"].float().numpy(),
            class_names,
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = [self.output_dir / "test_predictions.csv", self.output_dir / "per_class_report.csv"]
        frame.to_csv(files[0], index=False, float_format="%.9g")
        per_class_report(frame, class_names).to_csv(files[1], float_format="%.6f")
        counts = confusion_matrix(frame["label"], frame["prediction"], labels=class_names)
        files.append(self.output_dir / "confusion_matrix.png")
        save_figure(confusion_matrix_figure(counts, class_names), files[-1])
        for logger in mlflow_loggers(trainer.loggers):
            for path in files:
                logger.log_artifact(path, "test")
        log.info("test report written to %s", self.output_dir)
