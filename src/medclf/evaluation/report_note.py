"""The run report's short markdown note: the MLflow run's description (tag
``mlflow.note.content``) with the headline metrics and their intervals, calibration,
threshold, data and the command that reproduces the run."""

from __future__ import annotations

import html
import re

from medclf.evaluation.report_data import HINTS, RunReport, finite, has_intervals, split_sizes
from medclf.evaluation.report_page import format_interval, number


def _md(text: object) -> str:
    """User text for markdown: HTML escaped, so the MLflow UI shows it rather than runs it."""
    return html.escape(str(text), quote=False)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def markdown_summary(report: RunReport, max_metrics: int = 12) -> str:
    """A short markdown note (the MLflow run description, tag ``mlflow.note.content``):
    headline metrics with intervals, calibration, threshold, data, and the command."""
    lines = [f"### {_md(report.title)}", ""]
    metrics = report.metrics
    if metrics is not None and not metrics.empty:
        how = f" (intervals: {_md(report.bootstrap)})" if report.bootstrap else ""
        if not has_intervals(metrics):
            how = f" (no intervals: `{HINTS['intervals']}`)"
        lines += [f"**Metrics**{how}", ""]
        for row in metrics.head(max_metrics).itertuples(index=False):
            low, high = getattr(row, "ci_low", None), getattr(row, "ci_high", None)
            lines.append(f"- {_md(row.metric)}: {format_interval(row.value, low, high)}")
        if len(metrics) > max_metrics:
            lines.append(f"- … {len(metrics) - max_metrics} more in the HTML report")
    else:
        lines.append("**Metrics**: not computed")
    lines.append("")
    calibration = report.calibration or {}
    if calibration:
        text = f"ECE {number(calibration.get('ece'))}, Brier {number(calibration.get('brier'))}"
        if any(finite(calibration.get(k)) for k in ("ece_after", "brier_after")):
            text += (
                f" → after: ECE {number(calibration.get('ece_after'))}, "
                f"Brier {number(calibration.get('brier_after'))}"
            )
        if finite(calibration.get("temperature")):
            text += f" (T = {number(calibration['temperature'])})"
    else:
        text = f"not computed (`{HINTS['calibration']}`)"
    lines.append(f"- **Calibration**: {text}")
    threshold = report.threshold or {}
    if threshold:
        text = _md(threshold.get("rule", ""))
        text += f" on {_md(threshold['chosen_on'])}" if threshold.get("chosen_on") else ""
        values = (threshold.get("values") or {}).items()
        text += (": " + ", ".join(f"{_md(k)} {number(v)}" for k, v in values)) if values else ""
    else:
        text = f"default rule (`{HINTS['threshold']}`)"
    lines.append(f"- **Threshold**: {text}")
    data = report.data
    if data is not None:
        sizes = split_sizes(data)
        text = " · ".join(f"{_md(s)} {n}" for s, n in sizes) + " samples" if sizes else ""
        if not data.group_column:
            leak = "leakage check not run (no group column)"
        elif data.leakage:
            more = f" (and {len(data.leakage) - 1} more)" if len(data.leakage) > 1 else ""
            leak = f"leakage check FAILED: {_md(data.leakage[0])}{more}"
        else:
            leak = "leakage check passed (no patient in two splits)"
        text = "; ".join(t for t in (text, leak) if t)
        if data.duplicates:
            text += f"; identical images across splits: {len(data.duplicates)}"
        lines.append(f"- **Data**: {text}")
    fence = _fence(report.command)
    lines += ["", "**Reproduce**", "", f"{fence}bash", report.command, fence]
    return "\n".join(lines) + "\n"
