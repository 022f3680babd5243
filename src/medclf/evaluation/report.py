"""After testing: per-sample predictions, a per-class report and a confusion matrix.

Files go to ``<run dir>/test/`` and, when an MLflow logger is attached, into the run's
artifacts under ``test/``. ``test_predictions.csv`` is medclf.inference.table's format
(``sample``, ``label``, ``prediction``, ``prob_<class>``...), so its metrics can be
recomputed independently; predictions follow medclf.models.outputs.decide.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from medclf.inference.table import FLOAT_FORMAT, predictions_frame
from medclf.tracking import names
from medclf.tracking.logger import mlflow_loggers

log = logging.getLogger(__name__)


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
        labels = np.asarray(class_names, dtype=object)
        y = (frame["label"].to_numpy()[:, None] == labels).astype(int)
        p = (frame["prediction"].to_numpy()[:, None] == labels).astype(int)
    tp = ((y == 1) & (p == 1)).sum(0)
    fn = ((y == 1) & (p == 0)).sum(0)
    tn = ((y == 0) & (p == 0)).sum(0)
    fp = ((y == 0) & (p == 1)).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        specificity = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), 0.0)
    return sensitivity.astype(float), specificity.astype(float)


def write_test_files(
    output_dir: Path,
    frame: pd.DataFrame,
    targets: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    task: str,
) -> tuple[list[Path], dict[str, float]]:
    """The test report's own files in ``output_dir`` from a predictions ``frame``
    (medclf.inference.table): the predictions, the per-class report, the per-class, ROC, PR
    and confusion-matrix figures; returns them and the per-class sensitivity and
    specificity as ``test/`` metrics. Any model's predictions (a stacked ensemble's too)."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    from medclf.evaluation.plots import (
        confusion_matrix_figure,
        multilabel_confusion_figure,
        per_class_figure,
        roc_pr_figures,
        save_figure,
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    files = [output_dir / names.TEST_PREDICTIONS_FILE, output_dir / names.PER_CLASS_FILE]
    frame.to_csv(files[0], index=False, float_format=FLOAT_FORMAT)
    report = per_class_report(frame, class_names, task)
    report.to_csv(files[1], float_format="%.6f")
    files.append(output_dir / names.figure_file("per_class_metrics"))
    save_figure(per_class_figure(report.loc[class_names]), files[-1])
    roc, pr = roc_pr_figures(targets, probs, class_names, task)
    for name, figure in (("roc_curves", roc), ("pr_curves", pr)):
        files.append(output_dir / names.figure_file(name))
        save_figure(figure, files[-1])
    files.append(output_dir / names.figure_file("confusion_matrix"))
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
    return files, rates


class TestReport(Callback):
    """Write and log the test report once testing ends (global rank zero only): predictions,
    per-class report, figures, then (medclf.evaluation.analysis) intervals, calibration,
    subgroups and patients, and the run's ``report.html`` (medclf.evaluation.report_data,
    report_page)."""

    def __init__(
        self,
        output_dir: str | Path,
        settings: Any = None,
        command: str = "",
        threshold: Any = None,
        seed: int = 0,
    ) -> None:
        from medclf.evaluation.analysis import Settings
        from medclf.evaluation.thresholds import ThresholdRule, parse_threshold

        self.run_dir = Path(output_dir)
        self.output_dir = self.run_dir / names.TEST_DIR
        if settings is None or not isinstance(settings, Settings):
            settings = Settings.of(settings, seed)  # the eval block
        self.settings = settings
        self.command = command
        rule = parse_threshold(threshold) if threshold is not None else None
        self.threshold_rule = str(rule) if isinstance(rule, ThresholdRule) else None
        self.analysis = None  # the last test's (medclf.evaluation.analysis.Analysis)
        self.html_path: Path | None = None  # the last test's report.html

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outputs = getattr(pl_module, "test_predictions", None)
        if not trainer.is_global_zero or not outputs or trainer.datamodule is None:
            return
        from medclf.runtime import wait_background

        wait_background()  # the training curves' figure: pyplot draws one figure at a time
        class_names = list(pl_module.class_names)
        task, threshold = pl_module.task, pl_module.threshold
        conformal = getattr(pl_module, "conformal", None)
        gate = getattr(pl_module, "ood", None)
        ood = None
        if gate:
            from medclf.audit.ood import score

            features = outputs.get("features")
            ood = score(
                gate,
                outputs["logits"].float().numpy(),
                None if features is None else features.numpy(),
            )
            ood = (ood, gate)
        test = trainer.datamodule.split_frame("test")
        index = outputs["index"].numpy()
        frame = predictions_frame(
            test["sample"].to_numpy()[index],
            outputs["probs"].float().numpy(),
            class_names,
            task,
            threshold,
            targets=outputs["target"].numpy(),
            conformal=conformal,
            ood=ood,
        )
        files, rates = write_test_files(
            self.output_dir,
            frame,
            outputs["target"].numpy(),
            outputs["probs"].float().numpy(),
            class_names,
            task,
        )
        from medclf.evaluation.analysis import analyse
        from medclf.evaluation.report_data import build_report
        from medclf.evaluation.report_note import markdown_summary
        from medclf.evaluation.report_page import write_html

        datamodule = trainer.datamodule
        groups = test["group"].to_numpy()[index] if "group" in test.columns else None
        if groups is not None and pd.isna(groups).all():
            groups = None
        info = datamodule.split_info("test") if hasattr(datamodule, "split_info") else None
        analysis = self.analysis = analyse(
            outputs["target"].numpy(),
            outputs["probs"].float().numpy(),
            outputs["logits"].float().numpy() if "logits" in outputs else None,
            task,
            class_names,
            threshold,
            float(getattr(pl_module, "temperature", 1.0)),
            pl_module.head.activation,
            groups,
            info.iloc[index].reset_index(drop=True) if info is not None else None,
            self.settings,
            self.output_dir,
            conformal,
        )
        files += analysis.files
        metrics = {**rates, **analysis.metrics}
        if ood is not None:  # the share of test images the gate flags (about 1 - quantile)
            metrics["test/ood_flagged"] = float(frame["ood"].mean())
        trackers = mlflow_loggers(trainer.loggers)
        figures = {p.stem: p for p in files if p.suffix == ".png"}
        report_run = build_report(
            trainer,
            pl_module,
            analysis,
            figures,
            self.command,
            self.threshold_rule,
            trackers[0].run_id if trackers else None,
            f"medclf run {self.run_dir.name}",
        )
        html = write_html(report_run, self.run_dir / names.REPORT_FILE)
        note = markdown_summary(report_run)
        self.html_path = html
        for logger in trackers:
            logger.log_metrics(metrics)
            for path in files:
                logger.log_artifact(path, names.TEST_DIR)
            logger.log_artifact(html)
            logger.set_tags({names.NOTE: note})
        log.info("test report written to %s; run report %s", self.output_dir, html)
