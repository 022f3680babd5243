"""The pre-flight: one pass that turns the composed config into a checked plan of the run and
reports every problem at once (medclf.errors.Problems), before anything is trained.

``check_only``, a training run, every cross-validation fold and every sweep job use it:

* :func:`make_plan` runs every config check (medclf.pipeline.rules.RULES) and plans the
  resume; a cross-validation run makes one plan and its folds reuse it
  (:meth:`RunPlan.for_fold`), so the config is checked once;
* :meth:`RunPlan.fit_data` runs the checks that need the data, once, right after it is read
  (the task from the labels, metadata, volumes, groups, the threshold for the task), and
  returns what the model is built with;
* :meth:`RunPlan.check_model` checks the model built for the data: the backbone forwards the
  input size, and a resumed checkpoint is this model's.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from medclf.errors import Problems

log = logging.getLogger("medclf.plan")


@dataclass(frozen=True)
class DataFit:
    """What the checked data decides about the model."""

    task: str  # multiclass | binary | multilabel
    activation: str  # softmax | sigmoid
    threshold: Any  # a number, or a ThresholdRule chosen on validation after training
    class_weights: list[float] | None


@dataclass
class RunPlan:
    """A checked config and what the run does with it."""

    cfg: DictConfig
    resume: Any = None  # medclf.pipeline.resume.Resume, or None
    folds: int = 0  # cross-validation folds (0: one run)
    data_checked: bool = field(default=False, repr=False)  # fit_data ran its checks once

    @property
    def cross_validation(self) -> bool:
        return self.folds >= 2

    def fit_data(self, datamodule: Any, problems: Problems | None = None) -> DataFit | None:
        """The checks that need the (set up) datamodule, and what the model is built with.
        With ``problems`` they are collected there (None returned if any failed); without,
        the first raises. In a fold of a checked run only the fold's values are computed."""
        from medclf.evaluation.thresholds import threshold_for_task
        from medclf.pipeline import rules

        problems_given = problems is not None
        problems = problems if problems_given else Problems()
        cfg = self.cfg
        task = activation = threshold = weights = None
        with problems.check():
            task, activation = rules.resolve_task(cfg.head, datamodule.task, datamodule.n_classes)
        with problems.check():
            weights = rules.class_weights(cfg, datamodule)
        if not self.data_checked:
            with problems.check():
                rules.check_model_fits_data(cfg, datamodule)
            with problems.check():
                rules.check_augment(cfg, datamodule.spatial_dims)
            with problems.check():
                rules.check_eval(cfg, datamodule)
        with problems.check():
            threshold = threshold_for_task(cfg.get("threshold", 0.5), task)
        if not problems_given:
            problems.raise_any()
        elif problems.messages:
            return None
        self.data_checked = True
        if weights is not None and OmegaConf.select(cfg, "loss.class_weights") == "balanced":
            log.info("balanced class weights: %s", [round(w, 3) for w in weights])
        return DataFit(task, activation, threshold, weights)

    def check_model(self, model: Any) -> None:
        """The backbone forwards the input size (read from the network); a resumed checkpoint
        holds this model."""
        from medclf.pipeline import rules

        problems = Problems()
        hp = model.hparams
        with problems.check():
            rules.check_input_size(
                self.cfg, model.backbone, int(hp["in_chans"]), int(hp["spatial_dims"])
            )
        if self.resume is not None:
            from medclf.pipeline.resume import check_fits

            with problems.check():
                check_fits(self.resume, model)
        problems.raise_any()

    def for_fold(self, fold: int, output_dir: str, run_name: str | None, tags: dict) -> RunPlan:
        """The plan of cross-validation fold ``fold``: this plan's checked config with the fold
        as the val split, its own run directory and MLflow run name and tags; not checked
        again."""
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.datamodule.folds = self.folds
            cfg.datamodule.fold = fold
            cfg.paths.output_dir = output_dir
            if OmegaConf.select(cfg, "logger.mlflow") is not None:
                cfg.logger.mlflow.run_name = run_name
                cfg.logger.mlflow.tags = tags
        return replace(self, cfg=cfg, folds=0, resume=None)

    def for_audit(self, folds: int, output_dir: str) -> RunPlan:
        """The plan of a data audit's cross-validation (medclf.pipeline.audit): this plan's
        checked config with ``folds`` folds in ``output_dir``, without the folds' test pass
        and logged models (the audit reads their out-of-fold predictions); not checked
        again."""
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.cv.folds = folds
            cfg.audit_only = False
            cfg.test = False
            cfg.paths.output_dir = output_dir
            if OmegaConf.select(cfg, "logger.mlflow") is not None:
                cfg.logger.mlflow.save_model = False
        return replace(self, cfg=cfg, folds=folds, resume=None)


def check_config(cfg: DictConfig, problems: Problems) -> RunPlan | None:
    """Every config check (medclf.pipeline.rules.RULES, all run, problems collected) and the
    resume's plan; the plan, or None when something failed."""
    from medclf.pipeline import rules

    with problems.check():
        rules.check_required(cfg)
    if problems.messages:  # values still ??? would fail every check below
        return None
    for rule in rules.RULES:
        with problems.check():
            rule(cfg)
    resume = None
    with problems.check():
        resume = plan_resume(cfg)
    if problems.messages:
        return None
    return RunPlan(cfg, resume, int(OmegaConf.select(cfg, "cv.folds") or 0))


def make_plan(cfg: DictConfig) -> RunPlan:
    """The checked plan of this config, or one error listing every problem."""
    problems = Problems()
    plan = check_config(cfg, problems)
    problems.raise_any()
    return plan


def plan_resume(cfg: DictConfig):
    """What ``ckpt_path`` resumes (medclf.pipeline.resume.plan), or None without one."""
    if not cfg.get("ckpt_path"):
        return None
    from medclf.pipeline.job import job_dir, job_overrides
    from medclf.pipeline.resume import plan

    return plan(str(cfg.ckpt_path), cfg.paths.log_dir, job_overrides(), bool(cfg.train), job_dir())
