"""``medclf-compare RUN [RUN ...]`` (also ``medclf-report --compare``): runs tested on the same
test split, each compared with a baseline (the best by ``optimized_metric``, or
``--baseline``) with paired intervals and tests (medclf.evaluation.comparison); a table, a
forest plot, decision curves and ``compare.html``, logged as an MLflow run of their own
tagged with the runs compared.

Runs whose test data digests differ are refused: their test sets are not the same images.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from medclf.errors import ConfigError, DataError

log = logging.getLogger("medclf.compare")


def _baseline(records, baseline: str | None) -> str:
    """The run id of the baseline: ``baseline`` (an id or a run name), else the best run by
    its ``optimized_metric``."""
    from medclf.search import minimizes

    if baseline is not None:
        found = [r for r in records if baseline in (r.run_id, r.name)]
        if not found:
            listed = ", ".join(f"{r.name} ({r.run_id})" for r in records)
            raise ConfigError(f"--baseline {baseline}: not among the runs compared: {listed}.")
        return found[0].run_id
    scored = [r for r in records if r.best is not None]
    if not scored:
        return records[0].run_id
    metric = scored[0].optimized_metric
    best = (min if minimizes(metric) else max)(scored, key=lambda r: r.best)
    return best.run_id


def _check_same_test_set(records) -> None:
    first = records[0]
    for record in records[1:]:
        if record.test_digest != first.test_digest:
            raise DataError(
                f"runs {first.run_id} and {record.run_id} were tested on different data: test "
                f"digests {first.test_digest} and {record.test_digest}. Compare runs tested on "
                "the same test split (the same data, splits and seed)."
            )
    missing = [r.run_id for r in records if r.predictions is None]
    if missing:
        raise DataError(
            f"run(s) {', '.join(missing)} logged no test/test_predictions.csv (not tested, or "
            "pruned); compare finished, tested runs."
        )


def compare_runs(
    run_ids: list[str],
    tracking_uri: str,
    output_dir: Path,
    baseline: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    command: str = "medclf-compare",
    log_run: bool = True,
) -> dict:
    """Compare the runs; write ``comparison.csv``, the figures and ``compare.html`` to
    ``output_dir``; returns their paths, the table and the comparison's MLflow run id."""
    from medclf.evaluation import comparison
    from medclf.evaluation.decision import decision_curve_figure
    from medclf.evaluation.paired import comparison_figure
    from medclf.evaluation.plots import save_figure
    from medclf.files import write_text
    from medclf.tracking import names
    from medclf.tracking.runs import log_files_run, run_records

    if len(set(run_ids)) < 2:
        raise ConfigError(f"give at least two different runs to compare, got {run_ids}.")
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        records = run_records(tracking_uri, list(dict.fromkeys(run_ids)), Path(scratch))
        _check_same_test_set(records)
        chosen = _baseline(records, baseline)
        frames, class_names = {}, None
        for record in records:
            frame, names_of_run = comparison.read_predictions(record.predictions)
            class_names = class_names or names_of_run
            frames[record.run_id] = frame
        splits = pd.read_csv(records[0].splits, dtype=str) if records[0].splits else None
        first = frames[records[0].run_id]
        test = comparison.test_set(first, class_names, records[0].task, splits)
    ordered = {chosen: frames[chosen], **{k: v for k, v in frames.items() if k != chosen}}
    runs = comparison.aligned(ordered, test)
    label = {r.run_id: f"{r.name} ({r.run_id[:8]})" for r in records}
    for run in runs:
        run.name = label[run.name]
    table = comparison.compare(test, runs, label[chosen], n_resamples, seed)
    files = [output_dir / names.COMPARISON_FILE]
    table.to_csv(files[0], index=False, float_format="%.12g")
    figures = {"comparison": output_dir / names.figure_file("comparison")}
    save_figure(comparison_figure(table), figures["comparison"])
    curves = comparison.decision_curves(test, runs)
    if curves is not None:
        figures["decision_curve"] = output_dir / names.figure_file("decision_curve")
        save_figure(decision_curve_figure(curves), figures["decision_curve"])
        files.append(output_dir / names.DECISION_CURVE_FILE)
        curves.to_csv(files[-1], index=False, float_format="%.9g")
    overview = pd.DataFrame(
        {
            "run": [label[r.run_id] for r in records],
            "role": ["baseline" if r.run_id == chosen else "compared" for r in records],
            "optimized metric": [f"{r.optimized_metric}={r.best}" for r in records],
            "test digest": [r.test_digest for r in records],
        }
    )
    title = f"Comparison of {len(records)} runs (baseline {label[chosen]})"
    text = comparison.page(
        title, overview, table, figures, command, n_resamples, test.groups is not None
    )
    files += [*figures.values(), write_text(output_dir / names.COMPARISON_PAGE, text)]
    run_id = None
    if log_run:
        tags = {
            names.COMPARED_RUNS: ";".join(r.run_id for r in records),
            names.BASELINE_RUN: chosen,
        }
        run_id = log_files_run(
            tracking_uri, records[0].experiment_id, title, tags, files, names.COMPARE_DIR
        )
    significant = table[table["p_holm"] < 0.05]
    log.info(
        "compared %d runs with %s (%d tests, %d significant after Holm); page %s; MLflow run %s",
        len(records),
        label[chosen],
        int(table["p"].notna().sum()),
        len(significant),
        output_dir / names.COMPARISON_PAGE,
        run_id,
    )
    return {"table": table, "files": files, "run_id": run_id, "baseline": chosen}
