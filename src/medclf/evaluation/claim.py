"""The CLAIM checklist (Mongan et al. 2020, Checklist for Artificial Intelligence in Medical
Imaging): the items a tool can fill, each ticked where a run report holds it."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from medclf.evaluation.report_data import RunReport, finite, has_intervals, split_sizes


class ChecklistItem(NamedTuple):
    """One CLAIM 2020 item: its number ("—" where CLAIM has none), whether the report
    holds it, a one-line detail and the section id that does."""

    claim: str
    item: str
    available: bool
    detail: str
    section: str


def _matching(mapping: dict[str, Any], *words: str) -> str:
    """``key: value`` of the entries whose key holds one of ``words`` (``_``/``-`` as spaces)."""
    found = [
        f"{k}: {v}"
        for k, v in mapping.items()
        if any(w in re.sub(r"[_\-]", " ", str(k)).lower() for w in words)
    ]
    return ", ".join(found)


def _listed(mapping: dict[str, Any], limit: int, sep: str = ": ") -> str:
    return ", ".join(f"{k}{sep}{v}" for k, v in list(mapping.items())[:limit])


def checklist(report: RunReport) -> list[ChecklistItem]:
    """The CLAIM 2020 items a tool can fill, each with whether this report holds it."""
    data = report.data
    sizes = split_sizes(data)
    total = sum(n for _, n in sizes)
    split_detail = ", ".join(
        f"{s} {n}" + (f" ({n / total:.0%})" if total else "") for s, n in sizes
    )
    if data is None:
        level = ""
    elif not data.group_column:
        level = "image level (no group column: patients are not kept apart)"
    elif data.leakage:
        level = f"by {data.group_column}, but the leakage check failed"
    else:
        level = f"by {data.group_column}; leakage check passed"
    calibration = report.calibration or {}
    threshold = report.threshold or {}
    chosen = str(threshold.get("rule", ""))
    chosen += f" on {threshold['chosen_on']}" if threshold.get("chosen_on") else ""
    metrics, patients, subgroups = report.metrics, report.patients, report.subgroups
    has_metrics = metrics is not None and not metrics.empty
    has_patients = patients is not None and not patients.empty
    has_subgroups = subgroups is not None and not subgroups.empty
    initialization = _matching(report.model, "pretrain", "init", "weights")
    selection = _matching(report.training, "monitor", "best")
    intervals = has_intervals(metrics)
    rows = [
        ("7", "Data sources", data.source if data else "", "data"),
        ("20", "How data were assigned to partitions; samples per partition", split_detail, "data"),
        ("21", "Level at which partitions are disjoint (patient level?)", level, "data"),
        (
            "22",
            "Model description (backbone, head, inputs, outputs)",
            _listed(report.model, 4),
            "model",
        ),
        (
            "23",
            "Software libraries, frameworks and their versions",
            _listed(report.environment, 8, " "),
            "reproduce",
        ),
        (
            "24",
            "Initialization of model parameters (random, transfer learning)",
            initialization,
            "model",
        ),
        (
            "25",
            "Training details (loss, optimizer, epochs, seed, hyperparameters)",
            _listed(report.training, 5),
            "model",
        ),
        (
            "26",
            "Method of selecting the final model (monitored metric, best epoch)",
            selection,
            "model",
        ),
        (
            "28",
            "Metrics of model performance",
            ", ".join(map(str, metrics["metric"])) if has_metrics else "",
            "metrics",
        ),
        (
            "28",
            "Calibration (ECE, Brier score; recalibration)",
            ("temperature scaling" if finite(calibration.get("temperature")) else "ECE, Brier")
            if calibration
            else "",
            "calibration",
        ),
        ("28", "Threshold selection method", chosen if threshold else "", "threshold"),
        (
            "29",
            "Measures of uncertainty (confidence intervals)",
            (report.bootstrap or "bootstrap") if intervals else "",
            "metrics",
        ),
        (
            "30",
            "Robustness: subgroup analysis",
            ", ".join(sorted(map(str, set(subgroups.get("column", ["by subgroup"])))))
            if has_subgroups
            else "",
            "subgroups",
        ),
        (
            "—",
            "Patient-level performance (the unit partitions keep apart)",
            ", ".join(map(str, patients["metric"])) if has_patients else "",
            "patients",
        ),
        (
            "37",
            "Failure analysis (confusion matrix)",
            "which classes are confused" if "confusion_matrix" in report.figures else "",
            "figures",
        ),
        (
            "—",
            "Code and command to reproduce the run",
            ("command line" + (", run id" if report.run_id else "")) if report.command else "",
            "reproduce",
        ),
    ]
    # an item is there exactly when the report has a detail to show for it
    return [
        ChecklistItem(claim, item, bool(detail), detail, section)
        for claim, item, detail, section in rows
    ]
