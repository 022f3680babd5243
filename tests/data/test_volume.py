"""3D transforms: trilinear resize to volume_size, (C, D, H, W) output, seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclf.data.transforms import VolumeAugment, VolumeTransform


def _volume(shape=(7, 9, 11, 2), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _geometric_only(**kwargs) -> VolumeAugment:
    """Flips and quarter turns only: no shift, no intensity change."""
    return VolumeAugment(crop_margin=0, intensity_p=0, **kwargs)


def test_output_is_channels_first_at_volume_size():
    """(D, H, W, C) of another size → float32 tensor (C, D', H', W') = (C, *volume_size)."""
    out = VolumeTransform([8, 6, 10])(image=_volume())["image"]
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert tuple(out.shape) == (2, 8, 6, 10)


def test_without_augment_equals_plain_trilinear_resize():
    """augment=None is exactly torch's trilinear interpolation of the channels-first volume."""
    volume = _volume()
    out = VolumeTransform([8, 6, 10])(image=volume)["image"]
    expected = F.interpolate(
        torch.from_numpy(volume).permute(3, 0, 1, 2)[None], size=(8, 6, 10), mode="trilinear"
    )[0]
    torch.testing.assert_close(out, expected)


def test_same_size_without_augment_is_the_input_transposed():
    """No resize needed: the output holds the input voxels, channels first."""
    volume = _volume((4, 5, 6, 1))
    out = VolumeTransform([4, 5, 6])(image=volume)["image"].numpy()
    np.testing.assert_array_equal(out, volume.transpose(3, 0, 1, 2))


@pytest.mark.parametrize("shape", [(6, 6, 6, 1), (6, 6, 4, 2), (5, 7, 9, 1)])
def test_flips_and_rot90_keep_shape_and_voxel_values(shape):
    """crop_margin=0, intensity_p=0: the same multiset of voxels (sorted values equal), same
    shape, and (almost surely) a changed arrangement over a few draws."""
    volume = _volume(shape)
    augment = _geometric_only(flip_p=0.5, rot90_p=1.0)
    rng = np.random.default_rng(3)
    changed = False
    for _ in range(8):
        out = augment(volume, rng)
        assert out.shape == volume.shape and out.dtype == np.float32
        np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(volume, axis=None))
        changed |= not np.array_equal(out, volume)
    assert changed


def test_flips_are_exact_mirror_images():
    """flip_p=1 flips all three spatial axes, never the channel axis."""
    volume = _volume((4, 5, 6, 2))
    out = _geometric_only(flip_p=1.0, rot90_p=0.0)(volume, np.random.default_rng(0))
    np.testing.assert_array_equal(out, volume[::-1, ::-1, ::-1, :])


def test_rot90_only_in_planes_with_equal_sides():
    """A (6, 6, 4) volume is only ever turned in the (D, H) plane: every output is a
    rotation of the input about the W axis; a volume without equal sides is never turned."""
    volume = _volume((6, 6, 4, 1))
    augment = _geometric_only(flip_p=0.0, rot90_p=1.0)
    rng = np.random.default_rng(1)
    rotations = [np.rot90(volume, k, axes=(0, 1)) for k in (1, 2, 3)]
    for _ in range(10):
        out = augment(volume, rng)
        assert out.shape == volume.shape
        assert any(np.array_equal(out, r) for r in rotations)
    odd = _volume((5, 7, 9, 1))
    for _ in range(5):
        np.testing.assert_array_equal(augment(odd, rng), odd)


def test_cubic_volume_is_turned_in_every_plane():
    """A cube may be turned in each of the three planes."""
    volume = _volume((4, 4, 4, 1))
    augment = _geometric_only(flip_p=0.0, rot90_p=1.0)
    rng = np.random.default_rng(2)
    planes = {(0, 1): False, (0, 2): False, (1, 2): False}
    for _ in range(60):
        out = augment(volume, rng)
        for plane in planes:
            if any(np.array_equal(out, np.rot90(volume, k, axes=plane)) for k in (1, 2, 3)):
                planes[plane] = True
    assert all(planes.values())


def test_shift_and_intensity_change_values_but_keep_shape():
    """crop_margin shifts (zero padding enters), intensity scales and shifts the values."""
    volume = _volume((8, 8, 8, 1)) + 0.5
    augment = VolumeAugment(flip_p=0, rot90_p=0, crop_margin=0.25, intensity_p=0)
    rng = np.random.default_rng(0)
    outs = [augment(volume, rng) for _ in range(6)]
    assert all(o.shape == volume.shape for o in outs)
    assert any((o == 0).any() for o in outs)  # a shift brought in padding
    scaled = VolumeAugment(0, 0, 0, intensity_p=1.0, intensity_scale=0.2, intensity_shift=0.1)
    out = scaled(volume, np.random.default_rng(0))
    # an affine map of the values: out = a * volume + b with a in [0.8, 1.2], b in [-0.1, 0.1]
    a, b = np.polyfit(volume.ravel(), out.ravel(), 1)
    assert 0.8 <= a <= 1.2 and -0.1 <= b <= 0.1 and (a, b) != pytest.approx((1, 0))
    np.testing.assert_allclose(out, a * volume + b, atol=1e-5)


def test_seeded_transforms_repeat_and_differ_by_seed():
    """Same seed → identical outputs call after call; another seed → different outputs."""
    volume = _volume((6, 6, 6, 1))

    def outputs(seed: int) -> list[np.ndarray]:
        transform = VolumeTransform([6, 6, 6], VolumeAugment(), seed=seed)
        return [transform(image=volume)["image"].numpy() for _ in range(4)]

    a, b, c = outputs(7), outputs(7), outputs(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_set_random_seed_restarts_the_sequence():
    """set_random_seed (used per data-loader worker) restarts the augmentation sequence."""
    volume = _volume((6, 6, 6, 1))
    transform = VolumeTransform([6, 6, 6], VolumeAugment(), seed=5)
    first = [transform(image=volume)["image"].numpy() for _ in range(3)]
    transform.set_random_seed(5)
    again = [transform(image=volume)["image"].numpy() for _ in range(3)]
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_augment_does_not_modify_the_input():
    """The source volume (e.g. a row of in-memory arrays) is left untouched."""
    volume = _volume((6, 6, 6, 1))
    before = volume.copy()
    transform = VolumeTransform([6, 6, 6], VolumeAugment(intensity_p=1.0), seed=0)
    for _ in range(4):
        transform(image=volume)
    np.testing.assert_array_equal(volume, before)
