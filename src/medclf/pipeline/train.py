"""One training run from its checked plan (medclf.pipeline.plan): build the parts
(medclf.pipeline.build), fit, test the best checkpoint, and record everything in the run
directory and MLflow (medclf.tracking.record), then the console summary
(medclf.pipeline.summary).

``check_only`` and cross-validation sit above this (medclf.pipeline.task); a resume
(medclf.pipeline.resume, planned by the pre-flight) decides the run directory and MLflow run
before anything starts.
"""

from __future__ import annotations

import json
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
    tidy_lightning_logging,
)
from medclf.pipeline.job import command_line, data_name, data_source, job_name, run_tags
from medclf.pipeline.plan import RunPlan, make_plan
from medclf.search.pruning import Pruned, pruned_epoch
from medclf.tracking import names, record

log = logging.getLogger("medclf.train")


def run(plan: RunPlan | DictConfig, results: dict | None = None) -> float | Pruned | None:
    """Train and test as planned (a config is checked first); returns the best
    ``optimized_metric`` value (in a search trial the pruner stopped:
    :class:`medclf.search.pruning.Pruned`). ``results`` (if given) receives the final
    metrics, the best checkpoint and the MLflow run id."""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from medclf import distributed, runtime
    from medclf.pipeline import ddp
    from medclf.tracking.logger import OpenStoreWhenTrainingStarts, mlflow_loggers

    runtime.lap("imports")
    tidy_lightning_logging()
    if not isinstance(plan, RunPlan):
        plan = make_plan(plan)
    cfg, resume = plan.cfg, plan.resume
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
        (own_dir / names.CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    digest = ddp.config_hash(cfg)
    ddp.install()
    ddp_environment = distributed.ddp_environment()
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    runtime.lap("config")
    datamodule = make_datamodule(cfg)
    runtime.lap("data")
    model = build_model(cfg, datamodule, plan.fit_data(datamodule))
    plan.check_model(model)
    runtime.lap("model")
    # The MLflow store opens (imports MLflow, the schema, the experiment, the run) in the
    # loggers' own thread from the first training batch on: the first step does not wait
    # for it, the set-up above did not share the interpreter with it, and the train loader's
    # workers were forked before it starts programs. DDP ranks > 0 log nothing, not even
    # opening the store (concurrent table creation).
    loggers = []
    if rank_zero_only.rank == 0:
        run_id = resume.mlflow_run_id if resume is not None else None
        spool = output_dir / names.UNSENT_FILE
        logger_cfg, name = cfg.get("logger"), job_name(cfg)
        loggers = instantiate_loggers(logger_cfg, name, spool, run_id, open_in_background=True)
    trackers = mlflow_loggers(loggers)

    status = "FAILED"
    sigint = signal.getsignal(signal.SIGINT)
    try:  # from here the run exists in MLflow (or soon will) and gets an end status
        run_values = {"config_digest": digest, "command": command_line("medclf-train")}
        callbacks = instantiate_callbacks(cfg.get("callbacks"), run_values)
        if trackers:
            callbacks.append(OpenStoreWhenTrainingStarts(trackers))
        trainer = make_trainer(cfg.trainer, loggers, callbacks)
        if rank_zero_only.rank == 0:
            _start_tracking(trackers, cfg, resume, output_dir, datamodule, model.task)
        _record_startup(trackers, output_dir, getattr(datamodule, "cache_stats", {}))
        with runtime.long_lived_frozen():
            checkpoint = _fit_and_test(cfg, trainer, model, datamodule, resume, trackers)
            pruned = pruned_epoch(trainer)
            if pruned is not None:
                record.mark_pruned(trackers, pruned)
            elif trainer.is_global_zero:
                for tracker in trackers:
                    tracker.flush()  # an error of what was logged in its thread, raised here
                runtime.wait_background()  # the checkpoint's rewrite, before its upload
                example = datamodule.datasets["test"][0]
                record.log_outputs(trackers, output_dir, checkpoint, model, example)
        runtime.wait_background()  # what ran beside the critical path (figures, uploads)
        status = "FINISHED" if pruned is None else "KILLED"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
        status = "KILLED"
        raise
    finally:
        runtime.wait_background(raise_errors=False)  # after an error: let it finish
        for tracker in trackers:
            tracker.end_run(status)
        distributed.release(ddp_environment)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a Ctrl-C
    if trainer.is_global_zero:
        from medclf.pipeline.summary import log_summary

        log_summary(trainer, trackers, output_dir)
    best = best_value(trainer, cfg.get("optimized_metric"))
    if results is not None:
        results["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        results["checkpoint"] = checkpoint
        results["run_id"] = trackers[0].run_id if trackers else None
        results["best"] = best
        if int(cfg.datamodule.get("folds") or 0) >= 2 and pruned is None and trainer.is_global_zero:
            results["val_predictions"] = _fold_predictions(
                model, datamodule, output_dir, checkpoint
            )
    if pruned is not None:  # the sweeper records the trial PRUNED
        return Pruned(pruned, best)
    return best


def _start_tracking(
    trackers: list, cfg: DictConfig, resume, output_dir: Path, datamodule, task: str
) -> None:
    """``splits.csv``; then, in each tracker's thread once its store is open, a new run gets
    the flattened config and the splits' counts as params, the run tags (the model's task
    among them), ``splits.csv`` and the splits as dataset inputs (medclf.tracking.record); a
    resumed run is set back to RUNNING (its params are immutable). Then the first tracker's
    run is named in ``mlflow_run.json``."""
    splits = record.write_splits(output_dir, datamodule)
    if not trackers:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    counts = datamodule.split_counts()
    tags = {**run_tags(output_dir, cfg.paths.root_dir), names.TASK: task}
    name, source = data_name(cfg), data_source(cfg)

    def start(tracker) -> None:
        if resume is not None and tracker.run_id == resume.mlflow_run_id:
            tracker.resume_run(resume.ckpt_path, resume.epoch)
        else:
            record.start_run(tracker, config, counts, tags, splits, name, source)
        if tracker is trackers[0]:
            record.write_run_file(output_dir, tracker)

    for tracker in trackers:
        tracker.later(start, tracker)


def _record_startup(trackers: list, output_dir: Path, cache: dict) -> None:
    """The start-up's phases (medclf.runtime) in the log, in ``startup.json`` and as the
    run's ``startup/<phase>_s`` metrics; with them what the decoded cache did (its build
    time and images/s, medclf.data.cachefill) under ``decoded_cache``."""
    from lightning.pytorch.utilities import rank_zero_only

    from medclf import runtime

    runtime.lap("trainer")
    phases = runtime.startup()
    if rank_zero_only.rank != 0:
        return
    record_file = {**phases, "decoded_cache": cache}
    (output_dir / names.STARTUP_FILE).write_text(json.dumps(record_file, indent=1))
    log.info(
        "start-up %.1f s: %s",
        phases["total"],
        ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items() if name != "total"),
    )
    record.log_startup(trackers, phases, cache)


def _fold_predictions(model, datamodule, output_dir: Path, checkpoint: str | None) -> Path:
    """A cross-validation fold's out-of-fold predictions: the best checkpoint's weights (as
    tested; calibrated when so configured) on the fold's val split, in the predictions
    table's format."""
    from medclf.inference.table import FLOAT_FORMAT, predictions_frame
    from medclf.models.checkpoint import read_checkpoint
    from medclf.pipeline.posthoc import validation_logits

    if checkpoint:
        model.load_state_dict(read_checkpoint(Path(checkpoint))["state_dict"])

    logits, targets = validation_logits(model, datamodule)
    frame = predictions_frame(
        datamodule.split_frame("val")["sample"],
        model.probabilities(logits).numpy(),
        model.class_names,
        model.task,
        model.threshold,
        targets=targets.numpy(),
    )
    path = output_dir / names.VAL_PREDICTIONS_FILE
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    return path


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
    holds_best = False
    if cfg.train:
        chosen, holds_best = fit_on_validation(cfg, model, datamodule, checkpoint)
        record.log_fitted(trackers, chosen)
    if cfg.test:
        ckpt = checkpoint if cfg.train else (resume and str(resume.ckpt_path))
        if holds_best:  # the best checkpoint's weights, loaded to fit on validation
            ckpt = None  # are tested as they are, while the checkpoint is being rewritten
        if not cfg.train:
            restore_decision(model, ckpt)
        verbose = bool(cfg.get("verbose", False))  # the full metric table: verbose or the report
        trainer.test(
            model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=verbose
        )
    return checkpoint
