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

from medclf.pipeline.best import best_value
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
from medclf.search.pruning import Pruned, pruned_epoch

log = logging.getLogger("medclf.train")


def plan_resume(cfg: DictConfig):
    """What ``ckpt_path`` resumes (medclf.pipeline.resume.plan), or None without one."""
    if not cfg.get("ckpt_path"):
        return None
    from medclf.pipeline.resume import plan

    return plan(str(cfg.ckpt_path), cfg.paths.log_dir, job_overrides(), bool(cfg.train), job_dir())


def run(cfg: DictConfig, results: dict | None = None) -> float | Pruned | None:
    """Train and test as configured; returns the best ``cfg.optimized_metric`` value (in a
    search trial the pruner stopped: :class:`medclf.search.pruning.Pruned`).
    ``results`` (if given) receives the final metrics, the best checkpoint and the MLflow
    run id."""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from medclf import distributed, runtime
    from medclf.config import validate
    from medclf.pipeline import ddp
    from medclf.pipeline.resume import check_fits
    from medclf.tracking.logger import mlflow_loggers

    runtime.lap("imports")
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

    runtime.lap("config")
    datamodule = make_datamodule(cfg)
    runtime.lap("data")
    model = build_model(cfg, datamodule)
    if resume is not None:
        check_fits(resume, model)
    runtime.lap("model")
    # DDP ranks > 0 log nothing; not even opening the store (concurrent table creation).
    loggers = []
    if rank_zero_only.rank == 0:
        run_id = resume.mlflow_run_id if resume is not None else None
        spool = output_dir / "mlflow_unsent.jsonl"
        loggers = instantiate_loggers(cfg.get("logger"), job_name(cfg), spool, run_id)
    trackers = mlflow_loggers(loggers)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    callbacks += platform_callbacks(cfg, output_dir, trackers, digest)
    trainer = make_trainer(cfg.trainer, loggers, callbacks)

    status = "FAILED"
    sigint = signal.getsignal(signal.SIGINT)
    try:
        _start_tracking(trackers, cfg, resume, output_dir, datamodule)  # creates the MLflow run
        _record_startup(trackers, output_dir)
        with runtime.long_lived_frozen():
            checkpoint = _fit_and_test(cfg, trainer, model, datamodule, resume, trackers)
            pruned = _pruned(trainer, trackers)
            if trainer.is_global_zero and pruned is None:
                _log_outputs(trackers, output_dir, checkpoint, model, datamodule)
        status = "FINISHED" if pruned is None else "KILLED"
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
    best = best_value(trainer, cfg.get("optimized_metric"))
    if results is not None:
        results["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        results["checkpoint"] = checkpoint
        results["run_id"] = trackers[0].run_id if trackers else None
        results["best"] = best
    if pruned is not None:  # the sweeper records the trial PRUNED
        return Pruned(pruned, best)
    return best


def _pruned(trainer, trackers: list) -> int | None:
    """The epoch after which the Optuna search pruned this trial (None if it was not); its
    MLflow run is tagged ``optuna_state=PRUNED`` and ``optuna_pruned_epoch``."""
    epoch = pruned_epoch(trainer)
    if epoch is None:
        return None
    for tracker in trackers:
        tracker.experiment.set_tag(tracker.run_id, "optuna_state", "PRUNED")
        tracker.experiment.set_tag(tracker.run_id, "optuna_pruned_epoch", str(epoch))
    return epoch


def _start_tracking(trackers: list, cfg: DictConfig, resume, output_dir: Path, datamodule) -> None:
    """A new run gets the flattened config and the splits' counts as params, the run tags
    and ``splits.csv``; a resumed run is set back to RUNNING (its params are immutable)."""
    from lightning.pytorch.utilities import rank_zero_only

    from medclf.tracking.logger import flatten

    splits = output_dir / "splits.csv"
    if rank_zero_only.rank != 0:
        return
    table = datamodule.splits_table()
    table.to_csv(splits, index=False)
    for tracker in trackers:
        if resume is not None and tracker.run_id == resume.mlflow_run_id:
            tracker.resume_run(resume.ckpt_path, resume.epoch)
            continue
        tracker.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
        tracker.log_hyperparams(split_params(datamodule.split_counts()))
        tracker.log_artifact(splits)
        for key, value in run_tags(output_dir, cfg.paths.root_dir).items():
            tracker.experiment.set_tag(tracker.run_id, key, value)
        _log_datasets(tracker, cfg, table, datamodule)


def _log_datasets(tracker, cfg: DictConfig, table, datamodule) -> None:
    """The train, val and test samples as the run's MLflow dataset inputs
    (medclf.tracking.datasets), named like the run's data part (``folder:xray``)."""
    import os

    from medclf.pipeline.job import data_name, data_path
    from medclf.tracking.datasets import log_split_inputs

    def size(path) -> int:
        if not isinstance(path, str):  # a row of in-memory arrays (an int: not a file)
            return 0
        try:
            return os.stat(path).st_size
        except OSError:
            return 0

    path = data_path(cfg)
    source = str(Path(path).resolve()) if path else str(cfg.datamodule.get("_target_", ""))
    sizes = [size(path) for path in datamodule.frame["path"]]
    log_split_inputs(tracker.experiment, tracker.run_id, table, sizes, data_name(cfg), source)


def _record_startup(trackers: list, output_dir: Path) -> None:
    """The start-up's phases (medclf.runtime) in the log, in ``startup.json`` and as the
    run's ``startup/<phase>_s`` metrics."""
    import json

    from lightning.pytorch.utilities import rank_zero_only

    from medclf import runtime

    runtime.lap("MLflow and trainer")
    phases = runtime.startup()
    if rank_zero_only.rank != 0:
        return
    (output_dir / "startup.json").write_text(json.dumps(phases, indent=1))
    log.info(
        "start-up %.1f s: %s",
        phases["total"],
        ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items() if name != "total"),
    )
    for tracker in trackers:
        tracker.log_metrics({f"startup/{k.replace(' ', '_')}_s": v for k, v in phases.items()})


def split_params(counts) -> dict[str, int]:
    """``data.<split>.samples``, ``data.<split>.groups`` (with groups) and
    ``data.<split>.class.<name>`` from the datamodule's split counts."""
    from medclf.tracking.logger import mlflow_key

    params = {}
    for row in counts.to_dict("records"):
        split = row.pop("split")
        for key, value in row.items():
            if key == "groups" and value != value:  # NaN: no groups
                continue
            name = key if key in ("samples", "groups") else f"class.{key}"
            params[mlflow_key(f"data.{split}.{name}")] = int(value)
    return params


def _fit_and_test(cfg: DictConfig, trainer, model, datamodule, resume, trackers) -> str | None:
    """Fit (from the resumed checkpoint), fit calibration and threshold rules on the
    validation split (medclf.pipeline.posthoc), then test the best checkpoint; returns its
    path."""
    from medclf.pipeline.posthoc import fit_on_validation, restore_decision

    if cfg.train:
        ckpt = str(resume.ckpt_path) if resume is not None else None
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if pruned_epoch(trainer) is not None:
        return checkpoint  # a pruned search trial: no calibration, no test pass
    if cfg.train:
        chosen = fit_on_validation(cfg, model, datamodule, checkpoint)
        for tracker in trackers:
            tracker.log_hyperparams({f"fitted.{key}": value for key, value in chosen.items()})
    if cfg.test:
        ckpt = checkpoint if cfg.train else (resume and str(resume.ckpt_path))
        if not cfg.train:
            restore_decision(model, ckpt)
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


def _summary(trainer, trackers: list, output_dir: Path) -> None:
    """Log the headline test metrics, the run directory and where to see the run."""
    from medclf.evaluation.report import TestReport
    from medclf.tracking.server import run_url

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    report = next((c for c in trainer.callbacks if isinstance(c, TestReport)), None)
    analysis = report.analysis if report is not None else None
    intervals = {}
    if analysis is not None and analysis.table is not None:
        for row in analysis.table.itertuples():
            if row.ci_low == row.ci_low:  # not NaN
                intervals[f"test/{row.metric}"] = (row.ci_low, row.ci_high)

    def shown(key: str) -> str:
        low_high = intervals.get(key)
        ci = f" [{low_high[0]:.4f}, {low_high[1]:.4f}]" if low_high else ""
        return f"{key}={metrics[key]:.4f}{ci}"

    headline = ", ".join(
        shown(k) for k in ("test/accuracy", "test/f1", "test/auroc") if k in metrics
    )
    if headline:
        log.info("test: %s", headline)
    if analysis is not None:
        calibration = analysis.calibration
        if "ece_after" in calibration:
            log.info(
                "calibration: temperature %.3f, test ECE %.4f -> %.4f, Brier %.4f -> %.4f",
                calibration["temperature"],
                calibration["ece"],
                calibration["ece_after"],
                calibration["brier"],
                calibration["brier_after"],
            )
        else:
            log.info(
                "calibration: test ECE %.4f, Brier %.4f", calibration["ece"], calibration["brier"]
            )
        patients = analysis.patients
        if patients is not None:
            row = patients.set_index("metric").loc["f1"]
            log.info(
                "patients: test_patient/f1=%.4f [%.4f, %.4f]", row.value, row.ci_low, row.ci_high
            )
    if report is not None and report.run_dir.joinpath("report.html").exists():
        log.info("run report: %s", report.run_dir / "report.html")
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
