"""What ``medclf-train`` runs for each Hydra job: the user's plugins imported, then
``check_only``, or the pre-flight (medclf.pipeline.plan) and cross-validation or one
training run on its plan."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from medclf.models.registry import import_plugins


def train_task(cfg: DictConfig) -> float | None:
    """The value sweepers optimise (``optimized_metric``), or None. ``check_only=true``
    exits with status 2 when it finds problems."""
    from medclf import console, runtime

    runtime.lap("python and Hydra")
    console.quiet(verbose=bool(cfg.get("verbose", False)))
    import_plugins(OmegaConf.select(cfg, "imports"))
    if cfg.get("check_only"):
        from medclf.pipeline.build import tidy_lightning_logging
        from medclf.pipeline.checks import report

        tidy_lightning_logging()
        status = report(cfg)
        if status:
            raise SystemExit(status)
        return None
    if cfg.get("audit_only"):
        from medclf.pipeline.audit import run_audit

        run_audit(cfg)
        return None
    from medclf.pipeline.plan import make_plan

    plan = make_plan(cfg)  # the pre-flight: every config problem at once, before anything runs
    if plan.cross_validation:
        from medclf.pipeline.cv import run_cv

        return run_cv(plan)
    from medclf.pipeline.train import run

    return run(plan)
