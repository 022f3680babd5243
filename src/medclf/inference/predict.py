"""``medclf-predict ckpt_path=… input=DIR_OR_CSV``: class probabilities for new images.

Writes ``output`` (CSV, medclf.inference.table): ``sample`` (the path as found or given),
``prediction`` and one ``prob_<class>`` column per class (names from the checkpoint).
Everything about the inputs comes from the checkpoint (medclf.inference.spec). ``tta=N``
averages N flipped/rotated views; several checkpoints are combined by ``ensemble``; a
stacked ensemble (medclf-ensemble's ``ensemble`` folder, or its run) applies its metalearner
to its members' probabilities (``ensemble=stack``, what ``auto`` picks for it), TTA per
member; ``xai=gradcam`` also writes heatmaps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from medclf.errors import ConfigError
from medclf.inference.inputs import ENSEMBLES
from medclf.inference.spec import InputSpec
from medclf.inference.stacking import is_ensemble
from medclf.tracking.names import CHECKPOINTS_DIR, ENSEMBLE_DIR

log = logging.getLogger(__name__)


def checkpoint_paths(value: Any, run_id: str | None = None, tracking_uri: str = "") -> list[str]:
    """``ckpt_path`` as a list, or the checkpoints of MLflow run ``run_id``: a
    cross-validation run's fold models, or a training run's best checkpoint."""
    if run_id:
        if value:
            raise ConfigError("give ckpt_path or run_id, not both.")
        return run_checkpoints(str(run_id), tracking_uri)
    if value is None:
        raise ConfigError("ckpt_path is not set: give ckpt_path=MODEL.ckpt (or run_id=...).")
    paths = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    if not paths:
        raise ConfigError("ckpt_path=[]: give at least one checkpoint.")
    return [str(p) for p in paths]


def run_checkpoints(run_id: str, tracking_uri: str = "") -> list[str]:
    """The fold checkpoints of a cross-validation run, else the best checkpoint in a training
    run's directory (its ``output_dir`` tag): ``checkpoints/epoch_*.ckpt``, the newest if
    several."""
    from medclf.tracking.runs import run_tags, trained_checkpoints

    tags = run_tags(tracking_uri, run_id)
    if isinstance(tags, str):
        raise ConfigError(f"run_id={run_id}: no such run at {tracking_uri} ({tags}).")
    folds, output_dir = trained_checkpoints(tags)
    if output_dir and is_ensemble(Path(output_dir) / ENSEMBLE_DIR):
        return [str(Path(output_dir) / ENSEMBLE_DIR)]  # a stacked ensemble's run
    if folds:
        return folds
    found = sorted(
        Path(output_dir).glob(f"{CHECKPOINTS_DIR}/epoch_*.ckpt") if output_dir else [],
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise ConfigError(
            f"run_id={run_id}: no checkpoint found (run directory {output_dir or 'not tagged'}, "
            "no fold_checkpoints tag); give the model with ckpt_path=MODEL.ckpt."
        )
    return [str(found[-1])]


def load_models(paths: list[str]) -> tuple[list[Any], InputSpec]:
    """The models and their shared input spec; models that disagree on classes or input are
    refused (they cannot be averaged)."""
    from medclf.models.checkpoint import load_module

    models = [load_module(p) for p in paths]
    spec = InputSpec.of(models[0])
    keys = (
        "class_names",
        "task",
        "channels",
        "spatial_dims",
        "metadata",
        "image_size",
        "volume_size",
        "dicom_window",
    )
    for path, model in zip(paths[1:], models[1:], strict=True):
        other = InputSpec.of(model)
        differ = [k for k in keys if getattr(other, k) != getattr(spec, k)]
        if differ:
            raise ConfigError(
                f"ckpt_path: {path} differs from {paths[0]} in {', '.join(differ)}; an ensemble "
                "needs models of the same classes and inputs."
            )
    return models, spec


def predict_batch(
    models: list[Any],
    image: Any,
    metadata: Any = None,
    tta: int = 1,
    ensemble: str = "mean",
    task: str = "multiclass",
    threshold: float | list[float] = 0.5,
    gate: list | None = None,
) -> np.ndarray:
    """(N, K) class probabilities of a batch: each model's ``predict_proba`` averaged over
    ``tta`` views, then the models combined by ``ensemble``. ``gate`` (a list) receives the
    first model's out-of-distribution scores of the unchanged images (its gate, fitted in
    training: medclf.audit.ood), from the same forward pass."""
    import torch

    from medclf.inference.inputs import combine, tta_views

    views = tta_views(image, int(tta))
    per_model = []
    with torch.no_grad():
        for k, model in enumerate(models):
            probs = []
            for v, view in enumerate(views):
                if gate is not None and k == 0 and v == 0:
                    features, logits = model.features_and_logits(view, metadata)
                    gate.append(ood_scores(model.ood, features, logits))
                    probs.append(model.probabilities(logits))
                else:
                    probs.append(model.predict_proba(view, metadata))
            per_model.append(torch.stack(probs).mean(0).numpy())
    return combine(per_model, ensemble, task, threshold)


def ood_scores(state: dict, features, logits) -> np.ndarray:
    """The gate's score of each image from the pooled features and logits of a forward pass."""
    from medclf.audit import ood

    return ood.score(state, logits.float().cpu().numpy(), features.float().cpu().numpy())


def predict(cfg: DictConfig) -> Path:
    """Write the predictions CSV of ``cfg`` (conf/predict.yaml); returns its path."""
    from torch.utils.data import DataLoader

    from medclf.inference.inputs import PredictDataset, input_table
    from medclf.inference.stacking import predict_stacked
    from medclf.inference.table import FLOAT_FORMAT, predictions_frame

    paths = checkpoint_paths(cfg.ckpt_path, cfg.get("run_id"), cfg.get("tracking_uri") or "")
    stack = _stacked(paths, str(cfg.ensemble))
    how = str(cfg.ensemble) if cfg.ensemble != "auto" else ("stack" if stack else "mean")
    models, spec = load_models(stack.checkpoints() if stack else paths)
    threshold = stack.threshold if stack else spec.threshold
    threshold = threshold if cfg.threshold is None else float(cfg.threshold)
    table = input_table(cfg.input, cfg.image_column)
    dataset = PredictDataset(table, spec)
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers))
    explain = _explainer(cfg) if cfg.xai else None
    rows, converted = [], 0
    gate: list | None = [] if spec.ood else None
    for batch in loader:
        image, metadata = batch["image"], batch.get("metadata")
        converted += int(batch["converted"].sum())
        if how == "stack":
            probs = predict_stacked(stack, stack.groups(models), image, metadata, cfg.tta, gate)
        else:
            probs = predict_batch(models, image, metadata, cfg.tta, how, spec.task, threshold, gate)
        rows.append(probs)
        if explain is not None:
            samples = table["sample"].iloc[batch["index"].numpy()]
            explain(models[0], image, metadata, probs, threshold, samples)
    if converted:
        log.warning(
            "%d of %d images had another channel count than the model's %d and were converted "
            "(grey ↔ RGB).",
            converted,
            len(dataset),
            spec.channels,
        )
    probs = np.concatenate(rows)
    out = predictions_frame(
        table["sample"],
        probs,
        spec.class_names,
        spec.task,
        threshold,
        conformal=_sets(spec, len(models), int(cfg.tta) > 1, stacked=how == "stack"),
        ood=(np.concatenate(gate), spec.ood) if gate else None,
    )
    if gate:
        from medclf.audit.ood import batch_summary

        summary = batch_summary(spec.ood, np.concatenate(gate), spec.ood.get("max_share", 0.5))
        if summary.get("warning"):
            log.warning("%s", summary["warning"])
    output = Path(cfg.output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output, index=False, float_format=FLOAT_FORMAT)
    log.info("%d predictions written to %s", len(out), output)
    return output


def _stacked(paths: list[str], how: str):
    """The stacked ensemble ``ckpt_path`` names (medclf.inference.stacking), or None for
    checkpoints; ``ensemble=stack`` needs one, mean/median/vote combine its members' models
    instead of applying its metalearner."""
    from medclf.inference.stacking import load_ensemble

    stacks = [p for p in paths if is_ensemble(p)]
    if how not in ("auto", "stack", *ENSEMBLES):
        raise ConfigError(f"ensemble={how!r}: use auto, mean, median, vote or stack.")
    if not stacks:
        if how == "stack":
            raise ConfigError(
                "ensemble=stack needs a stacked ensemble: build one with medclf-ensemble "
                "runs=[RUN_ID,...] and give ckpt_path=<its stacked_ensemble folder> or "
                "run_id=<its run>."
            )
        return None
    if len(paths) > 1:
        raise ConfigError(
            f"ckpt_path: give one stacked ensemble ({stacks[0]}) alone, not with other models."
        )
    ensemble = load_ensemble(stacks[0])
    if how not in ("auto", "stack"):
        log.info("ensemble=%s: the stacked ensemble's member models combined by %s", how, how)
    return ensemble


def _sets(spec: InputSpec, n_models: int, tta: bool, stacked: bool = False) -> dict | None:
    """The checkpoint's conformal state when its sets apply: one model without TTA (the
    probabilities it was fitted on); for an ensemble, TTA or a stacked ensemble's metalearner
    the sets are left out, with a note, since their probabilities are not those the
    guarantee holds for."""
    if spec.conformal is None:
        return None
    if tta or n_models > 1 or stacked:
        log.info(
            "prediction sets left out: they are calibrated for one model without TTA, and "
            "this prediction %s",
            "applies a stacked ensemble's metalearner"
            if stacked
            else "averages " + ("TTA views" if tta else f"{n_models} models"),
        )
        return None
    return spec.conformal


def _explainer(cfg: DictConfig):
    """A function writing the heatmaps of a batch, for each image's predicted classes (the
    decision rule's), into ``xai_dir``."""
    from medclf.inference import xai

    xai.get_method(str(cfg.xai))  # an unknown name: ConfigError with the nearest ones
    if not cfg.xai_dir:
        raise ConfigError("xai_dir is not set: give the folder for the heatmaps (xai_dir=DIR).")
    directory = Path(cfg.xai_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)

    def explain(model, image, metadata, probs, threshold, samples) -> None:
        targets = xai.predicted_targets(model, probs, threshold)
        maps = xai.heatmaps(model, image, method=cfg.xai, metadata=metadata, targets=targets)
        for picture, heatmap, sample in zip(image, maps, samples, strict=True):
            stem = str(sample).replace("/", "__").replace("\\", "__").split(".", 1)[0]
            xai.save_heatmap(heatmap, picture.numpy(), directory, stem)

    return explain
