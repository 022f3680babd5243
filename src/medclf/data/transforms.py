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
    image_size: int | Sequence[int],
    augment: A.BasicTransform | None = None,
    seed: int | None = None,
) -> A.Compose:
    """Resize, then (train only) the configured augmentation, then HWC array → CHW tensor.

    albumentations keeps its own random state, independent of the global seeds, so the
    pipeline is seeded here and re-seeded per data-loader worker (see ``seed_worker``).
    """
    height, width = image_hw(image_size)
    ops: list = [A.Resize(height, width)]
    if augment is not None:
        ops.append(augment)
    ops.append(ToTensorV2())
    return A.Compose(ops, seed=seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's per-worker seeding, then the dataset's
    albumentations pipeline from this worker's torch seed (distinct, yet repeatable)."""
    import torch
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)
