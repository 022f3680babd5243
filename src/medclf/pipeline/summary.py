"""The end of a run in the console: the headline test metrics with their intervals,
calibration, patients, where the report and the run directory are, and how to open the
MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("medclf.train")

HEADLINE = ("test/accuracy", "test/f1", "test/auroc")


def _intervals(analysis) -> dict[str, tuple[float, float]]:
    intervals = {}
    if analysis is not None and analysis.table is not None:
        for row in analysis.table.itertuples():
            if row.ci_low == row.ci_low:  # not NaN
                intervals[f"test/{row.metric}"] = (row.ci_low, row.ci_high)
    return intervals


def _calibration_line(calibration: dict) -> str:
    if "ece_after" in calibration:
        return (
            f"calibration: temperature {calibration['temperature']:.3f}, test ECE "
            f"{calibration['ece']:.4f} -> {calibration['ece_after']:.4f}, Brier "
            f"{calibration['brier']:.4f} -> {calibration['brier_after']:.4f}"
        )
    return f"calibration: test ECE {calibration['ece']:.4f}, Brier {calibration['brier']:.4f}"


def _data_lines(trainer) -> list[str]:
    """What the decoded cache did, and how long training waited for its data."""
    from medclf.data.cachefill import describe
    from medclf.pipeline.datawait import METRIC, DataWait

    lines = []
    cache = describe(getattr(trainer.datamodule, "cache_stats", None) or {})
    if cache is not None:
        lines.append(cache)
    wait = next((c for c in trainer.callbacks if isinstance(c, DataWait)), None)
    if wait is not None and wait.fractions:
        epochs = ", ".join(f"{100 * f:.0f}%" for f in wait.fractions)
        lines.append(f"data wait ({METRIC}): {epochs} of each epoch's training steps")
    return lines


def summary_lines(trainer, trackers: list, output_dir: Path) -> list[str]:
    """The summary's lines, in order."""
    from medclf.evaluation.report import TestReport
    from medclf.tracking.server import run_url

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    report = next((c for c in trainer.callbacks if isinstance(c, TestReport)), None)
    analysis = report.analysis if report is not None else None
    intervals = _intervals(analysis)

    def shown(key: str) -> str:
        low_high = intervals.get(key)
        ci = f" [{low_high[0]:.4f}, {low_high[1]:.4f}]" if low_high else ""
        return f"{key}={metrics[key]:.4f}{ci}"

    lines = []
    headline = ", ".join(shown(k) for k in HEADLINE if k in metrics)
    if headline:
        lines.append(f"test: {headline}")
    if analysis is not None:
        lines.append(_calibration_line(analysis.calibration))
        if analysis.patients is not None:
            row = analysis.patients.set_index("metric").loc["f1"]
            lines.append(
                f"patients: test_patient/f1={row.value:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]"
            )
    lines += _data_lines(trainer)
    if report is not None and report.html_path is not None and report.html_path.exists():
        lines.append(f"run report: {report.html_path}")
    lines.append(f"run directory: {output_dir}")
    for tracker in trackers:
        uri = tracker.tracking_uri
        lines.append(
            f"MLflow run {tracker.run_id} in experiment {tracker.experiment_name!r} "
            f"(id {tracker.experiment_id}) at {uri}"
        )
        if uri.startswith(("http://", "https://")):
            lines.append(f"open it: {run_url(uri, tracker.experiment_id, tracker.run_id)}")
        else:
            url = run_url("http://127.0.0.1:5000", tracker.experiment_id, tracker.run_id)
            lines.append(f"open it: `make ui`, then {url}")
    return lines


def log_summary(trainer, trackers: list, output_dir: Path) -> None:
    """Log the summary (rank zero)."""
    for line in summary_lines(trainer, trackers, output_dir):
        log.info("%s", line)
