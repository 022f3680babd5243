"""The audit's one pass over the images: each image decoded once through medclf.data.io and
reduced to what the checks need (its size, channels, bit depth, intensity histogram and the
perceptual hashes of its greyscale view), so that 50,000 images are never held at once.

A sample is a file path, or an index into the in-memory ``arrays`` of a SampleTable (digits,
``.npz``). The greyscale view of a volume is its middle slice along the depth axis (the
slice most likely to show the organ; a projection would blur the structures the hash keys
on), of a colour image its luminance, of any other channel count the mean of its channels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclf.audit.hashing import view_hashes
from medclf.data.io import convert_channels, image_suffix, read_image, to_unit_float
from medclf.errors import DataError

HIST_BINS = 32
"""Bins of the intensity histograms over [0, 1]."""
STATS = ("height", "width", "depth", "channels", "bit_depth", "mean", "std")


@dataclass
class ImageScan:
    """What the pass learnt, row-aligned with the samples it was given."""

    stats: pd.DataFrame
    """Columns height, width, depth (1 for a 2D image), channels, bit_depth, mean, std."""
    histograms: np.ndarray
    """(N, HIST_BINS) share of each image's pixels (all channels) per intensity bin."""
    hashes: np.ndarray
    """(N, K) uint64 perceptual hashes, column 0 of the full view (medclf.audit.hashing)."""


def load_image(sample: Any, arrays: np.ndarray | None = None, dicom_window: Any = None):
    """A sample as float32 (H, W, C) or (D, H, W, C) in [0, 1]: the file, or ``arrays[i]``."""
    if arrays is not None:
        return to_unit_float(np.asarray(arrays[int(sample)]))
    return read_image(sample, dicom_window=dicom_window)


def grey_uint8(image: np.ndarray) -> np.ndarray:
    """The 2D uint8 greyscale view of an image (H, W, C) or volume (D, H, W, C) in [0, 1]
    (see the module for the middle slice and the channel rule)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 4:
        image = image[image.shape[0] // 2]
    if image.ndim != 3:
        raise DataError(f"expected an image (H, W, C) or a volume (D, H, W, C), got {image.shape}")
    colour = image.shape[-1] == 3
    grey = convert_channels(image, 1)[..., 0] if colour else image.mean(axis=-1)
    return np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)


_PIL_BITS = {"1": "1-bit", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit"}
_PIL_BITS |= {"I": "32-bit", "F": "float32"}


def _dtype_bits(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "1-bit"
    if dtype.kind in "iu":
        return f"{dtype.itemsize * 8}-bit" + (" signed" if dtype.kind == "i" else "")
    return str(dtype)


def bit_depth(path: str | Path) -> str:
    """The stored bit depth of an image file, read from its header: ``8-bit``, ``16-bit``,
    ``12-bit`` (DICOM BitsStored), ``float32``...; ``unknown`` where the header does not say."""
    suffix = image_suffix(path)
    try:
        if suffix in (".dcm", ".dicom"):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            bits = ds.get("BitsStored") or ds.get("BitsAllocated")
            return f"{int(bits)}-bit" if bits else "unknown"
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            return _dtype_bits(nib.load(path).get_data_dtype())
        if suffix == ".npy":
            return _dtype_bits(np.load(path, mmap_mode="r", allow_pickle=False).dtype)
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return _dtype_bits(tif.series[0].dtype)
        from PIL import Image

        with Image.open(path) as img:
            return _PIL_BITS.get(img.mode, "8-bit")
    except Exception:  # the decode reports an unreadable file, naming it
        return "unknown"


def _scan_one(sample: Any, arrays, dicom_window, crop_views: bool):
    """One image's stats, histogram and hashes, or the DataError message naming it."""
    try:
        image = load_image(sample, arrays, dicom_window)
    except DataError as exc:
        return str(exc)
    depth = image.shape[0] if image.ndim == 4 else 1
    height, width, channels = image.shape[-3:]
    bins = np.clip((image.reshape(-1) * HIST_BINS).astype(np.intp), 0, HIST_BINS - 1)
    counts = np.bincount(bins, minlength=HIST_BINS)  # as np.histogram over [0, 1], faster
    bits = _dtype_bits(arrays.dtype) if arrays is not None else bit_depth(sample)
    row = (height, width, depth, channels, bits, float(image.mean()), float(image.std()))
    return row, counts / max(1, image.size), view_hashes(grey_uint8(image), crop_views)


def scan_images(
    samples: Sequence[Any],
    arrays: np.ndarray | None = None,
    *,
    dicom_window: Any = None,
    crop_views: bool = True,
    workers: int | None = None,
) -> ImageScan:
    """Decode each sample once, on several threads, and keep its stats, histogram and hashes.

    ``samples``: file paths, or indices into ``arrays``. Unreadable files raise one DataError
    that names each (the first ten) with the reason and the fix.
    """
    samples = list(samples)
    if not samples:
        raise DataError("the audit got no images: the data set (or the split audited) is empty.")
    from threadpoolctl import threadpool_limits

    workers = workers or max(2, os.cpu_count() or 1)
    # one BLAS thread per worker: the hashes' small matrix products are slower threaded
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda s: _scan_one(s, arrays, dicom_window, crop_views), samples))
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        more = f"\n    … and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(
            f"{len(errors)} of {len(samples)} image(s) cannot be read, so the audit cannot "
            "look at them:\n    " + "\n    ".join(errors[:10]) + more
        )
    stats = pd.DataFrame([r[0] for r in results], columns=list(STATS))
    histograms = np.stack([r[1] for r in results]).astype(np.float32)
    hashes = np.stack([r[2] for r in results])
    return ImageScan(stats, histograms, hashes)
