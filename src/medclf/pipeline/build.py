"""Build a run's parts from a composed config: the datamodule (set up: every data check
run), the LightningModule, the loggers, the callbacks and the Trainer.

Used by training (medclf.pipeline.train), ``check_only`` (medclf.pipeline.checks) and
eval.py (medclf.pipeline.evaluate).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError, MedclfError

log = logging.getLogger("medclf.pipeline")


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a medclf error raised by the constructor reaches the
    user as itself (one message, exit 2), not wrapped in Hydra's InstantiationException."""
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, MedclfError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def tidy_lightning_logging() -> None:
    """Hydra's root handlers print and file every record: drop the console handler that the
    `lightning` package adds on import (each line would show twice) and its advert line."""
    logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)


def plain(value: Any) -> Any:
    """A config value as plain Python data (lists, dicts, numbers)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def make_datamodule(cfg: DictConfig) -> Any:
    """The configured datamodule with its augmentation, set up (every data check run)."""
    augment = {
        key: instantiate(node)
        for key, node in (cfg.get("augment") or {}).items()
        if key in ("image", "volume") and node
    }
    datamodule = instantiate(
        cfg.datamodule,
        augment=augment.get("image"),
        volume_augment=augment.get("volume"),
        **report_columns(cfg),
    )
    datamodule.setup()
    return datamodule


def report_columns(cfg: DictConfig) -> dict[str, list[str]]:
    """The datamodule arguments that read the report's subgroup columns (CSV tables only)."""
    subgroups = list((cfg.get("eval") or {}).get("subgroups") or [])
    if not subgroups:
        return {}
    if "csv_path" not in cfg.datamodule:
        raise ConfigError(
            f"eval.subgroups={subgroups}: subgroups are columns of a CSV table; use "
            "datamodule=csv with those columns, or leave eval.subgroups empty."
        )
    return {"info_columns": subgroups}


def build_model(cfg: DictConfig, datamodule: Any) -> Any:
    """The LightningModule for this config and the (set up) datamodule's data."""
    from medclf.config import check_model_fits_data, resolve_task
    from medclf.models.losses import balanced_class_weights
    from medclf.models.module import ClassificationModule
    from medclf.pipeline.posthoc import check_settings, initial_threshold

    check_model_fits_data(cfg, datamodule)
    check_settings(cfg, datamodule)
    head = plain(cfg.head)
    task, head["activation"] = resolve_task(head, datamodule.task, datamodule.n_classes)
    head.pop("n_outputs", None)
    head["meta_variables"] = datamodule.meta_variables
    loss = plain(cfg.loss)
    if loss.get("class_weights") == "balanced":
        loss["class_weights"] = balanced_class_weights(
            datamodule.train_labels(), datamodule.n_classes
        )
        log.info("balanced class weights: %s", [round(w, 3) for w in loss["class_weights"]])
    elif (
        loss.get("class_weights") is not None and len(loss["class_weights"]) != datamodule.n_classes
    ):
        raise ConfigError(
            f"loss.class_weights has {len(loss['class_weights'])} values but the data has "
            f"{datamodule.n_classes} classes ({', '.join(datamodule.class_names)})."
        )
    speed = cfg.get("model") or {}
    return ClassificationModule(
        class_names=datamodule.class_names,
        in_chans=datamodule.channels,
        backbone=plain(cfg.backbone),
        head=head,
        loss=loss,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        task=task,
        threshold=initial_threshold(cfg, task),
        image_size=plain(cfg.datamodule.image_size),
        spatial_dims=datamodule.spatial_dims,
        metadata=datamodule.meta_encoder.state() if datamodule.meta_encoder else None,
        volume_size=list(datamodule.volume_size) if datamodule.spatial_dims == 3 else None,
        dicom_window=plain(datamodule.dicom_window),
        channels_last=bool(speed.get("channels_last", False)),
        compile=bool(speed.get("compile", False)),
        nonfinite_loss=str(cfg.get("nonfinite_loss", "stop")),
    )


def _nodes(group: DictConfig | None) -> list[DictConfig]:
    return [
        node
        for node in (group or {}).values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def instantiate_callbacks(group: DictConfig | None) -> list:
    """The callbacks of the ``callbacks`` group (a null entry is switched off)."""
    return [instantiate(node) for node in _nodes(group)]


def instantiate_loggers(
    group: DictConfig | None,
    run_name: str,
    spool_path: Path | None = None,
    run_id: str | None = None,
) -> list:
    """The loggers of the ``logger`` group. An MLflow logger whose ``run_name`` or
    ``spool_path`` is null gets this run's; ``run_id`` continues that MLflow run (resume)."""
    from medclf.tracking.logger import MLflowRunLogger

    loggers = []
    for node in _nodes(group):
        extra: dict[str, Any] = {}
        target = hydra.utils.get_object(node._target_)
        if isinstance(target, type) and issubclass(target, MLflowRunLogger):
            if node.get("run_name") is None:
                extra["run_name"] = run_name
            if node.get("spool_path") is None and spool_path is not None:
                extra["spool_path"] = str(spool_path)
            if run_id:
                extra["run_id"] = run_id
        loggers.append(instantiate(node, **extra))
    return loggers


def platform_callbacks(
    cfg: DictConfig, output_dir: Path, trackers: list, config_digest: str
) -> list:
    """The callbacks every training has, whatever ``callbacks=`` chooses: the resume state
    (medclf.pipeline.resume), the Ctrl-C checkpoint (medclf.pipeline.interrupt), the test
    report and training curves (medclf.evaluation), the DDP config check, mixup/CutMix,
    weight averaging and batch-norm statistics (medclf.pipeline.mixing, averaging,
    batchnorm), and in an Optuna search with a pruner the trial's reports
    (medclf.search.pruning)."""
    from medclf.evaluation.analysis import Settings
    from medclf.evaluation.history import TrainingCurves
    from medclf.evaluation.report import TestReport
    from medclf.evaluation.thresholds import ThresholdRule, parse_threshold
    from medclf.pipeline.ddp import ConfigFingerprint
    from medclf.pipeline.interrupt import InterruptCheckpoint
    from medclf.pipeline.job import job_overrides
    from medclf.pipeline.resume import ResumeState

    rule = parse_threshold(cfg.get("threshold", 0.5))
    try:
        command = " ".join(["medclf-train", *job_overrides()])
    except ValueError:  # not inside a Hydra app
        command = "medclf-train"
    callbacks = [
        ResumeState(cfg.seed, output_dir, trackers),
        InterruptCheckpoint(),
        TestReport(
            output_dir,
            Settings.of(cfg.get("eval"), cfg.seed),
            command,
            str(rule) if isinstance(rule, ThresholdRule) else None,
        ),
        TrainingCurves(output_dir / "plots"),
        ConfigFingerprint(config_digest, output_dir),
    ]
    from medclf.pipeline.averaging import weight_average
    from medclf.pipeline.mixing import mixing

    mixer = mixing(cfg.get("augment"), cfg.seed)
    if mixer is not None:
        callbacks.append(mixer)
    speed = cfg.get("model") or {}
    averaging = weight_average(speed)
    if averaging is not None:
        callbacks.append(averaging)  # before the batch-norm statistics: see its hook
    mode = speed.get("bn_recalibration", "auto")
    if mode != "never":
        from medclf.pipeline.batchnorm import MAX_BATCHES, BatchNormRecalibration

        batches = speed.get("bn_recalibration_batches", MAX_BATCHES)
        callbacks.append(BatchNormRecalibration(mode, batches, averaging))
    if cfg.get("optimized_metric"):
        from medclf.pipeline.best import BestValue

        callbacks.append(BestValue(cfg.optimized_metric))
    search = cfg.get("search")
    cross_validation = (OmegaConf.select(cfg, "cv.folds") or 0) >= 2  # folds: no pruning
    if search and search.get("trial") is not None and not cross_validation:
        from medclf.pipeline.job import sweeper_pruner
        from medclf.search.pruning import TrialPruning

        metric = cfg.get("optimized_metric")
        if not metric:
            raise ConfigError("pruning an Optuna search needs optimized_metric (e.g. val/f1).")
        callbacks.append(
            TrialPruning(search.storage, search.study, search.trial, metric, sweeper_pruner())
        )
    return callbacks


def make_trainer(trainer_cfg: DictConfig, loggers: list, callbacks: list) -> Any:
    """The Lightning Trainer. LearningRateMonitor is dropped without a logger (it refuses to
    run with nothing to write to)."""
    if not loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(trainer_cfg, logger=loggers or False, callbacks=callbacks)
