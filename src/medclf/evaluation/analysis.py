"""What the test report adds for a study to publish, from the test predictions: bootstrap
intervals of every headline metric (resampling patients when the data has groups),
calibration (ECE, Brier score, reliability diagram, before and after a fitted temperature),
subgroup metrics with a forest plot, and patient-level metrics.

:func:`analyse` returns the metrics to log (``test/<metric>_ci_low``/``_ci_high``,
``test/ece``, ``test/brier``, ``test_patient/<metric>`` …), the files it wrote and the
tables the run report shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medclf.evaluation.calibration import (
    brier_score,
    calibration_intercept_slope,
    expected_calibration_error,
    reliability_diagram,
)
from medclf.evaluation.intervals import metric_values
from medclf.evaluation.proportions import MIN_COUNT, MIN_UNITS, robust_intervals
from medclf.models.outputs import class_probabilities, decide
from medclf.tracking.logger import mlflow_key
from medclf.tracking.names import (
    CONFORMAL_FILE,
    DECISION_CURVE_FILE,
    METRICS_FILE,
    PATIENT_PREDICTIONS_FILE,
    SUBGROUPS_FILE,
    figure_file,
)

AGGREGATES = ("mean", "max")


@dataclass
class Settings:
    """The ``eval`` config block."""

    bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0
    subgroups: list[str] = field(default_factory=list)
    bins: object = 4
    aggregate: str | None = None

    @classmethod
    def of(cls, node, seed: int) -> Settings:
        node = dict(node or {})
        settings = cls(
            bootstrap=int(node.get("bootstrap", 1000) or 0),
            level=float(node.get("level", 0.95)),
            seed=int(seed),
            subgroups=list(node.get("subgroups") or []),
            bins=node.get("bins", 4),
            aggregate=node.get("aggregate"),
        )
        return settings


@dataclass
class Analysis:
    metrics: dict[str, float] = field(default_factory=dict)  # to log, with the test/ prefix
    table: pd.DataFrame | None = None  # metric, value, ci_low, ci_high, interval (its method)
    calibration: dict = field(default_factory=dict)
    subgroups: pd.DataFrame | None = None
    patients: pd.DataFrame | None = None
    files: list[Path] = field(default_factory=list)
    bootstrap: str | None = None
    decision: pd.DataFrame | None = None  # net benefit per threshold (binary, multi-label)
    conformal: pd.DataFrame | None = None  # prediction sets' coverage and size per class


def interval_table(values: dict[str, float], intervals: dict[str, tuple]) -> pd.DataFrame:
    """metric, value, ci_low, ci_high and ``interval``: how the interval was made (bootstrap,
    an exact binomial one, "too small" for a claim, or none; medclf.evaluation.proportions)."""
    return pd.DataFrame(
        [
            {
                "metric": k,
                "value": v,
                "ci_low": intervals.get(k, (np.nan,))[0],
                "ci_high": intervals.get(k, (np.nan, np.nan))[1],
                "interval": intervals.get(k, (np.nan, np.nan, "none"))[2],
            }
            for k, v in values.items()
        ]
    )


def analyse(
    targets: np.ndarray,
    probs: np.ndarray,
    logits: np.ndarray | None,
    task: str,
    class_names: Sequence[str],
    threshold,
    temperature: float,
    activation: str,
    groups: np.ndarray | None,
    info: pd.DataFrame | None,
    settings: Settings,
    output_dir: Path,
    conformal: dict | None = None,
) -> Analysis:
    """Everything above for one test set; figures and tables go to ``output_dir``. With a
    ``conformal`` state, the prediction sets' coverage and size (overall and per class)."""
    from medclf.evaluation.plots import save_figure

    result = Analysis()
    chosen = np.asarray(decide(probs, task, threshold))
    values, intervals = _scored(targets, probs, chosen, task, class_names, groups, settings)
    if settings.bootstrap:
        unit = "patients (groups)" if groups is not None else "samples"
        result.bootstrap = (
            f"{settings.bootstrap} resamples of {unit}, {settings.level:.0%} percentile intervals; "
            "exact binomial (Clopper-Pearson) ones for proportions with under "
            f"{MIN_COUNT} successes or failures or under {MIN_UNITS} {unit}"
        )
        for name, (low, high, _) in intervals.items():
            if np.isfinite(low) and np.isfinite(high):
                result.metrics[f"test/{name}_ci_low"] = low
                result.metrics[f"test/{name}_ci_high"] = high
    result.table = interval_table(values, intervals)
    path = output_dir / METRICS_FILE  # each figure with its interval and how it was made
    result.table.to_csv(path, index=False, float_format="%.6f")
    result.files.append(path)
    result.decision = _decision_curve(targets, probs, task, class_names, output_dir, result)
    if conformal is not None:
        result.conformal = _conformal(
            targets, probs, task, class_names, conformal, output_dir, result
        )

    result.calibration = _calibration(
        targets, probs, logits, task, class_names, temperature, activation, result
    )
    figure = reliability_diagram(
        result.calibration.pop("_before"),
        targets,
        task,
        class_names,
        after=result.calibration.pop("_after"),
    )
    path = output_dir / figure_file("reliability")
    save_figure(figure, path)
    result.files.append(path)
    result.calibration["figure"] = path

    if settings.subgroups:
        result.subgroups = _subgroups(
            targets, probs, chosen, task, class_names, groups, info, settings, output_dir, result
        )
    if settings.aggregate:
        if groups is None:  # the pre-flight refuses this (medclf.pipeline.rules.check_eval)
            raise ValueError(f"aggregate={settings.aggregate} needs groups")
        result.patients = _patients(
            targets, probs, task, class_names, threshold, groups, settings, output_dir, result
        )
    return result


def _scored(targets, probs, chosen, task, class_names, groups, settings: Settings):
    """(metric values, their intervals with their method: the bootstrap, exact where it
    cannot work, "too small" below any claim; {} with ``eval.bootstrap=0``)."""
    values = metric_values(targets, probs, chosen, task, class_names)
    if not settings.bootstrap:
        return values, {}
    intervals = robust_intervals(
        targets,
        probs,
        chosen,
        task,
        class_names,
        groups,
        settings.bootstrap,
        settings.seed,
        settings.level,
    )
    return values, intervals


def _calibration(targets, probs, logits, task, class_names, temperature, activation, result):
    """ECE (15 bins) and Brier score of the test probabilities; with a fitted temperature,
    also of the uncalibrated ones (the same logits at temperature 1)."""
    ece = expected_calibration_error(probs, targets, task, average="macro")
    brier = brier_score(probs, targets, task, average="macro")
    fitted = calibration_intercept_slope(probs, targets, task, average="macro")
    result.metrics["test/ece"], result.metrics["test/brier"] = ece, brier
    result.metrics["test/calibration_intercept"] = fitted.intercept
    result.metrics["test/calibration_slope"] = fitted.slope
    calibration = {
        "ece": ece,
        "brier": brier,
        "intercept": fitted.intercept,
        "slope": fitted.slope,
        "_before": probs,
        "_after": None,
    }
    if task == "multilabel":
        per_label = expected_calibration_error(probs, targets, task)
        for index, name in enumerate(class_names):
            result.metrics[f"test/ece_{name}"] = per_label[index]
    if temperature != 1.0 and logits is not None:
        raw = class_probabilities(_torch(logits), activation, task == "binary").numpy()
        before_ece = expected_calibration_error(raw, targets, task, average="macro")
        before_brier = brier_score(raw, targets, task, average="macro")
        result.metrics["test/ece_uncalibrated"] = before_ece
        result.metrics["test/brier_uncalibrated"] = before_brier
        calibration.update(
            ece=before_ece,
            brier=before_brier,
            ece_after=ece,
            brier_after=brier,
            temperature=temperature,
            _before=raw,
            _after=probs,
        )
    return calibration


def _decision_curve(targets, probs, task, class_names, output_dir, result):
    """Net benefit against threshold with treat-all and treat-none (binary and multi-label
    outputs; a softmax over several classes has no single treat decision): CSV and figure."""
    from medclf.evaluation.decision import decision_curve, decision_curve_figure
    from medclf.evaluation.plots import save_figure

    if task not in ("binary", "multilabel"):
        return None
    table = decision_curve(targets, probs, task, class_names)
    path = output_dir / DECISION_CURVE_FILE
    table.to_csv(path, index=False, float_format="%.9g")
    figure_path = output_dir / figure_file("decision_curve")
    save_figure(decision_curve_figure(table), figure_path)
    result.files += [path, figure_path]
    return table


def _conformal(targets, probs, task, class_names, state, output_dir, result):
    """Empirical coverage, mean set size and abstention of the prediction sets, overall and
    per class (conformal_sets.csv; test/conformal_* metrics)."""
    from medclf.evaluation.conformal import coverage_table, predict_sets

    table = coverage_table(predict_sets(probs, state), targets, task, class_names)
    path = output_dir / CONFORMAL_FILE
    table.to_csv(path, index=False, float_format="%.6f")
    result.files.append(path)
    overall = table.iloc[0]
    result.metrics["test/conformal_coverage"] = float(overall["coverage"])
    result.metrics["test/conformal_set_size"] = float(overall["mean_size"])
    result.metrics["test/conformal_abstain"] = float(overall["abstain"])
    for _, row in table.iloc[1:].iterrows():
        if np.isfinite(row["coverage"]):
            key = mlflow_key(f"test/conformal_coverage_{row['class']}")
            result.metrics[key] = float(row["coverage"])
    return table


def _torch(array):
    import torch

    return torch.as_tensor(np.asarray(array, dtype=np.float32))


def _subgroups(
    targets, probs, chosen, task, class_names, groups, info, settings, output_dir, result
):
    from medclf.evaluation.plots import save_figure
    from medclf.evaluation.subgroups import forest_figure, subgroup_table

    missing = [c for c in settings.subgroups if info is None or c not in info.columns]
    if missing:  # the pre-flight refuses this (medclf.pipeline.rules.check_eval)
        raise ValueError(f"subgroups: no column {missing} in the test samples' table")
    columns = {c: _typed(info[c].reset_index(drop=True)) for c in settings.subgroups}
    table = subgroup_table(
        targets,
        probs,
        chosen,
        task,
        class_names,
        columns,
        settings.bins,
        groups,
        settings.bootstrap,
        settings.seed,
        settings.level,
    )
    path = output_dir / SUBGROUPS_FILE
    table.to_csv(path, index=False, float_format="%.6f")
    figure_path = output_dir / figure_file("subgroups_forest")
    save_figure(forest_figure(table, "f1"), figure_path)
    result.files += [path, figure_path]
    for row in table.itertuples():
        if row.column == "overall":
            continue
        key = f"test_subgroup/{row.column}={row.subgroup}/f1"
        result.metrics[mlflow_key(key)] = float(row.f1)
    return table


def _typed(column: pd.Series) -> pd.Series:
    """A CSV column (read as text) as numbers when every filled cell is one (then binned)."""
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().sum() == column.notna().sum() else column


def _patients(targets, probs, task, class_names, threshold, groups, settings, output_dir, result):
    """One row per patient: the mean (or max) of its images' probabilities, its label the
    most frequent of its images' (multi-label: any image's)."""
    names, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    frame = pd.DataFrame(probs).groupby(inverse)
    pooled = (frame.mean() if settings.aggregate == "mean" else frame.max()).to_numpy()
    if task == "binary" or task == "multiclass":
        pooled = (
            pooled / pooled.sum(axis=1, keepdims=True) if settings.aggregate == "max" else pooled
        )
        labels = pd.Series(np.asarray(targets)).groupby(inverse).agg(lambda v: v.mode().iloc[0])
        patient_targets = labels.to_numpy()
    else:
        patient_targets = pd.DataFrame(np.asarray(targets)).groupby(inverse).max().to_numpy()
    chosen = np.asarray(decide(pooled.astype(np.float32), task, threshold))
    values, intervals = _scored(patient_targets, pooled, chosen, task, class_names, None, settings)
    for name, value in values.items():
        result.metrics[f"test_patient/{name}"] = value
    for name, (low, high, _) in intervals.items():
        if np.isfinite(low) and np.isfinite(high):
            result.metrics[f"test_patient/{name}_ci_low"] = low
            result.metrics[f"test_patient/{name}_ci_high"] = high
    from medclf.inference.table import FLOAT_FORMAT, predictions_frame

    table = predictions_frame(names, pooled, class_names, task, threshold, patient_targets)
    path = output_dir / PATIENT_PREDICTIONS_FILE
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    result.files.append(path)
    return interval_table(values, intervals)
