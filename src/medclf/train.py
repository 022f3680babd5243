"""``python train.py``: compose the config, check it, train, test the best checkpoint, track.

Importing this module is cheap (Hydra and OmegaConf only): ``--help`` and ``--cfg`` never
import torch, timm or mlflow.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medclf.config import CONF_DIR, check_group_choices
from medclf.errors import ConfigError, MedclfError

log = logging.getLogger("medclf.train")


def _job() -> tuple[str, list[str]]:
    """This job's run name (its overrides, ``key=value,...``) and its override list."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return hydra_cfg.job.override_dirname or "default", list(hydra_cfg.overrides.task)


def _run_tags(output_dir: Path, root_dir: str) -> dict[str, str]:
    """MLflow tags of this run: overrides, run directory, git commit and, inside a
    multirun, the sweep it belongs to (``sweep_id``, shared by all its jobs) and its number."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from medclf.tracking import git_commit

    hydra_cfg = HydraConfig.get()
    tags = {"overrides": " ".join(_job()[1]) or "(none)", "output_dir": str(output_dir)}
    commit = git_commit(root_dir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_cfg.sweep.dir).resolve()
        digest = hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:8]
        tags["sweep_id"] = f"{sweep_dir.name}-{digest}"
        tags["sweep_dir"] = str(sweep_dir)
        tags["sweep_job"] = str(hydra_cfg.job.num)
    return tags


def build_model(cfg: DictConfig, datamodule) -> Any:
    """The LightningModule for this config and the (set up) datamodule's data."""
    from medclf.config import check_model_fits_data, resolve_task
    from medclf.losses import balanced_class_weights
    from medclf.models.module import ClassificationModule

    check_model_fits_data(cfg, datamodule)
    head = OmegaConf.to_container(cfg.head, resolve=True)
    task, head["activation"] = resolve_task(head, datamodule.task, datamodule.n_classes)
    head.pop("n_outputs", None)
    head["meta_variables"] = datamodule.meta_variables
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
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
        backbone=OmegaConf.to_container(cfg.backbone, resolve=True),
        head=head,
        loss=loss,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        task=task,
        threshold=float(cfg.get("threshold", 0.5)),
        image_size=_plain(cfg.datamodule.image_size),
        spatial_dims=datamodule.spatial_dims,
        metadata=datamodule.meta_encoder.state() if datamodule.meta_encoder else None,
        volume_size=list(datamodule.volume_size) if datamodule.spatial_dims == 3 else None,
        dicom_window=_plain(datamodule.dicom_window),
        channels_last=bool(speed.get("channels_last", False)),
        compile=bool(speed.get("compile", False)),
        nonfinite_loss=str(cfg.get("nonfinite_loss", "stop")),
    )


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


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


def make_datamodule(cfg: DictConfig) -> Any:
    """The configured datamodule with its augmentation, set up (every data check run)."""
    augment = {k: instantiate(v) for k, v in (cfg.get("augment") or {}).items() if v}
    datamodule = instantiate(
        cfg.datamodule, augment=augment.get("image"), volume_augment=augment.get("volume")
    )
    datamodule.setup()
    return datamodule


def _instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a group (callbacks, loggers); skip nulls."""
    return [
        instantiate(node)
        for node in (group or {}).values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def _tidy_lightning_logging() -> None:
    """Hydra's root handlers print and file every record: drop the console handler that the
    `lightning` package adds on import (each line would show twice) and its advert line."""
    logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)


def run(cfg: DictConfig, results: dict | None = None) -> float | None:
    """Train and test as configured; returns the best ``cfg.optimized_metric`` value.
    ``results`` (if given) receives the final metrics, the best checkpoint and the MLflow
    run id. With ``cv.folds`` ≥ 2, cross-validation (medclf.cv) instead."""
    if cfg.get("check_only"):
        from medclf.checks import report

        _tidy_lightning_logging()
        status = report(cfg)
        if status:
            raise SystemExit(status)
        return None
    if (OmegaConf.select(cfg, "cv.folds") or 0) >= 2 and results is None:
        from medclf.cv import run_cv

        return run_cv(cfg)
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from medclf import distributed
    from medclf.config import validate
    from medclf.interrupt import InterruptCheckpoint
    from medclf.reporting import TestReport, TrainingCurves
    from medclf.resume import ResumeState, check_fits
    from medclf.tracking import flatten, log_model, mlflow_loggers

    _tidy_lightning_logging()
    validate(cfg)
    resume = _plan_resume(cfg)
    own_dir = Path(cfg.paths.output_dir)
    own_dir.mkdir(parents=True, exist_ok=True)
    if resume is not None and resume.run_dir is not None:
        log.info(
            "resuming %s (epoch %d) in its run directory %s; this command's log is in %s",
            resume.ckpt_path,
            resume.epoch,
            resume.run_dir,
            own_dir,
        )
        cfg.paths.output_dir = str(resume.run_dir)
    output_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # also what DDP children of a multirun job start from
        (own_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    digest = distributed.config_hash(cfg)
    distributed.install()
    ddp_environment = distributed.ddp_environment()
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = make_datamodule(cfg)
    model = build_model(cfg, datamodule)
    if resume is not None:
        check_fits(resume, model)

    for node in (cfg.get("logger") or {}).values():
        if node is not None and "run_name" in node and node.run_name is None:
            node.run_name = _job()[0]
        if node is not None and "spool_path" in node and node.spool_path is None:
            node.spool_path = str(output_dir / "mlflow_unsent.jsonl")
        is_mlflow = node is not None and str(node.get("_target_", "")).endswith("MLflowRunLogger")
        if is_mlflow and resume is not None and resume.mlflow_run_id:
            with open_dict(node):  # continue the checkpoint's MLflow run
                node.run_id = resume.mlflow_run_id
    # DDP ranks > 0 log nothing; not even opening the store (concurrent table creation).
    loggers = _instantiate_all(cfg.get("logger")) if rank_zero_only.rank == 0 else []
    callbacks = _instantiate_all(cfg.get("callbacks"))
    trackers = mlflow_loggers(loggers)
    callbacks += [
        ResumeState(cfg.seed, output_dir, trackers),
        InterruptCheckpoint(),
        TestReport(output_dir),
        TrainingCurves(output_dir / "plots"),
        distributed.ConfigFingerprint(digest, output_dir),
    ]
    if not loggers:  # LearningRateMonitor refuses to run without a logger to write to
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)

    status = "FAILED"
    try:
        for tracker in trackers:  # the MLflow run is created here, so inside the try
            if resume is not None and tracker.run_id == resume.mlflow_run_id:
                tracker.resume_run(resume.ckpt_path, resume.epoch)
                continue
            tracker.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
            for key, value in _run_tags(output_dir, cfg.paths.root_dir).items():
                tracker.experiment.set_tag(tracker.run_id, key, value)
        if cfg.train:
            ckpt = str(resume.ckpt_path) if resume is not None else None
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if cfg.test:
            ckpt = checkpoint if cfg.train else (resume and str(resume.ckpt_path))
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        for tracker in trackers if trainer.is_global_zero else []:
            tracker.log_artifact(output_dir / "config.yaml")
            if checkpoint:
                tracker.log_artifact(checkpoint, "checkpoints")
            if tracker.save_model:
                example = datamodule.datasets["test"][0]
                metadata = example.get("metadata")
                log_model(
                    tracker,
                    model,
                    example["image"][None],
                    None if metadata is None else metadata[None],
                )
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
        status = "KILLED"
        raise
    finally:
        for tracker in trackers:
            tracker.end_run(status)
        distributed.release(ddp_environment)
    if trainer.is_global_zero:
        _summary(trainer, trackers, output_dir)
    best = _best(trainer, cfg.get("optimized_metric"))
    if results is not None:
        results["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        results["checkpoint"] = checkpoint
        results["run_id"] = trackers[0].run_id if trackers else None
        results["best"] = best
    return best


def _plan_resume(cfg: DictConfig):
    """What ``ckpt_path`` resumes (medclf.resume.plan), or None without one."""
    if not cfg.get("ckpt_path"):
        return None
    from medclf.resume import plan

    return plan(str(cfg.ckpt_path), cfg.paths.log_dir, _job()[1], bool(cfg.train))


def _best(trainer, metric: str | None) -> float | None:
    callback = trainer.checkpoint_callback
    if (
        callback is not None
        and callback.monitor == metric
        and callback.best_model_score is not None
    ):
        return float(callback.best_model_score)
    value = trainer.callback_metrics.get(metric) if metric else None
    return float(value) if value is not None else None


def _summary(trainer, trackers, output_dir: Path) -> None:
    """Log the headline test metrics, the run directory and where to see the run."""
    from medclf.ui import run_url

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    headline = ", ".join(
        f"{k}={metrics[k]:.4f}" for k in ("test/accuracy", "test/f1", "test/auroc") if k in metrics
    )
    if headline:
        log.info("test: %s", headline)
    log.info("run directory: %s", output_dir)
    for tracker in trackers:
        uri = tracker._tracking_uri
        log.info(
            "MLflow run %s in experiment %r (id %s) at %s",
            tracker.run_id,
            tracker._experiment_name,
            tracker.experiment_id,
            uri,
        )
        if uri.startswith(("http://", "https://")):
            log.info("open it: %s", run_url(uri, tracker.experiment_id, tracker.run_id))
        else:
            url = run_url("http://127.0.0.1:5000", tracker.experiment_id, tracker.run_id)
            log.info("open it: `make ui`, then %s", url)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return run(cfg)
    except MedclfError as exc:
        log.error("%s", exc)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records this job as failed and applies its failure policy
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Console entry point: check group choices, then hand over to Hydra."""
    # check_only is a key of train.yaml; Hydra refuses "+key=" for a key that exists
    sys.argv = [a.replace("+check_only=", "check_only=", 1) for a in sys.argv]
    try:
        check_group_choices(sys.argv[1:])
    except MedclfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()


def check_data() -> None:
    """``medclf-check-data [overrides]``: ``train.py check_only=true`` (see medclf.checks)."""
    sys.argv.append("check_only=true")
    main()


if __name__ == "__main__":  # python -m medclf.train: how DDP children of a multirun job start
    main()
