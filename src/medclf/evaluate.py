"""``python eval.py ckpt_path=… datamodule=…``: test a trained model on labelled data.

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
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from medclf.config import CONF_DIR
from medclf.errors import DataError, exit_on_user_error

log = logging.getLogger(__name__)


def labelled_split(datamodule, spec: dict[str, Any], split: str):
    """The rows to evaluate (``sample``, ``path``, ``label``), their targets in the
    checkpoint's class order, raw metadata and in-memory arrays."""
    import numpy as np

    from medclf.data.sources import assign_splits

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
    names = spec["class_names"]
    unknown = sorted(set(table.class_names) - set(names))
    if unknown:
        raise DataError(
            f"the data has classes {unknown} that the model does not know (its classes: "
            f"{', '.join(names)}); evaluate on data of the model's classes."
        )
    position = np.array([names.index(c) for c in table.class_names])
    if table.multilabel:
        rows = np.array([list(v) for v in frame["label"]], dtype=np.float32)
        targets = np.zeros((len(rows), len(names)), dtype=np.float32)
        targets[:, position] = rows
    else:
        targets = position[frame["label"].to_numpy(dtype=np.int64)]
    meta = table.meta.loc[frame.index] if table.meta is not None else None
    return frame.reset_index(drop=True), targets, meta, table.arrays


class EvalData:
    """What ``Trainer.test`` and the test report need: one test loader and its frame."""

    def __init__(self, frame, dataset, batch_size: int) -> None:
        import lightning as L

        self.frame = frame
        self.dataset = dataset
        self.batch_size = batch_size
        self.module = L.LightningDataModule.from_datasets(
            test_dataset=dataset, batch_size=batch_size
        )
        self.module.split_frame = self.split_frame

    def split_frame(self, split: str):
        return self.frame


def evaluate(cfg: DictConfig) -> dict[str, float]:
    import lightning as L

    from medclf.checkpoint import describe, load_module
    from medclf.data.datamodule import ImageDataset
    from medclf.data.metadata import MetadataEncoder
    from medclf.data.transforms import VolumeTransform, build_transform
    from medclf.reporting import TestReport
    from medclf.tracking import mlflow_loggers
    from medclf.train import _instantiate_all, _tidy_lightning_logging, instantiate

    _tidy_lightning_logging()
    L.seed_everything(cfg.seed, verbose=False)
    module = load_module(cfg.ckpt_path)
    if cfg.threshold is not None:
        module.hparams.threshold = float(cfg.threshold)
    spec = describe(module)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.datamodule)
    frame, targets, meta, arrays = labelled_split(datamodule, spec, cfg.split)
    metadata = None
    if spec["metadata"]:
        names = [c["name"] for c in spec["metadata"]]
        if meta is None or any(n not in meta.columns for n in names):
            raise DataError(
                f"the model was trained with metadata columns {names}; give a datamodule "
                f"with them (datamodule=csv datamodule.meta_columns=[{','.join(names)}])."
            )
        metadata = MetadataEncoder(spec["metadata"]).transform(meta[names])
    if spec["spatial_dims"] == 3:
        transform = VolumeTransform(spec.get("volume_size") or [32, 32, 32])
    else:
        transform = build_transform(spec["image_size"])
    dataset = ImageDataset(
        frame, arrays, spec["channels"], transform, targets, metadata, spec.get("dicom_window")
    )
    data = EvalData(frame, dataset, int(cfg.datamodule.batch_size))
    log.info("evaluating %s on %d samples (%s)", cfg.ckpt_path, len(frame), cfg.split)

    loggers = _instantiate_all(_logger_config(cfg))
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[TestReport(output_dir)])
    trackers = mlflow_loggers(loggers)
    status = "FAILED"
    try:
        for tracker in trackers:
            for key, value in _tags(cfg, tracker).items():
                tracker.experiment.set_tag(tracker.run_id, key, value)
        trainer.test(module, datamodule=data.module, verbose=False, weights_only=True)
        for tracker in trackers:
            tracker.log_artifact(output_dir / "config.yaml", "eval")
        status = "FINISHED"
    finally:
        for tracker in trackers:
            tracker.end_run(status)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    log.info(
        "eval: %s",
        ", ".join(f"{k}={metrics[k]:.4f}" for k in ("test/accuracy", "test/f1") if k in metrics),
    )
    log.info("report written to %s", output_dir / "test")
    return metrics


def _logger_config(cfg: DictConfig):
    loggers = cfg.get("logger") or {}
    for node in loggers.values():
        if node is None:
            continue
        node.save_model = False
        if cfg.mlflow_run_id:
            OmegaConf.update(node, "run_id", str(cfg.mlflow_run_id), force_add=True)
        elif node.get("run_name") is None:
            node.run_name = f"eval {Path(str(cfg.ckpt_path)).name}"
    return loggers


def _tags(cfg: DictConfig, tracker) -> dict[str, str]:
    """``eval_checkpoint`` and, for a new run, ``trained_in_run``: the training run whose
    run directory holds the checkpoint, when the store has it."""
    ckpt = Path(str(cfg.ckpt_path)).expanduser().resolve()
    tags = {"eval_checkpoint": str(ckpt), "eval_split": str(cfg.split)}
    if cfg.mlflow_run_id:
        return tags
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    found = tracker.experiment.search_runs(
        [tracker.experiment_id], filter_string=f"tags.output_dir = '{run_dir}'", max_results=1
    )
    if found:
        tags["trained_in_run"] = found[0].info.run_id
    return tags


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(evaluate, cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
