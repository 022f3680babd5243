"""What ``medclf-train`` runs for each Hydra job: the user's plugins imported, then
``check_only``, cross-validation, or one training run."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from medclf.models.registry import import_plugins


def train_task(cfg: DictConfig) -> float | None:
    """The value sweepers optimise (``optimized_metric``), or None. ``check_only=true``
    exits with status 2 when it finds problems."""
    from medclf import runtime

    runtime.lap("python and Hydra")
    import_plugins(OmegaConf.select(cfg, "imports"))
    if cfg.get("check_only"):
        from medclf.pipeline.build import tidy_lightning_logging
        from medclf.pipeline.checks import report

        tidy_lightning_logging()
        status = report(cfg)
        if status:
            raise SystemExit(status)
        return None
    if (OmegaConf.select(cfg, "cv.folds") or 0) >= 2:
        from medclf.pipeline.cv import run_cv

        return run_cv(cfg)
    from medclf.pipeline.train import run

    return run(cfg)
