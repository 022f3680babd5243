"""albumentations pipelines: resize for every split, augmentation for the train split only.

Images arrive as float32 (H, W, C) in [0, 1]; normalisation to the backbone's mean and std
happens inside the model, so exported models and checkpoints carry it with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2

DEFAULT_VOLUME_SIZE = (32, 32, 32)
"""[D, H, W] that volumes are resized to unless ``datamodule.volume_size`` says otherwise."""


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


def input_transform(
    spatial_dims: int,
    image_size: int | Sequence[int] | None = None,
    volume_size: Sequence[int] | None = None,
    augment=None,
    seed: int | None = None,
):
    """The one way an input becomes the model's tensor: resize (images to ``image_size``
    with albumentations, volumes to ``volume_size`` trilinearly), then ``augment`` (train
    only); called as ``transform(image=array)["image"]``. Training, eval.py and predict.py
    all build it here."""
    if spatial_dims == 3:
        return VolumeTransform(volume_size or DEFAULT_VOLUME_SIZE, augment, seed=seed)
    return build_transform(image_size, augment, seed=seed)


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


class VolumeAugment:
    """3D train-time augmentation of a (D, H, W, C) volume: flips along each spatial axis,
    a quarter turn in a random plane whose two sides are equal, a random shift (pad by
    ``crop_margin`` of each side, crop back), and random intensity scale and shift."""

    def __init__(
        self,
        flip_p: float = 0.5,
        rot90_p: float = 0.5,
        crop_margin: float = 0.1,
        intensity_p: float = 0.5,
        intensity_scale: float = 0.1,
        intensity_shift: float = 0.1,
    ) -> None:
        self.flip_p = flip_p
        self.rot90_p = rot90_p
        self.crop_margin = crop_margin
        self.intensity_p = intensity_p
        self.intensity_scale = intensity_scale
        self.intensity_shift = intensity_shift

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for axis in range(3):
            if rng.random() < self.flip_p:
                volume = np.flip(volume, axis=axis)
        planes = [(a, b) for a, b in ((0, 1), (0, 2), (1, 2)) if volume.shape[a] == volume.shape[b]]
        if planes and rng.random() < self.rot90_p:
            plane = planes[rng.integers(len(planes))]
            volume = np.rot90(volume, k=int(rng.integers(1, 4)), axes=plane)
        if self.crop_margin > 0:
            pads = [int(round(self.crop_margin * n)) for n in volume.shape[:3]]
            padded = np.pad(volume, [(p, p) for p in pads] + [(0, 0)])
            starts = [int(rng.integers(0, 2 * p + 1)) for p in pads]
            window = zip(starts, volume.shape[:3], strict=True)
            volume = padded[tuple(slice(s, s + n) for s, n in window)]
        if rng.random() < self.intensity_p:
            scale = 1 + rng.uniform(-self.intensity_scale, self.intensity_scale)
            shift = rng.uniform(-self.intensity_shift, self.intensity_shift)
            volume = volume * scale + shift
        return np.ascontiguousarray(volume, dtype=np.float32)


class VolumeTransform:
    """Resize a (D, H, W, C) volume to ``volume_size`` (trilinear), augment (train only),
    and return a (C, D, H, W) tensor; called like an albumentations pipeline."""

    def __init__(
        self,
        volume_size: Sequence[int],
        augment: VolumeAugment | None = None,
        seed: int | None = None,
    ) -> None:
        self.volume_size = tuple(int(v) for v in volume_size)
        self.augment = augment
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> dict:
        import torch
        import torch.nn.functional as F

        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        tensor = tensor.permute(3, 0, 1, 2)[None]
        if tuple(tensor.shape[2:]) != self.volume_size:
            tensor = F.interpolate(tensor, size=self.volume_size, mode="trilinear")
        volume = tensor[0].permute(1, 2, 3, 0).numpy()
        if self.augment is not None:
            volume = self.augment(volume, self.rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(volume.transpose(3, 0, 1, 2)))}
