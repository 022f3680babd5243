"""``datamodule.on_device``: the decoded set gathered and augmented on the device (here the
CPU, the same code path), against the host path and torch's own ops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medclf.data.datamodule import DigitsDataModule
from medclf.data.device_augment import BatchAugment


def _images(n: int = 6, size: int = 9) -> torch.Tensor:
    return torch.rand(n, 2, size, size, generator=torch.Generator().manual_seed(0))


def test_flips_and_quarter_turns_are_exact() -> None:
    x = _images()
    generator = torch.Generator()
    assert torch.equal(BatchAugment(hflip_p=1.0)(x, generator), x.flip(-1))
    assert torch.equal(BatchAugment(vflip_p=1.0)(x, generator), x.flip(-2))
    turned = BatchAugment(rot90_p=1.0)(x, generator)
    for image, original in zip(turned, x, strict=True):
        assert any(torch.equal(image, original.rot90(k, (-2, -1))) for k in (1, 2, 3))
    assert torch.equal(BatchAugment()(x, generator), x)  # nothing switched on


def test_affine_rotation_by_a_quarter_turn_is_torch_rot90() -> None:
    """A 90° rotation through affine_grid/grid_sample lands every pixel centre on one: the
    result equals torch.rot90 (an independent oracle) up to float rounding."""
    x = _images(n=3, size=8)
    augment = BatchAugment(affine_p=1.0)
    drawn = iter([90.0, 1.0, 0.0, 0.0])  # angle (degrees), scale, shift x, shift y

    def fixed(low: float, high: float) -> torch.Tensor:
        return torch.full((3,), next(drawn))

    moved = augment._affine(x, torch.ones(3, dtype=torch.bool), fixed)
    rotations = [x.rot90(k, (-2, -1)) for k in (1, 3)]
    assert any(torch.allclose(moved, r, atol=1e-5) for r in rotations)
    drawn = iter([90.0, 1.0, 0.0, 0.0])
    kept = augment._affine(x, torch.zeros(3, dtype=torch.bool), fixed)
    assert torch.equal(kept, x)


def test_brightness_contrast_and_gamma_follow_albumentations_formulas() -> None:
    """out = clip((1 + c) x + b, 0, 1) (brightness_by_max) and out = x ** gamma, with the
    drawn c, b, gamma recovered from a constant image."""
    x = torch.full((64, 1, 2, 2), 0.5)
    out = BatchAugment(intensity_p=1.0, brightness=0.1, contrast=0.2)(x, torch.Generator())
    values = out[:, 0, 0, 0]
    assert ((values >= 0.5 * 0.8 - 0.1 - 1e-6) & (values <= 0.5 * 1.2 + 0.1 + 1e-6)).all()
    assert values.std() > 0.02  # drawn per sample
    gamma = BatchAugment(gamma_p=1.0, gamma=(0.8, 1.2))(x, torch.Generator())[:, 0, 0, 0]
    exponents = torch.log(gamma) / math.log(0.5)
    assert ((exponents > 0.8 - 1e-5) & (exponents < 1.2 + 1e-5)).all()


@pytest.fixture(scope="module")
def on_device() -> DigitsDataModule:
    augment = BatchAugment(hflip_p=0.5, affine_p=0.5, rotate=10, intensity_p=0.5, brightness=0.1)
    dm = DigitsDataModule(
        image_size=12, batch_size=16, cache="memory", on_device=True, device_augment=augment
    )
    dm.setup()
    return dm


def test_on_device_batches_carry_no_images_and_val_equals_the_host_path(on_device) -> None:
    batch = next(iter(on_device.val_dataloader()))
    assert set(batch) == {"index", "target"}  # the loader does no image work
    images = on_device.device_images.batch_images("val", batch["index"])
    host = torch.stack([on_device.datasets["val"][int(i)]["image"] for i in batch["index"]])
    assert images.dtype == torch.float32 and images.shape == (16, 1, 12, 12)
    assert torch.equal(images, host)


def test_on_device_train_batches_are_augmented_and_repeat_with_the_seed(on_device) -> None:
    index = torch.arange(16)
    plain = on_device.device_images.batch_images("val", index)  # same rows, no augmentation
    first = on_device.device_images.batch_images("train", index, epoch=0)
    again = DigitsDataModule(
        image_size=12, cache="memory", on_device=True, device_augment=on_device.device_augment
    )
    again.setup()
    repeated = again.device_images.batch_images("train", index, epoch=0)
    assert torch.equal(first, repeated)
    host = torch.stack([on_device.datasets["train"][i]["image"] for i in range(16)])
    assert not torch.equal(first, host) and plain.shape == first.shape
    second = on_device.device_images.batch_images("train", index, epoch=0)
    assert not torch.equal(first, second)  # the next batch draws anew
    assert np.isfinite(first.numpy()).all() and first.min() >= 0 and first.max() <= 1
