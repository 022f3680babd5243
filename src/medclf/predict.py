"""``python predict.py ckpt_path=… input=DIR_OR_CSV``: class probabilities for new images.

Writes ``output`` (CSV): ``sample`` (the path as found or given), one probability column
per class (names from the checkpoint), ``prediction``. Everything about the inputs comes
from the checkpoint (medclf.checkpoint). ``tta=N`` averages N flipped/rotated views;
several checkpoints are combined by ``ensemble``; ``xai=gradcam`` also writes heatmaps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig

from medclf.config import CONF_DIR
from medclf.errors import ConfigError, exit_on_user_error

log = logging.getLogger(__name__)


def checkpoint_paths(value: Any, run_id: str | None = None, tracking_uri: str = "") -> list[str]:
    """``ckpt_path`` as a list, or the fold checkpoints of cross-validation run ``run_id``."""
    if run_id:
        if value:
            raise ConfigError("give ckpt_path or run_id, not both.")
        import mlflow

        try:
            run = mlflow.MlflowClient(tracking_uri).get_run(str(run_id))
        except mlflow.exceptions.MlflowException as exc:
            raise ConfigError(f"run_id={run_id}: no such run at {tracking_uri} ({exc}).") from None
        folds = run.data.tags.get("fold_checkpoints")
        if not folds:
            raise ConfigError(
                f"run_id={run_id} is not a cross-validation run (no fold_checkpoints tag); "
                "give its checkpoints with ckpt_path=[...]."
            )
        return folds.split(";")
    if value is None:
        raise ConfigError("ckpt_path is not set: give ckpt_path=MODEL.ckpt (or run_id=...).")
    paths = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    if not paths:
        raise ConfigError("ckpt_path=[]: give at least one checkpoint.")
    return [str(p) for p in paths]


def load_models(paths: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """The models and their shared input spec; models that disagree on classes or input are
    refused (they cannot be averaged)."""
    from medclf.checkpoint import describe, load_module

    models = [load_module(p) for p in paths]
    spec = describe(models[0])
    keys = ("class_names", "task", "channels", "spatial_dims", "metadata")
    for path, model in zip(paths[1:], models[1:], strict=True):
        other = describe(model)
        differ = [k for k in keys if other[k] != spec[k]]
        if differ:
            raise ConfigError(
                f"ckpt_path: {path} differs from {paths[0]} in {', '.join(differ)}; an ensemble "
                "needs models of the same classes and inputs."
            )
    return models, spec


def predict(cfg: DictConfig) -> Path:
    import numpy as np
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from medclf.inference import (
        PredictDataset,
        combine,
        input_table,
        predicted_labels,
        tta_views,
    )

    paths = checkpoint_paths(cfg.ckpt_path, cfg.get("run_id"), cfg.get("tracking_uri") or "")
    models, spec = load_models(paths)
    threshold = spec["threshold"] if cfg.threshold is None else float(cfg.threshold)
    table = input_table(cfg.input, cfg.image_column)
    dataset = PredictDataset(table, spec)
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers))
    explain = _explainer(cfg, spec) if cfg.xai else None
    rows, converted = [], 0
    with torch.no_grad():
        for batch in loader:
            image, metadata = batch["image"], batch.get("metadata")
            converted += int(batch["converted"].sum())
            views = tta_views(image, int(cfg.tta))
            per_model = []
            for model in models:
                probs = [
                    model.class_probabilities(model.head.activate(model(v, metadata).float()))
                    for v in views
                ]
                per_model.append(torch.stack(probs).mean(0).numpy())
            probs = combine(per_model, cfg.ensemble, spec["task"], threshold)
            rows.append(probs)
            if explain is not None:
                labels = probs.argmax(1) if spec["task"] != "multilabel" else None
                explain(models[0], image, metadata, labels, table["sample"].iloc[batch["index"]])
    if converted:
        log.warning(
            "%d of %d images had another channel count than the model's %d and were converted "
            "(grey ↔ RGB).",
            converted,
            len(dataset),
            spec["channels"],
        )
    probs = np.concatenate(rows)
    names = spec["class_names"]
    out = pd.DataFrame({"sample": table["sample"]})
    for k, name in enumerate(names):
        out[name] = probs[:, k]
    out["prediction"] = predicted_labels(probs, names, spec["task"], threshold)
    output = Path(cfg.output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output, index=False)
    log.info("%d predictions written to %s", len(out), output)
    return output


def _explainer(cfg: DictConfig, spec: dict[str, Any]):
    """A function writing the heatmaps of a batch into ``xai_dir``."""
    from medclf import xai

    xai.get_method(str(cfg.xai))  # an unknown name: ConfigError with the nearest ones
    if not cfg.xai_dir:
        raise ConfigError("xai_dir is not set: give the folder for the heatmaps (xai_dir=DIR).")
    directory = Path(cfg.xai_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)

    def explain(model, image, metadata, labels, samples) -> None:
        maps = xai.heatmaps(model, image, method=cfg.xai, metadata=metadata, targets=labels)
        for picture, heatmap, sample in zip(image, maps, samples, strict=True):
            stem = str(sample).replace("/", "__").replace("\\", "__").split(".", 1)[0]
            xai.save_heatmap(heatmap, picture.numpy(), directory, stem)

    return explain


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(predict, cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
