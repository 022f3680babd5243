"""What the page shows of each format: medclf's reader (DICOM through its window, volumes by
slice), low-range data stretched for display only, channels as grey or RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from labelling_helpers import BROKEN, FORMATS, write_formats
from PIL import Image

from medclf.data.io import read_image
from medclf.errors import DataError
from medclf.labelling.images import ImageReader, display_pixels


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_formats(tmp_path_factory.mktemp("shown"))


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_dicom_is_shown_through_its_own_window(folder: Path) -> None:
    path = folder / FORMATS[3]
    windowed = read_image(path)[..., 0]  # the file's WindowCenter 40 / WindowWidth 400
    shown = _pixels(ImageReader().png(path))
    np.testing.assert_array_equal(shown, np.round(windowed * 255).astype(np.uint8))
    chosen = _pixels(ImageReader(dicom_window=[0, 100]).png(path))
    assert not np.array_equal(chosen, shown)


def test_a_volume_shows_the_slice_asked_for_and_the_middle_one_by_default(folder: Path) -> None:
    reader = ImageReader()
    path = folder / FORMATS[4]
    assert reader.info(path) == {"error": None, "shape": [12, 32, 32], "channels": 1, "depth": 12}
    volume = read_image(path)
    for z in (None, 2, 6, 99):
        expected = volume[min(6 if z is None else z, 11)]
        np.testing.assert_array_equal(_pixels(reader.png(path, z)), display_pixels(expected))
    assert _pixels(reader.png(path, 2)).max() == 0 and _pixels(reader.png(path)).max() == 255


def test_low_range_data_is_stretched_for_display_and_8_bit_data_is_not(folder: Path) -> None:
    tiff = read_image(folder / FORMATS[2])  # 300..3800 of 65535
    assert tiff.max() < 0.06
    shown = _pixels(ImageReader().png(folder / FORMATS[2]))
    assert shown.min() == 0 and shown.max() == 255
    png = folder / FORMATS[0]
    np.testing.assert_array_equal(
        _pixels(ImageReader().png(png)), np.asarray(Image.open(png).convert("L"))
    )


def test_channels_and_thumbnails() -> None:
    two = np.zeros((4, 4, 2), np.float32)
    two[..., 1] = 1.0
    assert display_pixels(two)[0, 0].tolist() == [0, 255, 0]
    five = np.linspace(0, 1, 80, dtype=np.float32).reshape(4, 4, 5)
    assert display_pixels(five).shape == (4, 4, 3)


def test_an_unreadable_file_gives_its_reason_once(folder: Path, monkeypatch) -> None:
    import medclf.labelling.images as images

    reader = ImageReader()
    calls = []
    monkeypatch.setattr(
        images, "read_image", lambda *a, **k: (calls.append(a), read_image(*a, **k))[1]
    )
    info = reader.info(folder / BROKEN)
    assert "cannot read this image" in info["error"] and BROKEN in info["error"]
    with pytest.raises(DataError, match="cannot read this image"):
        reader.png(folder / BROKEN)
    assert len(calls) == 1
    thumb = _pixels(ImageReader().png(folder / FORMATS[1], size=16))
    assert max(thumb.shape[:2]) == 16 and thumb.shape[2] == 3
