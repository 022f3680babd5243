"""Cross-validation: ``medclf-train cv.folds=K`` trains K models, one per fold.

Each fold is a normal training run (its own run directory ``fold_<i>/`` and MLflow run,
tagged as a child of one parent run, ``mlflow.parentRunId``), with the fold as the val
split and the datamodule's test split unchanged. The parent run holds every final metric's
mean and standard deviation over the folds (``test/f1_mean``, ``test/f1_std``, …), the
table ``cv_folds.csv`` and the folds' best checkpoints (tag ``fold_checkpoints``), which
``predict.py run_id=<parent>`` combines into one ensemble.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

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


def run_cv(cfg: DictConfig) -> float | None:
    from medclf.config import validate
    from medclf.pipeline.job import job_name
    from medclf.pipeline.train import run
    from medclf.tracking.logger import flatten

    folds = int(cfg.cv.folds)
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.logger.mlflow.run_name if OmegaConf.select(cfg, "logger.mlflow.run_name") else None
    name = name or job_name(cfg)
    parent = _parent_logger(cfg, f"{name} cv{folds}")
    status = "FAILED"
    rows = []
    try:
        if parent is not None:
            parent.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
            parent.experiment.set_tag(parent.run_id, "cv_folds", str(folds))
            parent.experiment.set_tag(parent.run_id, "output_dir", str(output_dir))
        for fold in range(folds):
            log.info("cross-validation: fold %d of %d", fold + 1, folds)
            fold_cfg = copy.deepcopy(cfg)
            with open_dict(fold_cfg):
                fold_cfg.datamodule.folds = folds
                fold_cfg.datamodule.fold = fold
                fold_cfg.paths.output_dir = str(output_dir / f"fold_{fold}")
                if OmegaConf.select(fold_cfg, "logger.mlflow") is not None:
                    fold_cfg.logger.mlflow.run_name = f"{name} fold {fold}"
                    tags = dict(fold_cfg.logger.mlflow.get("tags") or {})
                    tags["cv_fold"] = str(fold)
                    if parent is not None:
                        tags["mlflow.parentRunId"] = parent.run_id
                    fold_cfg.logger.mlflow.tags = tags
            results: dict = {}
            run(fold_cfg, results)
            rows.append(
                {"fold": fold, "checkpoint": results.get("checkpoint"), **results["metrics"]}
            )
        summary = aggregate(rows)
        table = _write_table(rows, output_dir)
        if parent is not None:
            parent.log_metrics(summary)
            checkpoints = ";".join(str(r["checkpoint"]) for r in rows if r["checkpoint"])
            parent.experiment.set_tag(parent.run_id, "fold_checkpoints", checkpoints)
            parent.log_artifact(table)
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


def _write_table(rows: list[dict], output_dir: Path) -> Path:
    import pandas as pd

    path = output_dir / "cv_folds.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
