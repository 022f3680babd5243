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
    samples: np.ndarray,
    target: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    task: str = "multiclass",
    threshold: float = 0.5,
) -> pd.DataFrame:
    """One row per sample: id, true and predicted class name, one probability per class.

    multiclass: the prediction is the most probable class. binary: the second class when
    its probability exceeds ``threshold``. multilabel: ``label`` and ``prediction`` join
    the names of the positive labels (probability above ``threshold``) with ``;``.
    """
    names = np.asarray(class_names, dtype=object)
    if task == "multilabel":
        label = [";".join(names[row > 0.5]) for row in target]
        prediction = [";".join(names[row > threshold]) for row in probs]
    elif task == "binary":
        label = names[target]
        prediction = names[(probs[:, 1] > threshold).astype(int)]
    else:
        label = names[target]
        prediction = names[probs.argmax(axis=1)]
    frame = pd.DataFrame({"sample": samples, "label": label, "prediction": prediction})
    for i, name in enumerate(class_names):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


def indicator(column: pd.Series, class_names: list[str]) -> np.ndarray:
    """``;``-joined label names → a 0/1 matrix (N, C)."""
    sets = [set(v.split(";")) if isinstance(v, str) and v else set() for v in column]
    return np.array([[int(c in s) for c in class_names] for s in sets])


def per_class_report(
    frame: pd.DataFrame, class_names: list[str], task: str = "multiclass"
) -> pd.DataFrame:
    """scikit-learn's classification report as a table (precision, recall, F1, support)."""
    from sklearn.metrics import classification_report

    if task == "multilabel":
        y, p = indicator(frame["label"], class_names), indicator(frame["prediction"], class_names)
        report = classification_report(
            y, p, target_names=class_names, output_dict=True, zero_division=0
        )
    else:
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
    sensitivity, specificity = sensitivity_specificity(frame, class_names, task)
    table["sensitivity"] = pd.Series(sensitivity, index=class_names)
    table["specificity"] = pd.Series(specificity, index=class_names)
    return table


def sensitivity_specificity(
    frame: pd.DataFrame, class_names: list[str], task: str = "multiclass"
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, one-vs-rest (as AUCMEDI reports): sensitivity TP / (TP + FN) and
    specificity TN / (TN + FP); 0 where the denominator is 0."""
    if task == "multilabel":
        y, p = indicator(frame["label"], class_names), indicator(frame["prediction"], class_names)
    else:
        names = np.asarray(class_names, dtype=object)
        y = (frame["label"].to_numpy()[:, None] == names).astype(int)
        p = (frame["prediction"].to_numpy()[:, None] == names).astype(int)
    tp = ((y == 1) & (p == 1)).sum(0)
    fn = ((y == 1) & (p == 0)).sum(0)
    tn = ((y == 0) & (p == 0)).sum(0)
    fp = ((y == 0) & (p == 1)).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        specificity = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), 0.0)
    return sensitivity.astype(float), specificity.astype(float)


class TestReport(Callback):
    """Write and log the test report once testing ends (global rank zero only)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir) / "test"

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outputs = getattr(pl_module, "test_predictions", None)
        if not trainer.is_global_zero or not outputs or trainer.datamodule is None:
            return
        from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

        from medclf.plots import (
            confusion_matrix_figure,
            multilabel_confusion_figure,
            per_class_figure,
            roc_pr_figures,
            save_figure,
        )

        class_names = list(pl_module.class_names)
        task, threshold = pl_module.task, float(pl_module.hparams.threshold)
        test = trainer.datamodule.split_frame("test")
        index = outputs["index"].numpy()
        frame = predictions_frame(
            test["sample"].to_numpy()[index],
            outputs["target"].numpy(),
            outputs["probs"].float().numpy(),
            class_names,
            task,
            threshold,
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = [self.output_dir / "test_predictions.csv", self.output_dir / "per_class_report.csv"]
        frame.to_csv(files[0], index=False, float_format="%.9g")
        report = per_class_report(frame, class_names, task)
        report.to_csv(files[1], float_format="%.6f")
        files.append(self.output_dir / "per_class_metrics.png")
        save_figure(per_class_figure(report.loc[class_names]), files[-1])
        roc, pr = roc_pr_figures(
            outputs["target"].numpy(), outputs["probs"].float().numpy(), class_names, task
        )
        for name, figure in (("roc_curves.png", roc), ("pr_curves.png", pr)):
            files.append(self.output_dir / name)
            save_figure(figure, files[-1])
        files.append(self.output_dir / "confusion_matrix.png")
        if task == "multilabel":
            matrices = multilabel_confusion_matrix(
                indicator(frame["label"], class_names), indicator(frame["prediction"], class_names)
            )
            figure = multilabel_confusion_figure(matrices, class_names)
        else:
            counts = confusion_matrix(frame["label"], frame["prediction"], labels=class_names)
            figure = confusion_matrix_figure(counts, class_names)
        save_figure(figure, files[-1])
        rates = {
            f"test/{kind}_{name}": float(report.loc[name, kind])
            for kind in ("sensitivity", "specificity")
            for name in class_names
        }
        for logger in mlflow_loggers(trainer.loggers):
            logger.log_metrics(rates)
            for path in files:
                logger.log_artifact(path, "test")
        log.info("test report written to %s", self.output_dir)


class TrainingCurves(Callback):
    """Record loss and F1 (train and validation) per epoch; after fitting, write
    ``training_curves.png`` and ``history.csv`` and log them to MLflow."""

    KEYS = ("train/loss_epoch", "train/f1", "val/loss", "val/f1")

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.history: list[dict[str, float]] = []
        self._ended_epoch: int | None = None
        self._val_row: dict[str, float] | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs this hook before the module's own ``on_train_epoch_end``, where the
        # train metrics are computed: read the epoch's values at the next hook
        self._ended_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # what a checkpoint taken now knows of this epoch
            self._val_row = self._row(trainer, trainer.current_epoch, self.KEYS[2:])

    def _record(self, trainer: L.Trainer) -> None:
        if self._ended_epoch is None:
            return
        row = self._row(trainer, self._ended_epoch, self.KEYS)
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        self._ended_epoch = None

    @staticmethod
    def _row(trainer: L.Trainer, epoch: int, keys) -> dict[str, float]:
        metrics = trainer.callback_metrics
        row = {"epoch": epoch}
        for key in keys:
            if key in metrics:
                row[key.replace("_epoch", "")] = float(metrics[key])
        return row

    def state_dict(self) -> dict:
        """The rows so far (plain numbers), with the validation values of the epoch being
        checkpointed: a resumed run's curves start where the checkpoint's left off."""
        pending = self._val_row
        done = {r["epoch"] for r in self.history}
        extra = [pending] if pending and pending["epoch"] not in done else []
        return {"history": [dict(r) for r in self.history + extra]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        from medclf.plots import save_figure, training_curves_figure

        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = [self.output_dir / "history.csv", self.output_dir / "training_curves.png"]
        pd.DataFrame(self.history).to_csv(files[0], index=False)
        unfrozen_at = getattr(pl_module, "freeze_epochs", 0) or None
        save_figure(training_curves_figure(self.history, unfrozen_at), files[1])
        for logger in mlflow_loggers(trainer.loggers):
            for path in files:
                logger.log_artifact(path, "plots")
