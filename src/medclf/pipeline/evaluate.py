"""``medclf-eval ckpt_path=… datamodule=…``: test a trained model on labelled data.

The model and how its inputs are prepared (channels, size, metadata encoding) come from the
checkpoint; the datamodule gives the labelled samples only, matched to the checkpoint's
classes by name. Writes the test report (predictions, per-class precision, recall, F1,
sensitivity and specificity, confusion matrix, ROC and PR curves, per-class bars) to the
run directory and logs it to MLflow: a new run linked to the training run, or
``mlflow_run_id=``'s run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medclf.errors import DataError
from medclf.inference.spec import InputSpec
from medclf.tracking import names

log = logging.getLogger(__name__)


def labelled_split(datamodule, spec: InputSpec, split: str):
    """The rows to evaluate (``sample``, ``path``, ``label``), their targets in the
    checkpoint's class order, raw metadata and in-memory arrays."""
    import numpy as np

    from medclf.data.splits import assign_splits

    table = datamodule.load_table()
    frame = table.frame
    if split == "test":
        frame = assign_splits(
            frame, datamodule.val_fraction, datamodule.test_fraction, datamodule.seed
        )
        frame = frame[frame["split"] == "test"]
    elif split != "all":
        raise DataError(f"split={split!r}: use test or all.")
    if frame.empty:
        raise DataError(f"split={split}: no samples to evaluate.")
    known = spec.class_names
    unknown = sorted(set(table.class_names) - set(known))
    if unknown:
        raise DataError(
            f"the data has classes {unknown} that the model does not know (its classes: "
            f"{', '.join(known)}); evaluate on data of the model's classes."
        )
    position = np.array([known.index(c) for c in table.class_names])
    if table.multilabel:
        rows = np.array([list(v) for v in frame["label"]], dtype=np.float32)
        targets = np.zeros((len(rows), len(known)), dtype=np.float32)
        targets[:, position] = rows
    else:
        targets = position[frame["label"].to_numpy(dtype=np.int64)]
    meta = table.meta.loc[frame.index] if table.meta is not None else None
    info = table.info.loc[frame.index].reset_index(drop=True) if table.info is not None else None
    return frame.reset_index(drop=True), targets, meta, table.arrays, info


def eval_datamodule(frame, dataset, batch_size: int, info=None):
    """What ``Trainer.test`` and the test report need: one test loader (shared out among DDP
    ranks without padding) and the frame of its samples."""
    import lightning as L
    from torch.utils.data import DataLoader

    from medclf.data.sampling import eval_sampler

    class EvalDataModule(L.LightningDataModule):
        def test_dataloader(self) -> DataLoader:
            return DataLoader(dataset, batch_size=batch_size, sampler=eval_sampler(dataset))

        def split_frame(self, split: str):
            return frame

        def split_info(self, split: str):
            return info

        @property
        def groups(self) -> bool:
            return "group" in frame.columns and bool(frame["group"].notna().any())

        @property
        def table(self):
            from types import SimpleNamespace

            return SimpleNamespace(info=info)

    return EvalDataModule()


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the datamodule's labelled samples; returns the test metrics."""
    import lightning as L

    from medclf.data.dataset import ImageDataset
    from medclf.evaluation.analysis import Settings
    from medclf.evaluation.report import TestReport
    from medclf.models.checkpoint import load_module
    from medclf.pipeline.build import (
        instantiate,
        instantiate_loggers,
        make_trainer,
        report_columns,
        tidy_lightning_logging,
    )
    from medclf.pipeline.job import job_overrides
    from medclf.pipeline.rules import check_eval
    from medclf.tracking.logger import mlflow_loggers

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, verbose=False)
    module = load_module(cfg.ckpt_path)
    if cfg.threshold is not None:
        module.set_decision(threshold=float(cfg.threshold))
    spec = InputSpec.of(module)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / names.CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.datamodule, **report_columns(cfg))
    frame, targets, meta, arrays, info = labelled_split(datamodule, spec, cfg.split)
    columns = ",".join(spec.metadata_columns)
    fix = f"Give a datamodule with them (datamodule=csv datamodule.meta_columns=[{columns}])."
    metadata = spec.encode_metadata(meta, "the data", fix)
    dataset = ImageDataset(
        frame, arrays, spec.channels, spec.transform(), targets, metadata, spec.dicom_window
    )
    data = eval_datamodule(frame, dataset, int(cfg.datamodule.batch_size), info)
    check_eval(cfg, data)
    log.info("evaluating %s on %d samples (%s)", cfg.ckpt_path, len(frame), cfg.split)

    for node in (cfg.get("logger") or {}).values():
        if node is not None:
            node.save_model = False
    run_id = str(cfg.mlflow_run_id) if cfg.mlflow_run_id else None
    run_name = f"eval {Path(str(cfg.ckpt_path)).name}"
    loggers = instantiate_loggers(cfg.get("logger"), run_name, run_id=run_id)
    settings = Settings.of(cfg.get("eval"), cfg.seed)
    try:
        command = " ".join(["medclf-eval", *job_overrides()])
    except ValueError:  # not inside a Hydra app
        command = "medclf-eval"
    trainer = make_trainer(cfg.trainer, loggers, [TestReport(output_dir, settings, command)])
    trackers = mlflow_loggers(loggers)
    status = "FAILED"
    try:
        for tracker in trackers:
            tracker.set_tags(_tags(cfg, tracker))
        trainer.test(module, datamodule=data, verbose=False, weights_only=True)
        for tracker in trackers:
            tracker.log_artifact(output_dir / names.CONFIG_FILE, names.EVAL_DIR)
        status = "FINISHED"
    finally:
        for tracker in trackers:
            tracker.end_run(status)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    log.info(
        "eval: %s",
        ", ".join(f"{k}={metrics[k]:.4f}" for k in ("test/accuracy", "test/f1") if k in metrics),
    )
    log.info("report written to %s", output_dir / names.TEST_DIR)
    return metrics


def _tags(cfg: DictConfig, tracker) -> dict[str, str]:
    """``eval_checkpoint`` and, for a new run, ``trained_in_run``: the training run whose
    run directory holds the checkpoint, when the store has it."""
    ckpt = Path(str(cfg.ckpt_path)).expanduser().resolve()
    tags = {names.EVAL_CHECKPOINT: str(ckpt), names.EVAL_SPLIT: str(cfg.split)}
    if cfg.mlflow_run_id:
        return tags
    run_dir = ckpt.parent.parent if ckpt.parent.name == names.CHECKPOINTS_DIR else ckpt.parent
    found = tracker.find_run(names.OUTPUT_DIR, str(run_dir))
    if found:
        tags[names.TRAINED_IN_RUN] = found
    return tags
