"""albumentations pipelines: resize for every split, augmentation for the train split only.

Images arrive as float32 (H, W, C) in [0, 1]; normalisation to the backbone's mean and std
happens inside the model, so exported models and checkpoints carry it with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``32`` → (32, 32); ``[32, 48]`` → (32, 48)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def build_transform(
    image_size: int | Sequence[int], augment: A.BasicTransform | None = None
) -> A.Compose:
    """Resize, then (train only) the configured augmentation, then HWC array → CHW tensor."""
    height, width = image_hw(image_size)
    ops: list = [A.Resize(height, width)]
    if augment is not None:
        ops.append(augment)
    ops.append(ToTensorV2())
    return A.Compose(ops)
