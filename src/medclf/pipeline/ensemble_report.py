"""A stacked ensemble's test report and MLflow run, like any run's: the test predictions and
per-class report, intervals, calibration, threshold, decision curve and ``report.html``,
plus the ensemble against each member on the same test samples (paired bootstrap, DeLong,
McNemar, Holm: medclf.evaluation.comparison). The run gets the members' dataset inputs (one
test digest), ``splits.csv``, the ``ensemble`` artifact and, with ``save_model``, the
MLflow model (medclf.inference.pyfunc.EnsembleModel)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from medclf.tracking import names

log = logging.getLogger("medclf.ensemble")


@dataclass
class EnsembleReport:
    metrics: dict[str, float]
    files: list[Path]
    html: Path
    note: str
    comparison: pd.DataFrame | None = None
    validation: dict[str, float] = field(default_factory=dict)


def _chosen(probs: np.ndarray, task: str, threshold: Any) -> np.ndarray:
    from medclf.models.outputs import decide

    return np.asarray(decide(np.asarray(probs, dtype=np.float32), task, threshold), dtype=bool)


def members_comparison(rows, members, probs, threshold, settings, label: str) -> pd.DataFrame:
    """The ensemble (``label``) against each member (its folds averaged, decided at 0.5 or
    by argmax) on the shared test samples, paired."""
    from medclf.evaluation.comparison import Compared, compare

    runs = [
        Compared(label, np.asarray(probs, dtype=np.float64), _chosen(probs, rows.task, threshold))
    ]
    for member, member_probs in zip(members, rows.test_probs, strict=True):
        runs.append(Compared(member.name, member_probs, _chosen(member_probs, rows.task, 0.5)))
    seen: dict[str, int] = {}
    for run in runs:  # two members of one name (same backbone) are told apart
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
    return compare(rows.test, runs, label, settings.bootstrap, settings.seed)


def _data_section(rows, groups: bool):
    from medclf.evaluation.report_data import DataSection

    def counts(split: str, targets) -> dict:
        targets = np.asarray(targets)
        per = (
            targets.sum(0)
            if rows.task == "multilabel"
            else np.bincount(targets.astype(int), minlength=len(rows.class_names))
        )
        return {
            "split": split,
            "samples": len(targets),
            "groups": np.nan,
            **{n: int(c) for n, c in zip(rows.class_names, per, strict=True)},
        }

    table = pd.DataFrame(
        [counts("held out (metalearner)", rows.targets), counts("test", rows.test.targets)]
    )
    return DataSection(
        splits=table, group_column="group" if groups else None, source="the members' runs"
    )


def write_report(cfg, ensemble, members, rows, probs, validated, output_dir: Path, command: str):
    """Write the test report of the ensemble's test ``probs`` into ``output_dir``."""
    import platform

    import lightning
    import torch

    from medclf.evaluation.analysis import Settings, analyse
    from medclf.evaluation.intervals import metric_values
    from medclf.evaluation.paired import comparison_figure
    from medclf.evaluation.plots import save_figure
    from medclf.evaluation.report import write_test_files
    from medclf.evaluation.report_data import RunReport
    from medclf.evaluation.report_note import markdown_summary
    from medclf.evaluation.report_page import write_html
    from medclf.inference.table import predictions_frame

    settings = Settings.of(cfg.get("eval"), int(cfg.get("seed", 0)))
    task, class_names, threshold = rows.task, rows.class_names, ensemble.threshold
    test_dir = output_dir / names.TEST_DIR
    frame = predictions_frame(
        rows.test.samples, probs, class_names, task, threshold, targets=rows.test.targets
    )
    files, rates = write_test_files(test_dir, frame, rows.test.targets, probs, class_names, task)
    activation = "softmax" if task == "multiclass" else "sigmoid"
    analysis = analyse(
        rows.test.targets,
        probs,
        None,
        task,
        class_names,
        threshold,
        1.0,
        activation,
        rows.test.groups,
        None,
        settings,
        test_dir,
    )
    files += analysis.files
    chosen = _chosen(probs, task, threshold)
    values = metric_values(rows.test.targets, probs, chosen, task, class_names)
    metrics = {**{f"test/{k}": float(v) for k, v in values.items()}, **rates, **analysis.metrics}
    held = metric_values(
        rows.targets, validated, _chosen(validated, task, threshold), task, class_names
    )
    validation = {f"val/{k}": float(held[k]) for k in ("accuracy", "f1", "auroc") if k in held}
    metrics.update(validation)
    figures = {p.stem: p for p in files if p.suffix == ".png"}
    comparison = None
    label = f"ensemble ({ensemble.meta.name})"
    comparison = members_comparison(rows, members, probs, threshold, settings, label)
    files.append(test_dir / names.ENSEMBLE_COMPARISON_FILE)
    comparison.to_csv(files[-1], index=False, float_format="%.12g")
    figures["comparison"] = test_dir / names.figure_file("comparison")
    save_figure(comparison_figure(comparison), figures["comparison"])
    files.append(figures["comparison"])
    meta = ensemble.meta
    report = RunReport(
        title=f"medclf stacked ensemble {output_dir.name}",
        command=command,
        created=datetime.now().strftime("%Y-%m-%d %H:%M"),
        data=_data_section(rows, rows.test.groups is not None),
        model={
            "ensemble": f"stacking: {meta.name} over {len(members)} member(s)",
            "members": "; ".join(
                f"{m.name} ({len(m.checkpoints)} model{'s' if len(m.checkpoints) > 1 else ''}, "
                f"{m.source})"
                for m in members
            ),
            "task": task,
        },
        training={
            "metalearner": meta.name,
            "metalearner parameters": str(meta.params or "defaults"),
            "fitted on": str(ensemble.info.get("fitted_on")),
            **{f"cross-validated {k}": f"{v:.4f}" for k, v in validation.items()},
            "seed": str(meta.seed),
        },
        metrics=analysis.table,
        bootstrap=analysis.bootstrap,
        calibration=analysis.calibration,
        threshold=_threshold(cfg, task, class_names, threshold),
        decision=analysis.decision,
        figures=figures,
        environment={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
        },
    )
    html = write_html(report, output_dir / names.REPORT_FILE)
    return EnsembleReport(metrics, files, html, markdown_summary(report), comparison, validation)


def _threshold(cfg, task: str, class_names: list[str], threshold) -> dict | None:
    if task == "multiclass":
        return {
            "rule": "argmax of the metalearner's probabilities",
            "values": {},
            "chosen_on": None,
        }
    labels = class_names[1:] if task == "binary" else class_names
    values = threshold if isinstance(threshold, list) else [threshold] * len(labels)
    rule = cfg.get("threshold")
    fixed = rule is None or isinstance(rule, int | float)
    return {
        "rule": str(values[0]) if fixed else str(rule),
        "values": dict(zip(labels, values, strict=True)),
        "chosen_on": None if fixed else "metalearner's cross-validated held-out",
    }


def log_run(
    cfg: DictConfig,
    ensemble,
    members,
    report: EnsembleReport,
    output_dir: Path,
    command: str,
    tags: dict,
) -> str | None:
    """The ensemble's MLflow run (None without an MLflow logger)."""
    from medclf.tracking.ensembles import copy_inputs, log_folder
    from medclf.tracking.logger import MLflowRunLogger, flatten, git_commit

    node = OmegaConf.select(cfg, "logger.mlflow")
    if node is None:
        return None
    kwargs = OmegaConf.to_container(node, resolve=True)
    kwargs.pop("_target_", None)
    save_model = bool(kwargs.get("save_model", True))
    name = f"ensemble·{ensemble.meta.name}·{len(members)} members"
    kwargs.update(run_name=kwargs.get("run_name") or name, save_model=save_model)
    tracker = MLflowRunLogger(**kwargs)
    status = "FAILED"
    try:
        first = members[0].run
        params = {
            names.STACKING_PARAM: {
                "metalearner": ensemble.meta.name,
                "metalearner_params": ensemble.meta.params or None,
                "models": [m.name for m in members],
                "threshold": ensemble.threshold,
            },
            "optimized_metric": first.optimized_metric or "val/f1",
            "seed": ensemble.meta.seed,
        }
        tracker.log_hyperparams(flatten(params))
        commit = git_commit(OmegaConf.select(cfg, "paths.root_dir") or ".")
        tracker.set_tags(
            {
                names.TASK: ensemble.task,
                names.OUTPUT_DIR: output_dir,
                names.ENSEMBLE_MEMBERS: ";".join(m.run.run_id for m in members),
                names.ENSEMBLE_METALEARNER: ensemble.meta.name,
                names.OVERRIDES: command,
                names.NOTE: report.note,
                **({names.GIT_COMMIT: commit} if commit else {}),
                **tags,
            }
        )
        if first.tested_in:
            copy_inputs(tracker, first.tested_in)
        tracker.log_metrics(report.metrics)
        if first.splits is not None:
            splits = output_dir / names.SPLITS_FILE
            shutil.copyfile(first.splits, splits)
            tracker.log_artifact(splits)
        for path in report.files:
            tracker.log_artifact(path, names.TEST_DIR)
        tracker.log_artifact(report.html)
        log_folder(tracker, output_dir / names.ENSEMBLE_DIR, names.ENSEMBLE_DIR)
        if save_model:
            from medclf.tracking.model import log_ensemble_model

            log_ensemble_model(tracker, output_dir / names.ENSEMBLE_DIR)
        status = "FINISHED"
    finally:
        tracker.end_run(status)
    log.info("ensemble run %s: %s", tracker.run_id, report.html)
    return tracker.run_id
