"""Read one image file into a float32 array (H, W, C) scaled to [0, 1].

8-bit images are divided by 255 and 16-bit images by 65535 (scaled, never clipped), so a
microscopy TIFF keeps its dynamic range. Greyscale gives C=1, colour C=3 (alpha dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medclf.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """True for files whose suffix is a supported image format (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def to_unit_float(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to float32 in [0, 1] by its dtype's range.

    uint8 → /255, uint16 → /65535 (either byte order). Other integers holding non-negative
    values are read as 8-bit (max ≤ 255) or 16-bit (max ≤ 65535) data, else divided by their
    maximum; signed integers with negative values are shifted by their dtype's range (int16
    -32768..32767 → 0..1). Floats in [0, 1] are kept, above 1 divided by their maximum, and
    with negative values min-max scaled.
    """
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.float32)
    if kind == "u" and size in (1, 2):
        return array.astype(np.float32) / (255.0 if size == 1 else 65535.0)
    if kind in "iu":
        low = int(array.min(initial=0))
        if low < 0:
            info = np.iinfo(array.dtype)
            return ((array.astype(np.float64) - info.min) / (info.max - info.min)).astype(
                np.float32
            )
        high = int(array.max(initial=0))
        top = 255.0 if high <= 255 else 65535.0 if high <= 65535 else float(high)
        return (array.astype(np.float64) / top).astype(np.float32)
    array = array.astype(np.float32)
    if not array.size:
        return array
    low, top = float(np.nanmin(array)), float(np.nanmax(array))
    if low < 0.0:
        return (array - low) / (top - low) if top > low else np.zeros_like(array)
    return array / top if top > 1.0 else array


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(img)
        if img.mode in ("LA",):
            return np.asarray(img.convert("L"))
        return np.asarray(img.convert("RGB"))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    array = tifffile.imread(path, key=0)
    planar = array.ndim == 3 and array.shape[0] in (1, 2, 3, 4)
    if planar and array.shape[-1] not in (1, 2, 3, 4):  # (C, H, W) → (H, W, C)
        array = np.moveaxis(array, 0, -1)
    return array


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to float32 (H, W, C) in [0, 1]; DataError names a bad file."""
    path = Path(path)
    try:
        array = _read_tiff(path) if path.suffix.lower() in _TIFF else _read_pil(path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found.") from None
    except Exception as exc:
        raise DataError(
            f"{path}: cannot read this image ({type(exc).__name__}: {exc}). The file is "
            "corrupt, truncated or not an image; replace or remove it."
        ) from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: expected a 2D image, got an array of shape {array.shape}.")
    if array.shape[-1] == 4:
        array = array[:, :, :3]
    elif array.shape[-1] == 2:
        array = array[:, :, :1]
    return to_unit_float(array)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert (H, W, C) to ``channels``: grey → RGB by repetition, RGB → grey by luminance."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1:
        return np.repeat(image, channels, axis=-1)
    if channels == 1 and have == 3:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (image @ weights)[:, :, None].astype(np.float32)
    raise DataError(f"cannot convert an image with {have} channels to {channels} channels")
