"""One training run: build the parts (medclf.pipeline.build), fit, test the best checkpoint,
and record everything in the run directory and MLflow.

``check_only`` and cross-validation sit above this (medclf.pipeline.task); a resume
(medclf.pipeline.resume) decides the run directory and MLflow run before anything starts.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medclf.pipeline.build import (
    build_model,
    instantiate_callbacks,
    instantiate_loggers,
    make_datamodule,
    make_trainer,
    platform_callbacks,
    tidy_lightning_logging,
)
from medclf.pipeline.job import job_dir, job_name, job_overrides, run_tags

log = logging.getLogger("medclf.train")


def plan_resume(cfg: DictConfig):
    """What ``ckpt_path`` resumes (medclf.pipeline.resume.plan), or None without one."""
    if not cfg.get("ckpt_path"):
        return None
    from medclf.pipeline.resume import plan

    return plan(str(cfg.ckpt_path), cfg.paths.log_dir, job_overrides(), bool(cfg.train), job_dir())


def run(cfg: DictConfig, results: dict | None = None) -> float | None:
    """Train and test as configured; returns the best ``cfg.optimized_metric`` value.
    ``results`` (if given) receives the final metrics, the best checkpoint and the MLflow
    run id."""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from medclf import distributed
    from medclf.config import validate
    from medclf.pipeline import ddp
    from medclf.pipeline.resume import check_fits
    from medclf.tracking.logger import mlflow_loggers

    tidy_lightning_logging()
    validate(cfg)
    resume = plan_resume(cfg)
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
    digest = ddp.config_hash(cfg)
    ddp.install()
    ddp_environment = distributed.ddp_environment()
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = make_datamodule(cfg)
    model = build_model(cfg, datamodule)
    if resume is not None:
        check_fits(resume, model)
    # DDP ranks > 0 log nothing; not even opening the store (concurrent table creation).
    loggers = []
    if rank_zero_only.rank == 0:
        run_id = resume.mlflow_run_id if resume is not None else None
        spool = output_dir / "mlflow_unsent.jsonl"
        loggers = instantiate_loggers(cfg.get("logger"), job_name(), spool, run_id)
    trackers = mlflow_loggers(loggers)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    callbacks += platform_callbacks(cfg, output_dir, trackers, digest)
    trainer = make_trainer(cfg.trainer, loggers, callbacks)

    status = "FAILED"
    sigint = signal.getsignal(signal.SIGINT)
    try:
        _start_tracking(trackers, cfg, resume, output_dir)  # the MLflow run is created here
        checkpoint = _fit_and_test(cfg, trainer, model, datamodule, resume)
        if trainer.is_global_zero:
            _log_outputs(trackers, output_dir, checkpoint, model, datamodule)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
        status = "KILLED"
        raise
    finally:
        for tracker in trackers:
            tracker.end_run(status)
        distributed.release(ddp_environment)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a Ctrl-C
    if trainer.is_global_zero:
        _summary(trainer, trackers, output_dir)
    best = _best(trainer, cfg.get("optimized_metric"))
    if results is not None:
        results["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        results["checkpoint"] = checkpoint
        results["run_id"] = trackers[0].run_id if trackers else None
        results["best"] = best
    return best


def _start_tracking(trackers: list, cfg: DictConfig, resume, output_dir: Path) -> None:
    """A new run gets the flattened config as params and the run tags; a resumed run is set
    back to RUNNING (its params are immutable)."""
    from medclf.tracking.logger import flatten

    for tracker in trackers:
        if resume is not None and tracker.run_id == resume.mlflow_run_id:
            tracker.resume_run(resume.ckpt_path, resume.epoch)
            continue
        tracker.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
        for key, value in run_tags(output_dir, cfg.paths.root_dir).items():
            tracker.experiment.set_tag(tracker.run_id, key, value)


def _fit_and_test(cfg: DictConfig, trainer, model, datamodule, resume) -> str | None:
    """Fit (from the resumed checkpoint), then test the best checkpoint; returns its path."""
    if cfg.train:
        ckpt = str(resume.ckpt_path) if resume is not None else None
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if cfg.test:
        ckpt = checkpoint if cfg.train else (resume and str(resume.ckpt_path))
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    return checkpoint


def _log_outputs(trackers: list, output_dir: Path, checkpoint, model, datamodule) -> None:
    """The resolved config, the best checkpoint and (``save_model``) the model itself."""
    from medclf.tracking.model import log_model

    for tracker in trackers:
        tracker.log_artifact(output_dir / "config.yaml")
        if checkpoint:
            tracker.log_artifact(checkpoint, "checkpoints")
        if tracker.save_model:
            example = datamodule.datasets["test"][0]
            metadata = example.get("metadata")
            log_model(
                tracker, model, example["image"][None], None if metadata is None else metadata[None]
            )


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


def _summary(trainer, trackers: list, output_dir: Path) -> None:
    """Log the headline test metrics, the run directory and where to see the run."""
    from medclf.tracking.server import run_url

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    headline = ", ".join(
        f"{k}={metrics[k]:.4f}" for k in ("test/accuracy", "test/f1", "test/auroc") if k in metrics
    )
    if headline:
        log.info("test: %s", headline)
    log.info("run directory: %s", output_dir)
    for tracker in trackers:
        uri = tracker.tracking_uri
        log.info(
            "MLflow run %s in experiment %r (id %s) at %s",
            tracker.run_id,
            tracker.experiment_name,
            tracker.experiment_id,
            uri,
        )
        if uri.startswith(("http://", "https://")):
            log.info("open it: %s", run_url(uri, tracker.experiment_id, tracker.run_id))
        else:
            url = run_url("http://127.0.0.1:5000", tracker.experiment_id, tracker.run_id)
            log.info("open it: `make ui`, then %s", url)
