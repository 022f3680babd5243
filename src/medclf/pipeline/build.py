"""Build a run's parts from a checked config (medclf.pipeline.plan): the datamodule (set up:
every data check run), the LightningModule, the loggers, the callbacks (the ``callbacks``
group, the platform's own included) and the Trainer. Nothing here checks a config key.

Used by training (medclf.pipeline.train), ``check_only`` (medclf.pipeline.checks) and
eval.py (medclf.pipeline.evaluate).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from medclf.errors import MedclfError

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
        if key in ("image", "volume", "device") and node
    }
    datamodule = instantiate(
        cfg.datamodule,
        augment=augment.get("image"),
        volume_augment=augment.get("volume"),
        device_augment=augment.get("device"),
        **report_columns(cfg),
    )
    datamodule.setup()
    return datamodule


def report_columns(cfg: DictConfig) -> dict[str, list[str]]:
    """The datamodule arguments that read the report's subgroup columns (CSV tables only;
    the pre-flight refuses subgroups of other data)."""
    subgroups = list((cfg.get("eval") or {}).get("subgroups") or [])
    if not subgroups or "csv_path" not in cfg.datamodule:
        return {}
    return {"info_columns": subgroups}


def build_model(cfg: DictConfig, datamodule: Any, fit: Any = None) -> Any:
    """The LightningModule for this config and the (set up) datamodule's data; ``fit`` is
    what the pre-flight's data checks decided (medclf.pipeline.plan.RunPlan.fit_data; made
    here when not given)."""
    from medclf.evaluation.thresholds import ThresholdRule
    from medclf.models.module import ClassificationModule

    if fit is None:
        from medclf.pipeline.plan import RunPlan

        fit = RunPlan(cfg).fit_data(datamodule)
    head = plain(cfg.head)
    head["activation"] = fit.activation
    head.pop("n_outputs", None)
    head["meta_variables"] = datamodule.meta_variables
    loss = plain(cfg.loss)
    loss["class_weights"] = fit.class_weights
    speed = cfg.get("model") or {}
    return ClassificationModule(
        class_names=datamodule.class_names,
        in_chans=datamodule.channels,
        backbone=plain(cfg.backbone),
        head=head,
        loss=loss,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        task=fit.task,
        threshold=0.5 if isinstance(fit.threshold, ThresholdRule) else float(fit.threshold),
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


RUN_VALUES = ("config_digest", "command")
"""What only the run knows; a callback whose constructor names one receives it."""


def instantiate_callbacks(group: DictConfig | None, run_values: dict | None = None) -> list:
    """The callbacks of the ``callbacks`` group, the platform's own among them
    (conf/callbacks_platform.yaml), in their order: a null entry is switched off, a factory
    that returns None adds nothing. A constructor naming one of :data:`RUN_VALUES` gets it."""
    import inspect

    run_values = run_values or {}
    callbacks = []
    for node in _nodes(group):
        target = hydra.utils.get_object(node._target_)
        try:
            accepted = inspect.signature(target).parameters
        except (TypeError, ValueError):
            accepted = {}
        extra = {k: v for k, v in run_values.items() if k in accepted and k not in node}
        callback = instantiate(node, **extra)
        if callback is not None:
            callbacks.append(callback)
    return callbacks


def instantiate_loggers(
    group: DictConfig | None,
    run_name: str,
    spool_path: Path | None = None,
    run_id: str | None = None,
    open_in_background: bool = False,
) -> list:
    """The loggers of the ``logger`` group. An MLflow logger whose ``run_name`` or
    ``spool_path`` is null gets this run's; ``run_id`` continues that MLflow run (resume);
    ``open_in_background``: its store opens in its own thread (a training run)."""
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
            if open_in_background:
                extra["open_in_background"] = True
        loggers.append(instantiate(node, **extra))
    return loggers


def make_trainer(trainer_cfg: DictConfig, loggers: list, callbacks: list) -> Any:
    """The Lightning Trainer. LearningRateMonitor is dropped without a logger (it refuses to
    run with nothing to write to)."""
    if not loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(trainer_cfg, logger=loggers or False, callbacks=callbacks)
