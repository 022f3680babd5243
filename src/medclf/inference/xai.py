"""Grad-CAM heatmaps for a trained medclf model (2D images and 3D volumes).

Built on pytorch-grad-cam (``pytorch_grad_cam``), whose GradCAM, GradCAM++ and EigenCAM
accept 5D activations as well as 4D, so volumes need no separate code path: the CAM is
upsampled bilinearly (cv2) for images and with a spline (scipy ``zoom``) for volumes.
The target layer is the backbone itself, whose output is by construction the feature map
the head pools. No Hydra here: medclf.inference.predict calls :func:`heatmaps` and the writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputTarget,
)
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from medclf.errors import ConfigError, did_you_mean
from medclf.inference.spec import InputSpec
from medclf.models.outputs import class_probabilities, decide

__all__ = [
    "METHODS",
    "get_method",
    "heatmaps",
    "overlay_png",
    "predicted_targets",
    "save_heatmap",
    "save_volume",
    "target_layer",
]


class OrientedEigenCAM(EigenCAM):
    """EigenCAM with the principal component's sign fixed. A singular vector's sign is
    arbitrary, so the library's map may highlight the background; here the projection is
    flipped where it anti-correlates with the channel mean of the feature map (the quantity
    the head pools)."""

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        activations = np.asarray(activations, dtype=np.float32)
        projection = get_2d_projection(activations)
        mean = activations.mean(axis=1)
        for i, (p, m) in enumerate(zip(projection, mean, strict=True)):
            if np.sum((p - p.mean()) * (m - m.mean())) < 0:
                projection[i] = -p
        return projection


METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": OrientedEigenCAM}
"""User-facing name → CAM class. EigenCAM needs no gradients (first principal component of
the feature map); it explains the features, not one class, so ``targets`` do not change it."""


def get_method(name: str) -> type:
    """The CAM class called ``name`` (case-insensitive), suggesting the closest on a typo."""
    try:
        return METHODS[str(name).lower()]
    except KeyError:
        raise ConfigError(
            f"xai={name!r} is not a known heatmap method.{did_you_mean(str(name), METHODS)} "
            f"Choose one of: {', '.join(METHODS)}."
        ) from None


def target_layer(module: nn.Module) -> nn.Module:
    """The layer whose output is the last feature map: ``module.backbone``, which returns
    exactly the map (N, F, *spatial') that the head pools, for timm and MONAI networks alike
    (no per-architecture layer names to keep in sync)."""
    return module.backbone


class _ImageOnly(nn.Module):
    """The module's logits of (image, fixed metadata) as a one-tensor model, the form the CAM
    classes call."""

    def __init__(self, module: nn.Module, metadata: torch.Tensor | None) -> None:
        super().__init__()
        self.module = module
        self.metadata = metadata

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.module.logits(image, self.metadata)


def _class_indices(module: nn.Module, targets: Any, n_images: int) -> list[int] | None:
    """``targets`` (None, one class or one per image; index or class name) → indices."""
    if targets is None:
        return None
    names = list(module.class_names)
    if isinstance(targets, torch.Tensor | np.ndarray):
        targets = targets.tolist()
    single = isinstance(targets, int | np.integer | str)
    items = [targets] * n_images if single else list(targets)
    if len(items) != n_images:
        raise ConfigError(f"xai targets: {len(items)} classes given for {n_images} images.")
    indices = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                raise ConfigError(
                    f"xai target {item!r} is not a class of this model.{did_you_mean(item, names)}"
                    f" Classes: {', '.join(names)}."
                )
            item = names.index(item)
        if not 0 <= int(item) < len(names):
            raise ConfigError(
                f"xai target {item} is out of range: this model has {len(names)} classes "
                f"({', '.join(names)})."
            )
        indices.append(int(item))
    return indices


class _PredictedBinary:
    """A binary model's predicted class (medclf.models.outputs.decide) as a CAM target: its
    one logit for class 1, else the negated logit (class 0)."""

    def __init__(self, threshold: float | list[float], temperature: float = 1.0) -> None:
        self.threshold = threshold
        self.temperature = temperature

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        logit = output.reshape(1, 1)
        probs = class_probabilities(logit, "sigmoid", binary=True, temperature=self.temperature)
        positive = bool(decide(probs, "binary", self.threshold)[0, 1])
        return output if positive else -output


def predicted_targets(module: nn.Module, probs: np.ndarray, threshold) -> list | None:
    """Each image's predicted class (the decision rule's) as its heatmap target; None (the
    largest logit) for multi-label models, which may predict several or no labels."""
    if module.task == "multilabel":
        return None
    return np.asarray(decide(np.asarray(probs), module.task, threshold)).argmax(1).tolist()


def _targets(module: nn.Module, indices: list[int] | None, n_images: int) -> list | None:
    """One CAM target per image: the given class, else the predicted one (None: the largest
    logit). A binary model has one sigmoid output for class 1, so class 1 follows the logit
    and class 0 its negation."""
    if module.task == "binary":
        if indices is None:
            spec = InputSpec.of(module)
            return [_PredictedBinary(spec.threshold, spec.temperature)] * n_images
        return [BinaryClassifierOutputTarget(i) for i in indices]
    return None if indices is None else [ClassifierOutputTarget(i) for i in indices]


def heatmaps(
    module: nn.Module,
    images: torch.Tensor | np.ndarray,
    method: str = "gradcam",
    metadata: torch.Tensor | np.ndarray | None = None,
    targets: int | str | Sequence[int | str] | None = None,
) -> np.ndarray:
    """One heatmap in [0, 1] per image of ``images`` (N, C, *spatial) in [0, 1], shaped like
    the input's spatial dims: (N, H, W) or (N, D, H, W). The map is for the predicted class
    unless ``targets`` gives one class (index or name) for all images or one per image.

    Works under ``torch.inference_mode``; the module's mode, gradients and ``requires_grad``
    flags are as before afterwards."""
    cam_class = get_method(method)
    spatial_dims = InputSpec.of(module).spatial_dims
    images = torch.as_tensor(images)
    if images.ndim != spatial_dims + 2:
        raise ValueError(
            f"heatmaps: images must be (N, C, {'D, ' if spatial_dims == 3 else ''}H, W) for "
            f"this {spatial_dims}D model, got shape {tuple(images.shape)}"
        )
    indices = _class_indices(module, targets, len(images))
    device = next(module.parameters()).device
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    with torch.inference_mode(False), torch.enable_grad():
        # gradients flow from the input instead of the weights: no weight gradients are
        # computed or left behind, and the hooks fire even on a frozen model
        x = images.detach().clone().float().to(device).requires_grad_(True)
        meta = None if metadata is None else torch.as_tensor(metadata).clone().to(device)
        for param, _ in flags:
            param.requires_grad_(False)
        cam = cam_class(_ImageOnly(module, meta), [target_layer(module)])
        try:
            maps = cam(x, _targets(module, indices, len(x)))
        finally:
            cam.activations_and_grads.release()
            for param, flag in flags:
                param.requires_grad_(flag)
            module.train(was_training)
    return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)


def _rgb(image: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An image (H, W), (C, H, W) or (H, W, C) in [0, 1] as float32 (H, W, 3) RGB; other
    channel counts than 1 and 3 are shown as their mean (grey)."""
    array = np.asarray(torch.as_tensor(image).detach().cpu().float())
    if array.ndim == 3 and array.shape[:2] == shape:
        array = np.moveaxis(array, -1, 0)  # channels last → first
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != shape:
        raise ValueError(
            f"overlay: image of shape {array.shape} does not match the heatmap's {shape}"
        )
    if array.shape[0] != 3:
        array = np.repeat(array.mean(axis=0, keepdims=True), 3, axis=0)
    return np.clip(np.moveaxis(array, 0, -1), 0.0, 1.0).astype(np.float32)


def overlay_png(
    image: torch.Tensor | np.ndarray,
    heatmap: np.ndarray,
    path: str | Path,
    image_weight: float = 0.5,
) -> Path:
    """Write ``heatmap`` (H, W) in [0, 1] over ``image`` (greyscale or RGB, [0, 1]) as an RGB
    PNG of the image's size (jet colours: red is high); returns the path."""
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if heatmap.ndim != 2:
        raise ValueError(f"overlay_png: heatmap must be (H, W), got shape {heatmap.shape}")
    rgb = _rgb(image, heatmap.shape)
    picture = show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=image_weight)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


def save_volume(
    heatmap: np.ndarray, image: torch.Tensor | np.ndarray, directory: str | Path, stem: str
) -> tuple[Path, Path]:
    """Write a 3D heatmap (D, H, W) as ``<stem>.npy`` and its middle slice (along D) over the
    volume's (``image`` (C, D, H, W) or (D, H, W)) as ``<stem>_mid.png``; returns both paths."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 3:
        raise ValueError(f"save_volume: heatmap must be (D, H, W), got shape {heatmap.shape}")
    volume = np.asarray(torch.as_tensor(image).detach().cpu().float())
    if volume.ndim == 3:
        volume = volume[None]
    if volume.shape[1:] != heatmap.shape:
        raise ValueError(
            f"save_volume: volume of shape {volume.shape} does not match the heatmap's "
            f"{heatmap.shape}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    npy = directory / f"{stem}.npy"
    np.save(npy, heatmap)
    middle = heatmap.shape[0] // 2
    png = overlay_png(volume[:, middle], heatmap[middle], directory / f"{stem}_mid.png")
    return npy, png


def save_heatmap(
    heatmap: np.ndarray, image: torch.Tensor | np.ndarray, directory: str | Path, stem: str
) -> list[Path]:
    """Write one image's heatmap: ``<stem>.png`` for 2D, :func:`save_volume`'s files for 3D."""
    if np.ndim(heatmap) == 3:
        return list(save_volume(heatmap, image, directory, stem))
    return [overlay_png(image, heatmap, Path(directory) / f"{stem}.png")]
