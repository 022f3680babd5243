"""``medclf-train check_only=true ...`` (or ``medclf-check-data ...``): the pre-flight of a
training run (medclf.pipeline.plan: config values, data files and images, splits, metadata,
model against data, checkpoint), without training and without an MLflow run, reporting every
problem found rather than the first.

It is the same pre-flight training runs, stage by stage; a stage that needs another's result
(the model needs the data's classes) is replaced by the checks it can make without it.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from medclf.errors import Problems

log = logging.getLogger("medclf.checks")


def find_problems(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """(problems, a summary of what was checked) for this config."""
    from medclf.evaluation.thresholds import threshold_for_task
    from medclf.pipeline import rules
    from medclf.pipeline.build import build_model, make_datamodule
    from medclf.pipeline.plan import RunPlan, check_config

    problems, summary = Problems(), []
    plan = check_config(cfg, problems)
    data_settings = Problems()
    with data_settings.check():
        rules.check_datamodule(cfg)
    datamodule = fit = None
    if not data_settings.messages and not rules.missing_keys(cfg):
        with problems.check():
            datamodule = make_datamodule(cfg)
            counts = datamodule.frame["split"].value_counts()
            summary.append(
                f"data: {datamodule.n_classes} classes ({', '.join(datamodule.class_names)}), "
                f"{datamodule.task}, {datamodule.spatial_dims}D, {datamodule.channels} "
                "channel(s); "
                + ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test"))
            )
    if datamodule is not None:
        fit = (plan or RunPlan(cfg)).fit_data(datamodule, problems)
    else:  # what the data-stage checks can tell without the data
        for check in (
            lambda: rules.resolve_task(cfg.head, None, None),
            lambda: rules.class_weights(cfg),
            lambda: rules.check_augment(cfg),
            lambda: rules.check_eval(cfg),
            lambda: threshold_for_task(cfg.get("threshold", 0.5), None),
        ):
            with problems.check():
                check()
    if fit is not None and plan is not None:
        with problems.check():
            model = build_model(cfg, datamodule, fit)
            plan.check_model(model)
            summary.append(f"model: {cfg.backbone.name}, {fit.task}, {fit.activation}")
    if plan is not None and plan.resume is not None:
        summary.append(f"checkpoint: {plan.resume.ckpt_path} (epoch {plan.resume.epoch})")
    return problems.messages, summary


def report(cfg: DictConfig) -> int:
    """Log what was checked and every problem; the exit status (0: none, 2: problems)."""
    found, summary = find_problems(cfg)
    for line in summary:
        log.info("%s", line)
    if not found:
        log.info("check_only: no problems found; nothing was trained")
        return 0
    listed = "\n".join(f"  {i}. {message}" for i, message in enumerate(found, 1))
    log.error("check_only: %d problem(s):\n%s", len(found), listed)
    return 2
