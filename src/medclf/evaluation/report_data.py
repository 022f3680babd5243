"""The run report's data: what ``report.html`` and the MLflow run's description show
(:class:`RunReport`), filled from a finished test by :func:`build_report`. The page is drawn
by medclf.evaluation.report_page, the CLAIM checklist ticked by medclf.evaluation.claim."""

from __future__ import annotations

import math
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

SECTIONS: dict[str, str] = {
    "data": "Data",
    "model": "Model and training",
    "metrics": "Metrics",
    "calibration": "Calibration",
    "threshold": "Threshold",
    "decision": "Decision curve",
    "sets": "Prediction sets",
    "subgroups": "Subgroups",
    "patients": "Patients",
    "figures": "Figures",
    "reproduce": "Reproduce",
    "checklist": "Checklist",
}
"""Section id → heading, in page order; the ids are stable anchors (``report.html#metrics``)."""

HINTS: dict[str, str] = {
    "leakage": "datamodule.group_column=patient_id",
    "intervals": "eval.bootstrap=1000",
    "calibration": "calibration=temperature",
    "threshold": "threshold=youden",
    "decision": "head.n_outputs=1 (a binary output) or multi-label data",
    "sets": "conformal.alpha=0.1",
    "subgroups": "eval.subgroups=[sex, age_band]",
    "patients": "datamodule.group_column=patient_id eval.aggregate=mean",
}
"""The overrides that turn on what a section lacks."""


@dataclass
class DataSection:
    """What the data set and its splits looked like, and whether the splits leak."""

    splits: pd.DataFrame
    """One row per split: split, samples, groups (or NaN), one count column per class."""
    group_column: str | None = None
    leakage: list[str] = field(default_factory=list)
    """Messages of the leakage check (a group in two splits); empty: passed."""
    duplicates: list[str] = field(default_factory=list)
    """Warnings about byte-identical images across splits; empty: none found."""
    source: str = ""


@dataclass
class RunReport:
    """Everything the run report shows; all but ``title`` and ``command`` may be missing."""

    title: str
    command: str
    run_id: str | None = None
    created: str | None = None
    data: DataSection | None = None
    model: dict[str, str] = field(default_factory=dict)
    training: dict[str, str] = field(default_factory=dict)
    metrics: pd.DataFrame | None = None
    """Columns metric, value, ci_low, ci_high (NaN intervals when bootstrap is off)."""
    bootstrap: str | None = None
    calibration: dict[str, Any] | None = None
    """ece, brier; optional ece_after, brier_after, temperature, figure (a PNG path)."""
    threshold: dict[str, Any] | None = None
    """rule ("youden", "0.5"), values {label: threshold}, chosen_on ("validation")."""
    subgroups: pd.DataFrame | None = None
    """Columns column, subgroup, n, and per metric m: m, m_ci_low, m_ci_high."""
    patients: pd.DataFrame | None = None
    """Patient-level metrics, the columns of ``metrics``."""
    decision: pd.DataFrame | None = None
    """Net benefit per threshold: threshold, label, model, treat_all, treat_none."""
    sets: dict[str, Any] | None = None
    """Conformal prediction sets: alpha, score, mondrian, table (class, n, coverage,
    mean_size, abstain)."""
    figures: dict[str, Path] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)


def finite(value: object) -> bool:
    """Whether ``value`` is a finite number."""
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def has_intervals(frame: pd.DataFrame | None) -> bool:
    """Whether a metrics table holds at least one finite interval."""
    if frame is None or frame.empty or not {"ci_low", "ci_high"} <= set(frame.columns):
        return False
    return bool((frame["ci_low"].notna() & frame["ci_high"].notna()).any())


def split_sizes(data: DataSection | None) -> list[tuple[str, int]]:
    """(split, samples) per row of the splits table; empty where it is missing."""
    splits = data.splits if data is not None else None
    if splits is None or not {"split", "samples"} <= set(splits.columns):
        return []
    return [(str(s), int(n)) for s, n in splits[["split", "samples"]].itertuples(index=False)]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _best_epoch(trainer) -> str:
    path = str(getattr(trainer.checkpoint_callback, "best_model_path", "") or "")
    found = re.search(r"epoch_(\d+)", Path(path).name)
    return str(int(found.group(1))) if found else "n/a"


def _data_section(datamodule) -> DataSection | None:
    if not hasattr(datamodule, "split_counts"):
        return None
    group = getattr(datamodule, "group_column", None) or getattr(datamodule, "group_pattern", None)
    return DataSection(
        splits=datamodule.split_counts(),
        group_column=group if datamodule.groups else None,
        leakage=[],  # a group in two splits stops the run before training
        duplicates=list(getattr(datamodule, "duplicates_found", [])),
        source=type(datamodule).__name__,
    )


def _threshold(pl_module, rule: str | None) -> dict | None:
    if pl_module.task == "multiclass":
        return {"rule": "argmax of the softmax (no threshold)", "values": {}, "chosen_on": None}
    values = pl_module.threshold
    names = pl_module.class_names[1:] if pl_module.task == "binary" else pl_module.class_names
    values = values if isinstance(values, list) else [values] * len(names)
    return {
        "rule": rule or str(values[0]),
        "values": dict(zip(names, values, strict=True)),
        "chosen_on": "validation" if rule else None,
    }


def _sets(pl_module, analysis) -> dict | None:
    state = getattr(pl_module, "conformal", None)
    if not state or analysis.conformal is None:
        return None
    keys = ("alpha", "score", "mondrian")
    return {**{k: state[k] for k in keys}, "table": analysis.conformal}


def build_report(
    trainer, pl_module, analysis, figures, command, rule, run_id, title: str
) -> RunReport:
    """A RunReport of the run that ``trainer`` just tested."""
    hp = pl_module.hparams
    backbone = dict(hp.get("backbone") or {})
    optimizer = dict(hp.get("optimizer") or {})
    model = {
        "backbone": str(backbone.get("name")),
        "pretrained": str(backbone.get("pretrained")),
        "head": f"{pl_module.head.activation}, {len(pl_module.class_names)} classes",
        "loss": str(dict(hp.get("loss") or {}).get("name")),
        "optimizer": f"{optimizer.get('name')} (lr {optimizer.get('lr')})",
        "task": pl_module.task,
    }
    datamodule = trainer.datamodule
    training = {
        "epochs run": str(trainer.current_epoch),
        "best epoch": _best_epoch(trainer),
        "monitored": str(getattr(trainer.checkpoint_callback, "monitor", None)),
        "batch size": str(getattr(datamodule, "batch_size", "n/a")),
        "seed": str(getattr(datamodule, "seed", "n/a")),
    }
    import lightning
    import torch

    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "medclf": _version("medclf"),
        "device": str(pl_module.device),
    }
    return RunReport(
        title=title,
        command=command,
        run_id=run_id,
        created=datetime.now().strftime("%Y-%m-%d %H:%M"),
        data=_data_section(datamodule),
        model=model,
        training=training,
        metrics=analysis.table,
        bootstrap=analysis.bootstrap,
        calibration=analysis.calibration,
        threshold=_threshold(pl_module, rule),
        subgroups=analysis.subgroups,
        patients=analysis.patients,
        decision=analysis.decision,
        sets=_sets(pl_module, analysis),
        figures=dict(figures),
        environment=environment,
    )
