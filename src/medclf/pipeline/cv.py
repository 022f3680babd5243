"""Cross-validation: ``medclf-train cv.folds=K`` trains K models, one per fold.

Each fold is a normal training run (its own run directory ``fold_<i>/`` and MLflow run,
tagged as a child of one parent run, ``mlflow.parentRunId``), with the fold as the val
split and the datamodule's test split unchanged. The parent run holds every final metric's
mean and standard deviation over the folds (``test/f1_mean``, ``test/f1_std``, …), the
table ``cv_folds.csv`` and the folds' best checkpoints (tag ``fold_checkpoints``), which
``predict.py run_id=<parent>`` combines into one ensemble.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medclf.pipeline.plan import RunPlan

log = logging.getLogger(__name__)


def _parent_logger(cfg: DictConfig, run_name: str):
    from medclf.tracking.logger import MLflowRunLogger

    node = OmegaConf.select(cfg, "logger.mlflow")
    if node is None:
        return None
    kwargs = OmegaConf.to_container(node, resolve=True)
    kwargs.pop("_target_", None)
    kwargs.update(run_name=run_name, save_model=False)
    return MLflowRunLogger(**kwargs)


def run_cv(plan: RunPlan, results: dict | None = None) -> float | None:
    """Train ``plan.folds`` folds of the checked plan (each reuses it: the config is checked
    once); returns ``optimized_metric``'s mean over the folds. ``results`` (if given)
    receives the parent MLflow run's id."""
    from medclf.pipeline.job import job_name
    from medclf.pipeline.train import run
    from medclf.tracking import names
    from medclf.tracking.logger import flatten

    cfg, folds = plan.cfg, plan.folds
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.logger.mlflow.run_name if OmegaConf.select(cfg, "logger.mlflow.run_name") else None
    name = name or job_name(cfg)
    parent = _parent_logger(cfg, f"{name} cv{folds}")
    if results is not None:
        results["parent_run_id"] = parent.run_id if parent is not None else None
    status = "FAILED"
    rows, folded = [], []
    try:
        if parent is not None:
            parent.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
            parent.set_tags({names.CV_FOLDS: folds, names.OUTPUT_DIR: output_dir})
        for fold in range(folds):
            log.info("cross-validation: fold %d of %d", fold + 1, folds)
            tags = dict(OmegaConf.select(cfg, "logger.mlflow.tags") or {})
            tags[names.CV_FOLD] = str(fold)
            if parent is not None:
                tags[names.PARENT_RUN] = parent.run_id
            fold_plan = plan.for_fold(
                fold, str(output_dir / f"fold_{fold}"), f"{name} fold {fold}", tags
            )
            done: dict = {}
            run(fold_plan, done)
            plan.data_checked = fold_plan.data_checked  # the data is checked once too
            rows.append({"fold": fold, "checkpoint": done.get("checkpoint"), **done["metrics"]})
            folded.append(done.get("val_predictions"))
        summary = aggregate(rows)
        table = _write_table(rows, output_dir)
        oof = _out_of_fold(folded, output_dir)
        if parent is not None:
            parent.log_metrics(summary)
            checkpoints = ";".join(str(r["checkpoint"]) for r in rows if r["checkpoint"])
            parent.set_tags({names.FOLD_CHECKPOINTS: checkpoints})
            parent.log_artifact(table)
            if oof is not None:
                parent.log_artifact(oof)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if parent is not None:
            parent.end_run(status)
    metric = cfg.get("optimized_metric")
    for key in (f"{metric}_mean", "test/f1_mean"):
        if key in summary:
            log.info(
                "cross-validation: %s = %.4f ± %.4f",
                key[:-5],
                summary[key],
                summary[key[:-5] + "_std"],
            )
    return summary.get(f"{metric}_mean")


def aggregate(rows: list[dict]) -> dict[str, float]:
    """``{key}_mean`` and ``{key}_std`` (population std) of every metric all folds have."""
    keys = set.intersection(*(set(r) for r in rows)) - {"fold", "checkpoint"}
    summary = {}
    for key in sorted(keys):
        values = np.array([r[key] for r in rows], dtype=float)
        summary[f"{key}_mean"] = float(values.mean())
        summary[f"{key}_std"] = float(values.std())
    return summary


def _out_of_fold(paths: list, output_dir: Path) -> Path | None:
    """``oof_predictions.csv``: every fold's val predictions, one row per sample of the
    train and val splits (the test split is never a fold), with the fold it was held out
    of: what stacking and the data audit's label-error search read."""
    import pandas as pd

    from medclf.inference.table import FLOAT_FORMAT
    from medclf.tracking import names

    if not paths or any(p is None for p in paths):
        return None
    frames = [pd.read_csv(p).assign(fold=k) for k, p in enumerate(paths)]
    path = output_dir / names.OOF_FILE
    pd.concat(frames, ignore_index=True).to_csv(path, index=False, float_format=FLOAT_FORMAT)
    return path


def _write_table(rows: list[dict], output_dir: Path) -> Path:
    import pandas as pd

    from medclf.tracking import names

    path = output_dir / names.CV_TABLE_FILE
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
