"""Image decoding: formats, bit depths, channel layouts, corrupt files, channel conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medclf.data.io import convert_channels, is_image_file, read_image, to_unit_float
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


def test_tiff_rgba_drops_alpha(tmp_path: Path):
    """A 4-channel TIFF drops the fourth channel."""
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 255, dtype=np.uint8)], axis=-1)
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    image = read_image(path)
    _check(image, (5, 7, 3))
    np.testing.assert_allclose(image, RGB / 255.0, atol=1e-7)


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


def test_tiff_two_channel_planar_keeps_first_channel(tmp_path: Path):
    """A planar (2, H, W) TIFF is (H, W, 2) → its first channel, not a 2-row image."""
    planar = np.stack([np.full((5, 7), 1000, np.uint16), np.full((5, 7), 60000, np.uint16)])
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, planar, photometric="minisblack", planarconfig="separate")
    image = read_image(path)
    _check(image, (5, 7, 1))
    np.testing.assert_allclose(image, 1000 / 65535.0, rtol=1e-6)


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
