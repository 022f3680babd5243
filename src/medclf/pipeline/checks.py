"""``medclf-train check_only=true ...`` (or ``medclf-check-data ...``): every check that
training runs before its first step (config values, data files and images, splits,
metadata, model against data, checkpoint), without training and without an MLflow run,
reporting every problem found rather than the first.

Checks that do not depend on each other all run; one that needs another's result (the
model needs the data's classes) is skipped when that one failed.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from medclf.errors import Problems

log = logging.getLogger("medclf.checks")


def find_problems(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """(problems, a summary of what was checked) for this config."""
    from medclf.config import validate
    from medclf.pipeline.build import build_model, make_datamodule
    from medclf.pipeline.train import plan_resume

    problems, summary = Problems(), []
    with problems.check():
        validate(cfg)
    datamodule = model = None
    with problems.check():
        datamodule = make_datamodule(cfg)
        counts = datamodule.frame["split"].value_counts()
        summary.append(
            f"data: {datamodule.n_classes} classes ({', '.join(datamodule.class_names)}), "
            f"{datamodule.task}, {datamodule.spatial_dims}D, {datamodule.channels} channel(s); "
            + ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test"))
        )
    if datamodule is not None:
        with problems.check():
            model = build_model(cfg, datamodule)
            summary.append(
                f"model: {cfg.backbone.name}, {model.task}, {model.hparams.head['activation']}"
            )
    with problems.check():
        _check_training_tricks(cfg, model)
    with problems.check():
        resume = plan_resume(cfg)
        if resume is not None:
            if model is not None:
                from medclf.pipeline.resume import check_fits

                check_fits(resume, model)
            summary.append(f"checkpoint: {resume.ckpt_path} (epoch {resume.epoch})")
    return problems.messages, summary


def _check_training_tricks(cfg: DictConfig, model) -> None:
    """Weight averaging and batch mixing settings (their callbacks' own checks)."""
    from medclf.pipeline.averaging import weight_average
    from medclf.pipeline.mixing import mixing

    weight_average(cfg.get("model"))
    mixer = mixing(cfg.get("augment"), cfg.seed)
    if mixer is not None and model is not None:
        mixer.check_fits(model)


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
