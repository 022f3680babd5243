"""Image decoding: formats, bit depths, channel layouts, corrupt files, channel conversion."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import write_dicom
from medclf.data.io import (
    IMAGE_SUFFIXES,
    convert_channels,
    image_files,
    image_suffix,
    is_image_file,
    read_image,
    spatial_dims,
    to_unit_float,
)
from medclf.errors import DataError

RNG = np.random.default_rng(123)
GREY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)  # H != W catches transposes
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _check(array: np.ndarray, shape: tuple[int, ...]) -> None:
    assert array.dtype == np.float32
    assert array.shape == shape
    assert array.min() >= 0.0 and array.max() <= 1.0


def test_png_grey_8bit(tmp_path: Path):
    """8-bit greyscale: one channel, divided by 255."""
    path = tmp_path / "grey.png"
    Image.fromarray(GREY).save(path)
    image = read_image(path)
    _check(image, (5, 7, 1))
    np.testing.assert_allclose(image[:, :, 0], GREY / 255.0, atol=1e-7)


def test_png_rgb_8bit(tmp_path: Path):
    """8-bit RGB: three channels in R, G, B order, divided by 255."""
    path = tmp_path / "rgb.png"
    Image.fromarray(RGB).save(path)
    image = read_image(str(path))
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, RGB / 255.0, atol=1e-7)


def test_png_rgba_drops_alpha(tmp_path: Path):
    """RGBA → the three colour channels, unchanged by the alpha values."""
    alpha = np.zeros((5, 7, 1), dtype=np.uint8)
    alpha[0, 0] = 255
    path = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([RGB, alpha], axis=-1)).save(path)
    image = read_image(path)
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, RGB / 255.0, atol=1e-7)


def test_png_grey_alpha_gives_one_channel(tmp_path: Path):
    """Greyscale + alpha (LA) → one grey channel."""
    path = tmp_path / "la.png"
    alpha = np.full_like(GREY, 10)
    Image.fromarray(np.stack([GREY, alpha], axis=-1)).save(path)
    with Image.open(path) as check:
        assert check.mode == "LA"
    image = read_image(path)
    _check(image, (5, 7, 1))
    np.testing.assert_allclose(image[:, :, 0], GREY / 255.0, atol=1e-7)


def test_png_palette(tmp_path: Path):
    """Palette PNG → RGB looked up in the palette, not the raw indices."""
    palette = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 250], [7, 7, 7]], dtype=np.uint8)
    indices = RNG.integers(0, 4, (5, 7), dtype=np.uint8)
    img = Image.frombytes("P", (7, 5), indices.tobytes())
    img.putpalette(palette.flatten().tolist())
    path = tmp_path / "palette.png"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"
    image = read_image(path)
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, palette[indices] / 255.0, atol=1e-7)


def _uint16_ramp() -> np.ndarray:
    array = np.zeros((4, 6), dtype=np.uint16)
    array[0, 0] = 65535
    array[0, 1] = 32768
    array[1, 0] = 100  # a dark 16-bit pixel must not be read as 100/255
    array[2, 3] = 1000
    return array


def _check_16bit(image: np.ndarray, source: np.ndarray) -> None:
    _check(image, (4, 6, 1))
    assert image[0, 0, 0] == pytest.approx(1.0)
    assert image[0, 1, 0] == pytest.approx(0.5, abs=1e-4)
    assert image[1, 0, 0] == pytest.approx(100 / 65535, rel=1e-5)
    np.testing.assert_allclose(image[:, :, 0], source / 65535.0, rtol=1e-6)


def test_png_grey_16bit_scaled_not_clipped(tmp_path: Path):
    """16-bit PNG: divided by 65535, so 65535 → 1.0 and 32768 → 0.5 (no clipping at 255)."""
    source = _uint16_ramp()
    path = tmp_path / "grey16.png"
    Image.fromarray(source).save(path)
    _check_16bit(read_image(path), source)


def test_tiff_grey_16bit_scaled_not_clipped(tmp_path: Path):
    """16-bit TIFF: same scaling as the 16-bit PNG."""
    source = _uint16_ramp()
    path = tmp_path / "grey16.tif"
    tifffile.imwrite(path, source)
    _check_16bit(read_image(path), source)


def test_tiff_16bit_dark_image_not_rescaled(tmp_path: Path):
    """A dark 16-bit image (max ≤ 255) is still divided by 65535, not by 255."""
    source = np.full((3, 3), 200, dtype=np.uint16)
    path = tmp_path / "dark.tiff"
    tifffile.imwrite(path, source)
    np.testing.assert_allclose(read_image(path), 200 / 65535.0, rtol=1e-6)


def test_jpeg_rgb_and_grey(tmp_path: Path):
    """JPEG (lossy): a flat colour comes back within a few grey levels; grey JPEG → C=1."""
    colour = np.zeros((16, 24, 3), dtype=np.uint8)
    colour[:] = (200, 40, 90)
    Image.fromarray(colour).save(tmp_path / "c.jpg", quality=95)
    image = read_image(tmp_path / "c.jpg")
    _check(image, (16, 24, 3))
    np.testing.assert_allclose(image, colour / 255.0, atol=4 / 255)

    grey = np.full((16, 24), 77, dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.jpeg", quality=95)
    image = read_image(tmp_path / "g.jpeg")
    _check(image, (16, 24, 1))
    np.testing.assert_allclose(image[:, :, 0], grey / 255.0, atol=3 / 255)


def test_bmp(tmp_path: Path):
    """BMP decodes losslessly."""
    path = tmp_path / "x.bmp"
    Image.fromarray(RGB).save(path)
    image = read_image(path)
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, RGB / 255.0, atol=1e-7)


def test_tiff_rgb_interleaved(tmp_path: Path):
    """An interleaved (H, W, 3) TIFF keeps its layout."""
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, RGB, photometric="rgb")
    image = read_image(path)
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, RGB / 255.0, atol=1e-7)


def test_tiff_planar_channels_moved_last(tmp_path: Path):
    """A planar (C, H, W) TIFF is returned as (H, W, C) with channel c intact."""
    planar = np.stack([np.full((5, 7), v, dtype=np.uint16) for v in (1000, 30000, 65535)])
    planar[0, 0, 0] = 0
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, planar, photometric="rgb", planarconfig="separate")
    image = read_image(path)
    _check(image, (5, 7, 3))
    for c in range(3):
        np.testing.assert_allclose(image[:, :, c], planar[c] / 65535.0, rtol=1e-6)


def test_tiff_rgba_keeps_fourth_channel(tmp_path: Path):
    """Changed: a 4-channel TIFF keeps all four, even with an alpha tag (microscopy data)."""
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 255, dtype=np.uint8)], axis=-1)
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    image = read_image(path)
    _check(image, (5, 7, 4))
    np.testing.assert_allclose(image, rgba / 255.0, atol=1e-7)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noise).save(whole, quality=90)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    bad_tiff = tmp_path / "bad.tif"
    bad_tiff.write_bytes(b"II*\x00garbage")
    return {"empty": empty, "text": text, "truncated": truncated, "tiff": bad_tiff}


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "tiff"])
def test_corrupt_file_raises_data_error_naming_path(tmp_path: Path, kind: str):
    """Zero-byte, text-as-PNG, truncated JPEG, garbage TIFF: DataError with the path."""
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_data_error_naming_path(tmp_path: Path):
    """A path that does not exist: DataError naming it."""
    path = tmp_path / "nope.png"
    with pytest.raises(DataError, match="not found") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_is_image_file(tmp_path: Path):
    """Supported suffixes, any case; folders and other suffixes are not images."""
    for name in ("a.PNG", "b.jpeg", "c.TIF", "d.bmp"):
        (tmp_path / name).write_bytes(b"x")
        assert is_image_file(tmp_path / name)
    (tmp_path / "e.txt").write_text("x")
    (tmp_path / "f.png").mkdir()
    assert not is_image_file(tmp_path / "e.txt")
    assert not is_image_file(tmp_path / "f.png")
    assert not is_image_file(tmp_path / "missing.png")


def test_to_unit_float_by_dtype_range():
    """uint8 /255, uint16 /65535, bool → 0/1, floats in [0, 1] untouched."""
    assert to_unit_float(np.array([255], np.uint8))[0] == pytest.approx(1.0)
    assert to_unit_float(np.array([65535, 255], np.uint16)).tolist() == pytest.approx(
        [1.0, 255 / 65535]
    )
    assert to_unit_float(np.array([True, False])).tolist() == [1.0, 0.0]
    floats = np.array([0.25, 0.5], np.float64)
    out = to_unit_float(floats)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, floats)


def test_convert_channels_grey_to_rgb_repeats():
    """Grey → RGB copies the one channel into all three."""
    grey = RNG.random((4, 5, 1), dtype=np.float32)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], grey[:, :, 0])


def test_convert_channels_rgb_to_grey_luminance():
    """RGB → grey is 0.299 R + 0.587 G + 0.114 B (ITU-R 601)."""
    rgb = RNG.random((4, 5, 3), dtype=np.float32)
    grey = convert_channels(rgb, 1)
    assert grey.shape == (4, 5, 1)
    assert grey.dtype == np.float32
    expected = 0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2]
    np.testing.assert_allclose(grey[:, :, 0], expected, rtol=1e-5)
    pure = np.zeros((1, 3, 3), np.float32)
    pure[0, 0, 0] = pure[0, 1, 1] = pure[0, 2, 2] = 1.0
    np.testing.assert_allclose(convert_channels(pure, 1)[0, :, 0], [0.299, 0.587, 0.114], 1e-6)


def test_convert_channels_same_count_unchanged_and_bad_count_rejected():
    """Same channel count is a no-op; an impossible conversion raises DataError."""
    rgb = RNG.random((2, 2, 3), dtype=np.float32)
    assert convert_channels(rgb, 3) is rgb
    with pytest.raises(DataError, match="5 channels"):
        convert_channels(np.zeros((2, 2, 5), np.float32), 3)


def test_tiff_two_channel_planar_keeps_both_channels(tmp_path: Path):
    """Changed: a planar (2, H, W) TIFF is (H, W, 2) with both channels, not a 2-row image."""
    planar = np.stack([np.full((5, 7), 1000, np.uint16), np.full((5, 7), 60000, np.uint16)])
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, planar, photometric="minisblack", planarconfig="separate")
    image = read_image(path)
    _check(image, (5, 7, 2))
    np.testing.assert_allclose(image, np.moveaxis(planar, 0, -1) / 65535.0, rtol=1e-6)


def test_to_unit_float_stays_in_unit_range():
    """Signed, wide and negative-float data still map into [0, 1] (never out of range)."""
    signed = to_unit_float(np.array([-32768, 0, 32767], np.int16))
    np.testing.assert_allclose(signed, [0.0, 32768 / 65535, 1.0], rtol=1e-6)
    wide = to_unit_float(np.array([0, 50_000, 200_000], np.uint32))
    np.testing.assert_allclose(wide, [0.0, 0.25, 1.0])
    assert to_unit_float(np.array([0, 200], np.int32)).tolist() == pytest.approx([0, 200 / 255])
    assert to_unit_float(np.array([0, 1000], np.int32)).tolist() == pytest.approx([0, 1000 / 65535])
    floats = to_unit_float(np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_allclose(floats, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(to_unit_float(np.array([2.0, 4.0])), [0.5, 1.0])


def test_to_unit_float_big_endian_uint16():
    """A big-endian uint16 array is still 16-bit data: divided by 65535."""
    array = np.array([200, 65535], dtype=">u2")
    np.testing.assert_allclose(to_unit_float(array), [200 / 65535, 1.0], rtol=1e-6)


# DICOM: stored 412..612 with slope 2, intercept -1024 are -200..200 HU; stored 0 is -1024 HU.
CT_STORED = np.array([[412, 462, 512], [562, 612, 0]], dtype=np.uint16)
CT_WINDOW_0_400 = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.0]], dtype=np.float32)


def _ct(path: Path, **tags) -> Path:
    return write_dicom(path, CT_STORED, RescaleSlope=2, RescaleIntercept=-1024, **tags)


def test_dicom_rescale_then_fixed_window(tmp_path: Path):
    """Slope and intercept are applied first, then [center, width] maps onto [0, 1]."""
    image = read_image(_ct(tmp_path / "ct.dcm"), dicom_window=[0, 400])
    _check(image, (2, 3, 1))
    np.testing.assert_allclose(image[:, :, 0], CT_WINDOW_0_400, atol=1e-7)


@pytest.mark.parametrize("window", [None, "auto"])
def test_dicom_uses_its_own_window(tmp_path: Path, window):
    """None/'auto' use the file's WindowCenter/WindowWidth (the first of several)."""
    path = _ct(tmp_path / "ct.dcm", WindowCenter=[0, 40], WindowWidth=[400, 80])
    image = read_image(path, dicom_window=window)
    np.testing.assert_allclose(image[:, :, 0], CT_WINDOW_0_400, atol=1e-7)


def test_dicom_explicit_window_overrides_file_window(tmp_path: Path):
    """An explicit [100, 200] (HU 0..200) wins over the file's own window."""
    path = _ct(tmp_path / "ct.dcm", WindowCenter=0, WindowWidth=400)
    image = read_image(path, dicom_window=(100, 200))
    np.testing.assert_allclose(image[:, :, 0], [[0, 0, 0], [0.5, 1, 0]], atol=1e-7)


def test_dicom_without_window_is_min_max_scaled(tmp_path: Path):
    """No window in the file: the image's own min-max (-1024..200 HU) maps onto [0, 1]."""
    image = read_image(_ct(tmp_path / "ct.dcm"))
    hu = CT_STORED.astype(np.float64) * 2 - 1024
    np.testing.assert_allclose(image[:, :, 0], (hu + 1024) / 1224, atol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path: Path):
    """MONOCHROME1 (low = white) is inverted after windowing."""
    path = write_dicom(
        tmp_path / "m1.dcm", CT_STORED, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1024
    )
    image = read_image(path, dicom_window=[0, 400])
    np.testing.assert_allclose(image[:, :, 0], 1.0 - CT_WINDOW_0_400, atol=1e-7)


def test_dicom_without_pixel_data_names_file(tmp_path: Path):
    """A DICOM holding no image (e.g. a report): DataError naming it."""
    path = write_dicom(tmp_path / "report.dcm", None)
    with pytest.raises(DataError, match="has no pixel data") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_dicom_multi_frame_is_volume(tmp_path: Path):
    """Multi-frame DICOM → (D, H, W, 1) with the frames in order."""
    frames = np.stack([np.full((5, 7), 100 * (i + 1), np.uint16) for i in range(4)])
    image = read_image(write_dicom(tmp_path / "mf.dcm", frames))
    _check(image, (4, 5, 7, 1))
    np.testing.assert_allclose(image[:, 0, 0, 0], [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    assert spatial_dims(image) == 3


def test_dicom_enhanced_multi_frame_functional_groups(tmp_path: Path):
    """Enhanced multi-frame: per-frame slope/intercept and the shared window are used."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def group(**tags) -> Dataset:
        item, macro = Dataset(), Dataset()
        for key, value in tags.items():
            setattr(macro, key, value)
        name = (
            "FrameVOILUTSequence" if "WindowCenter" in tags else "PixelValueTransformationSequence"
        )
        setattr(item, name, Sequence([macro]))
        return item

    frames = np.stack([CT_STORED, (CT_STORED + 1024) // 2])  # frame 1 stored at slope 2 → 0
    per_frame = [
        group(RescaleSlope=2, RescaleIntercept=-1024, RescaleType="HU"),
        group(RescaleSlope=4, RescaleIntercept=-3072, RescaleType="HU"),
    ]
    path = write_dicom(
        tmp_path / "enhanced.dcm",
        frames,
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
        SharedFunctionalGroupsSequence=Sequence([group(WindowCenter=0, WindowWidth=400)]),
    )
    image = read_image(path)
    _check(image, (2, 2, 3, 1))
    np.testing.assert_allclose(image[0, ..., 0], CT_WINDOW_0_400, atol=1e-7)
    np.testing.assert_allclose(image[1, ..., 0], CT_WINDOW_0_400, atol=1e-7)


def test_dicom_rgb_three_channels(tmp_path: Path):
    """An RGB DICOM gives three channels scaled by bit depth (never windowed)."""
    path = write_dicom(tmp_path / "rgb.dicom", RGB, "RGB")
    image = read_image(path, dicom_window=[0, 10])
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, RGB / 255.0, atol=1e-7)


@pytest.mark.parametrize("window", [[40], [40, 0], "wide", [40, -5]])
def test_dicom_bad_window_rejected(tmp_path: Path, window):
    """A window that is not [center, width > 0]: DataError naming the file and the format."""
    path = _ct(tmp_path / "ct.dcm")
    with pytest.raises(DataError, match="center, width") as info:
        read_image(path, dicom_window=window)
    assert str(path) in str(info.value)


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_nifti_2d_slice(tmp_path: Path):
    """A 2D NIfTI (X=7, Y=5) → (H=5, W=7, 1): voxel [x, y] lands at [y, x]."""
    data = np.zeros((7, 5), np.float32)
    data[6, 1] = 3.0
    image = read_image(_nifti(tmp_path / "slice.nii", data))
    _check(image, (5, 7, 1))
    assert image[1, 6, 0] == 1.0 and image.sum() == 1.0


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_nifti_3d_axis_order_and_min_max(tmp_path: Path, name: str):
    """(X, Y, Z) → (Z, Y, X, 1), min-max scaled over the volume: [x, y, z] lands at [z, y, x]."""
    data = np.zeros((4, 5, 3), np.float32)
    data[3, 1, 2] = 10.0
    data[0, 0, 0] = -5.0
    image = read_image(_nifti(tmp_path / name, data))
    _check(image, (3, 5, 4, 1))
    assert image[2, 1, 3, 0] == 1.0
    assert image[0, 0, 0, 0] == 0.0
    assert image[1, 2, 2, 0] == pytest.approx(5 / 15)
    assert spatial_dims(image) == 3


def test_nifti_4d_channels_last(tmp_path: Path):
    """(X, Y, Z, C) → (Z, Y, X, C): the marker stays in its channel."""
    data = np.zeros((4, 5, 3, 2), np.int16)
    data[3, 1, 2, 1] = 7
    image = read_image(_nifti(tmp_path / "multi.nii.gz", data))
    _check(image, (3, 5, 4, 2))
    assert image[2, 1, 3, 1] == 1.0 and image.sum() == 1.0


def test_nifti_constant_volume_is_zeros(tmp_path: Path):
    """A constant volume has no range: all zeros, not NaN."""
    image = read_image(_nifti(tmp_path / "flat.nii", np.full((4, 5, 3), 42.0, np.float32)))
    _check(image, (3, 5, 4, 1))
    assert not image.any()


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 7), (5, 7, 1)),
        ((5, 7, 3), (5, 7, 3)),
        ((5, 7, 4), (5, 7, 4)),
        ((3, 5, 7), (3, 5, 7, 1)),
        ((3, 5, 7, 2), (3, 5, 7, 2)),
    ],
)
def test_npy_shapes(tmp_path: Path, shape, expected):
    """2D grey/channels-last and 3D volumes; uint8 divided by 255."""
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    image = read_image(tmp_path / "x.npy")
    _check(image, expected)
    np.testing.assert_allclose(image, array.reshape(expected) / 255.0, atol=1e-7)


def test_npy_float_scaling(tmp_path: Path):
    """Floats in [0, 1] are kept; other floats are min-max scaled."""
    unit = np.array([[0.1, 0.5], [0.2, 0.9]], np.float64)
    np.save(tmp_path / "unit.npy", unit)
    np.testing.assert_allclose(read_image(tmp_path / "unit.npy")[:, :, 0], unit, rtol=1e-6)
    hu = np.array([[-1000.0, 0.0], [1000.0, 500.0]], np.float32)
    np.save(tmp_path / "hu.npy", hu)
    np.testing.assert_allclose(read_image(tmp_path / "hu.npy")[:, :, 0], [[0, 0.5], [1, 0.75]])


def test_npy_pickled_object_array_refused(tmp_path: Path):
    """An object array needs unpickling, which is never allowed: DataError naming the file."""
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickle") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_npy_channels_first_volume_rejected(tmp_path: Path):
    """A 4-D array whose last axis is not ≤ 4 channels: DataError asking for channels last."""
    np.save(tmp_path / "cf.npy", np.zeros((2, 3, 5, 7), np.float32))
    with pytest.raises(DataError, match="channels-last"):
        read_image(tmp_path / "cf.npy")


@pytest.mark.parametrize("channels", [4, 5])
def test_tiff_multichannel_keeps_every_channel(tmp_path: Path, channels: int):
    """A 'CYX' microscopy TIFF keeps all channels, each with its own 16-bit values."""
    values = [1000 * (c + 1) for c in range(channels)]
    planar = np.stack([np.full((5, 7), v, np.uint16) for v in values])
    path = tmp_path / "multi.tif"
    tifffile.imwrite(path, planar, photometric="minisblack", metadata={"axes": "CYX"})
    image = read_image(path)
    _check(image, (5, 7, channels))
    np.testing.assert_allclose(image[0, 0], np.array(values) / 65535.0, rtol=1e-6)


def test_tiff_z_stack_is_volume(tmp_path: Path):
    """An ImageJ 'ZYX' stack → (D, H, W, 1), slices in order, 16-bit divided by 65535."""
    stack = np.stack([np.full((5, 7), v, np.uint16) for v in (0, 1000, 65535)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    image = read_image(path)
    _check(image, (3, 5, 7, 1))
    np.testing.assert_allclose(image[:, 2, 3, 0], [0, 1000 / 65535, 1.0], rtol=1e-6)


def test_tiff_plain_multipage_is_volume(tmp_path: Path):
    """Pages with no channel axis ('QYX' from tifffile) → a volume, not channels."""
    stack = RNG.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    image = read_image(path)
    _check(image, (6, 5, 7, 1))
    np.testing.assert_allclose(image[..., 0], stack / 255.0, atol=1e-7)


def test_tiff_zcyx_is_volume_with_channels(tmp_path: Path):
    """An ImageJ 'ZCYX' hyperstack → (D, H, W, C) with z and c where they belong."""
    stack = np.zeros((3, 2, 5, 7), np.uint16)
    stack[2, 1, 4, 6] = 65535
    path = tmp_path / "zc.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZCYX"})
    image = read_image(path)
    _check(image, (3, 5, 7, 2))
    assert image[2, 4, 6, 1] == 1.0 and image.sum() == 1.0


def test_tiff_two_stack_axes_rejected(tmp_path: Path):
    """Time and Z both longer than 1: DataError naming the file and the axes."""
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 5, 7), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(DataError, match="TZYX") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_convert_channels_on_volumes():
    """Volumes (D, H, W, C): grey → RGB repeats, RGB → grey by luminance, same count no-op."""
    grey = RNG.random((2, 4, 5, 1), dtype=np.float32)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(rgb[..., 2], grey[..., 0])
    colour = RNG.random((2, 4, 5, 3), dtype=np.float32)
    back = convert_channels(colour, 1)
    assert back.shape == (2, 4, 5, 1) and back.dtype == np.float32
    expected = colour @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(back[..., 0], expected, rtol=1e-5)
    assert convert_channels(colour, 3) is colour
    with pytest.raises(DataError, match=r"5 channels.*datamodule\.channels"):
        convert_channels(np.zeros((2, 4, 5, 5), np.float32), 3)


def test_spatial_dims():
    """2 for (H, W, C), 3 for (D, H, W, C), DataError otherwise."""
    assert spatial_dims(np.zeros((5, 7, 1), np.float32)) == 2
    assert spatial_dims(np.zeros((3, 5, 7, 2), np.float32)) == 3
    with pytest.raises(DataError, match="shape"):
        spatial_dims(np.zeros((5, 7), np.float32))


def test_is_image_file_medical_suffixes(tmp_path: Path):
    """.nii.gz counts as one suffix; DICOM, NIfTI and NumPy files are images, .txt/.gz not."""
    for name in ("x.nii.gz", "X.NII.GZ", "x.nii", "x.dcm", "x.dicom", "x.npy"):
        (tmp_path / name).write_bytes(b"x")
        assert is_image_file(tmp_path / name), name
    for name in ("x.txt", "x.gz", "x.tar.gz"):
        (tmp_path / name).write_bytes(b"x")
        assert not is_image_file(tmp_path / name), name
    assert ".nii.gz" in IMAGE_SUFFIXES and ".dcm" in IMAGE_SUFFIXES


def test_image_files_are_those_os_walk_finds_in_path_order(tmp_path: Path) -> None:
    """Images under a folder, recursively, in Path order: other files, folders named like
    images, broken links and FIFOs left out; a link to an image kept; a linked folder not
    entered (os.walk's choices, which image_files makes without a stat per file)."""
    root = tmp_path / "data"
    for name in ["b/2.png", "b/10.PNG", "a/x.nii.gz", "a/deep/er/y.dcm", "c.jpg", "a/n.txt"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"0")
    (root / "dir.png").mkdir()
    (root / "b" / "gone.png").symlink_to(tmp_path / "nothing.png")
    (root / "b" / "link.png").symlink_to(root / "c.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.png").write_bytes(b"0")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "a" / "pipe.png")

    expected = []
    for parent, _, files in os.walk(root):
        for name in files:
            path = os.path.join(parent, name)
            if image_suffix(name) in IMAGE_SUFFIXES and os.path.isfile(path):
                expected.append(path)
    expected.sort(key=lambda path: path.split(os.sep))
    found = image_files(root)
    assert found == expected
    assert [os.path.relpath(p, root) for p in found] == [
        "a/deep/er/y.dcm",
        "a/x.nii.gz",
        "b/10.PNG",
        "b/2.png",
        "b/link.png",
        "c.jpg",
    ]
