"""The one way a decoded image becomes the model's input: fit it to the input size (resize
in the stored dtype, :func:`fit_input`: what the decoded cache keeps), convert its channels,
augment (train split only), and make a float32 tensor in [0, 1].

Images arrive as :func:`medclf.data.io.read_raw` gives them (uint8, uint16 or float32) or
already fitted from the decoded cache; both paths run the same functions, so they give the
same bytes. Normalisation to the backbone's mean and std happens inside the model, so
exported models and checkpoints carry it with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medclf.data.io import convert_channels, unit_float

if TYPE_CHECKING:  # imported where an augmentation is built: a run without one needs none
    import albumentations as A  # of it (0.2-0.5 s of the start-up)

DEFAULT_VOLUME_SIZE = (32, 32, 32)
"""[D, H, W] that volumes are resized to unless ``datamodule.volume_size`` says otherwise."""

RESIZE = "linear"
"""How images are resized (OpenCV's bilinear INTER_LINEAR, what albumentations' Resize does
by default; volumes: trilinear): part of the decoded cache's key."""


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``32`` → (32, 32); ``[32, 48]`` → (32, 48)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (H, W, C) image resized to (height, width) in its own dtype (uint8, uint16 or
    float32); unchanged when it has that size already."""
    if image.shape[:2] == (height, width):
        return image
    import cv2  # as albumentations' Resize calls it: tests/data/test_transforms.py compares

    def resize(part: np.ndarray) -> np.ndarray:
        out = cv2.resize(part, (width, height), interpolation=cv2.INTER_LINEAR)
        return out.reshape(height, width, *part.shape[2:])  # OpenCV drops a single channel

    channels = image.shape[2] if image.ndim == 3 else 1
    if channels <= 4:
        return resize(image)
    parts = []  # in fours, a last pair singly (OpenCV's many-channel path rounds otherwise)
    for start in range(0, channels, 4):
        if channels - start == 2:
            parts += [resize(image[:, :, start + i : start + i + 1]) for i in range(2)]
        else:
            parts.append(resize(image[:, :, start : start + 4]))
    return np.concatenate(parts, axis=2)


def fit_volume(volume: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A (D, H, W, C) volume as float32 in [0, 1], trilinearly resized to ``size``."""
    import torch
    import torch.nn.functional as F

    volume = np.ascontiguousarray(unit_float(volume))
    size = tuple(int(v) for v in size)
    if volume.shape[:3] == size:
        return volume
    tensor = torch.from_numpy(volume).permute(3, 0, 1, 2)[None]
    tensor = F.interpolate(tensor, size=size, mode="trilinear")
    return np.ascontiguousarray(tensor[0].permute(1, 2, 3, 0).numpy())


def fit_input(
    image: np.ndarray,
    image_size: int | Sequence[int],
    volume_size: Sequence[int] | None = None,
) -> np.ndarray:
    """The deterministic part of the input: an image resized to ``image_size`` (its dtype
    kept), a volume to ``volume_size`` (float32). What the decoded cache stores."""
    if image.ndim == 4:
        return fit_volume(image, volume_size or DEFAULT_VOLUME_SIZE)
    return fit_image(image, *image_hw(image_size))


def to_tensor(image: np.ndarray):
    """(H, W, C) or (D, H, W, C) → a float32 tensor (C, H, W) or (C, D, H, W) in [0, 1]."""
    import torch

    return torch.from_numpy(channels_first(unit_float(image)))


def channels_first(image: np.ndarray) -> np.ndarray:
    """(..., C) → (C, ...), contiguous and the caller's own: an entry of the decoded cache
    (read-only memory) is copied, since torch warns about tensors over read-only arrays
    and an in-place change of the batch would change the cache."""
    array = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    return array if array.flags.writeable else array.copy()


class ImageTransform:
    """Fit a 2D image to ``image_size``, convert it to ``channels`` (None: as it is), then
    (train only) ``augment`` (an albumentations transform, run on uint8 or float32), and
    return ``{"image": tensor}``: float32 in [0, 1], or with ``compact`` an 8-bit image as a
    uint8 tensor (a quarter of the bytes to collate, share and copy; the datamodule scales
    it on the device). Called like an albumentations pipeline."""

    def __init__(
        self,
        image_size: int | Sequence[int],
        augment: A.BasicTransform | None = None,
        seed: int | None = None,
        channels: int | None = None,
    ) -> None:
        import copy

        self.height, self.width = image_hw(image_size)
        self.channels = channels
        self.compact = False
        self.augment = None
        if augment is not None:  # its own copy: its random state is this transform's
            import albumentations as A

            is_pipeline = isinstance(augment, A.BaseCompose)
            self.augment = copy.deepcopy(augment) if is_pipeline else A.Compose([augment])
            self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        """One random stream for the whole pipeline (medclf.compat.albumentations_seed:
        albumentations' own seeding makes its transforms draw the same numbers)."""
        if self.augment is not None:
            from medclf.compat import albumentations_seed

            albumentations_seed(self.augment, seed)

    def __call__(self, image: np.ndarray) -> dict:
        image = fit_image(image, self.height, self.width)
        if self.channels is not None:
            image = convert_channels(image, self.channels)
        if self.augment is not None:
            if image.dtype not in (np.uint8, np.float32):  # what albumentations takes
                image = unit_float(image)
            if not image.flags.writeable:  # read from the decoded cache
                image = image.copy()
            image = self.augment(image=image)["image"]
        if self.compact and image.dtype == np.uint8:
            import torch

            return {"image": torch.from_numpy(channels_first(image))}
        return {"image": to_tensor(image)}


def build_transform(
    image_size: int | Sequence[int],
    augment: A.BasicTransform | None = None,
    seed: int | None = None,
    channels: int | None = None,
) -> ImageTransform:
    """Resize, then (train only) the configured augmentation, then HWC array → CHW tensor.

    albumentations keeps its own random state, independent of the global seeds, so the
    pipeline is seeded here and re-seeded per data-loader worker (see ``seed_worker``).
    """
    return ImageTransform(image_size, augment, seed, channels)


def input_transform(
    spatial_dims: int,
    image_size: int | Sequence[int] | None = None,
    volume_size: Sequence[int] | None = None,
    augment=None,
    seed: int | None = None,
    channels: int | None = None,
):
    """The one way an input becomes the model's tensor: fit to size (images to
    ``image_size`` with albumentations, volumes to ``volume_size`` trilinearly), convert to
    ``channels``, then ``augment`` (train only); called as ``transform(image=array)["image"]``.
    Training, eval.py and predict.py all build it here."""
    if spatial_dims == 3:
        return VolumeTransform(volume_size or DEFAULT_VOLUME_SIZE, augment, seed, channels)
    return build_transform(image_size, augment, seed, channels)


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
    """Resize a (D, H, W, C) volume to ``volume_size`` (trilinear), convert it to
    ``channels``, augment (train only), and return a (C, D, H, W) tensor; called like an
    albumentations pipeline."""

    def __init__(
        self,
        volume_size: Sequence[int],
        augment: VolumeAugment | None = None,
        seed: int | None = None,
        channels: int | None = None,
    ) -> None:
        self.volume_size = tuple(int(v) for v in volume_size)
        self.augment = augment
        self.channels = channels
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> dict:
        volume = fit_volume(image, self.volume_size)
        if self.channels is not None:
            volume = convert_channels(volume, self.channels)
        if self.augment is not None:
            volume = self.augment(volume, self.rng)
        return {"image": to_tensor(volume)}
