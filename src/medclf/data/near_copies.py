"""Near-copies in two splits, for the leakage check before training
(``datamodule.duplicates``, ``datamodule.near_copy_bits``).

A copy of an image that was resized, re-encoded or cropped a little is not byte-identical,
yet scoring it in one split after training on it in another flatters the metrics as much.
Each image gets the audit's perceptual hashes (medclf.audit.hashing: the pHash of the full
view and of nine 95 % crops); two images in different splits whose hashes are at most
``near_copy_bits`` of 64 bits apart are reported. The default, 6 bits, is the audit's own
threshold (medclf.audit.duplicates.MAX_HAMMING): on generated images a copy resized 0.5–2×,
re-encoded as JPEG at quality 70 or given noise of σ = 5 lies within 4 bits, one cropped by
5 % within 6, while about 1 pair in 1.5 million distinct images does.

Before training there is no model to confirm a pair (``medclf-audit`` confirms them with the
backbone's features), so a hash candidate is confirmed by the images themselves: the
correlation of 32 × 32 greyscale thumbnails, the other image's full view against this one's
full view and its nine 95 % crops (either way round), must reach ``MIN_SIMILARITY`` = 0.85.
Measured on 200 generated structured images (tests/audit/audit_synthetic.py): a copy
resized 0.5×, JPEG-encoded, noisy or cropped by 5 % reaches at least 0.987, 0.999, 0.992 and
0.919; the 49 hash candidates among the 240 distinct blob-in-noise images of
benchmarks/small_data.py's blobs2d reach at most 0.62. Images smaller than 32 px on a side
(the hash's own resolution; the 8 px digits have 543 pairs within 6 bits among 1,797
distinct images) get the byte-identical check only. The hashes are kept in the image-check
cache (``datamodule.check_cache``) per file, size and modification time, so a later run
hashes only new or changed files; only the candidates are decoded again for the thumbnails.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclf.audit.duplicates import MAX_HAMMING
from medclf.audit.hashing import CROP_GRID, CROP_KEEP, SIDE, hamming_pairs, view_hashes
from medclf.data.checkcache import follower_rank, remember_values, stamped_values, stamps
from medclf.errors import DataError

log = logging.getLogger(__name__)

NEAR_COPY_BITS = MAX_HAMMING
MIN_SIDE = SIDE
"""Images with a side below this (px) are not hashed: the hash cannot tell them apart."""
MIN_SIMILARITY = 0.85
"""The thumbnails' correlation that confirms a hash candidate (see the module)."""
VERSION = 1
TABLE = "near_copy_views"  # in the check cache (medclf.data.checkcache.stamped_values)


def _grey(sample: Any, arrays: np.ndarray | None, dicom_window: Any) -> np.ndarray | None:
    """The sample's 2D uint8 greyscale view, or None where it does not decode (the image
    check names it)."""
    from medclf.audit.images import grey_uint8, load_image

    try:
        return grey_uint8(load_image(sample, arrays, dicom_window))
    except DataError:
        return None


def _hash_one(sample: Any, arrays: np.ndarray | None, dicom_window: Any) -> np.ndarray | None:
    """The view hashes (10,) of one sample, or None for an image too small to hash or one
    that does not decode."""
    grey = _grey(sample, arrays, dicom_window)
    if grey is None or min(grey.shape) < MIN_SIDE:
        return None
    return view_hashes(grey)


def thumbnails(grey: np.ndarray) -> np.ndarray:
    """(10, 1024) unit-length, zero-mean 32 × 32 thumbnails: the full view, then the nine
    95 % crops on a 3 × 3 grid (the hash's views, medclf.audit.hashing)."""
    from PIL import Image

    image = Image.fromarray(grey)
    h, w = grey.shape
    ch, cw = round(h * CROP_KEEP), round(w * CROP_KEEP)
    views = [image]
    for top in np.linspace(0, h - ch, CROP_GRID).round().astype(int):
        for left in np.linspace(0, w - cw, CROP_GRID).round().astype(int):
            views.append(image.crop((left, top, left + cw, top + ch)))
    size = (SIDE, SIDE)
    flat = np.stack(
        [np.asarray(v.resize(size, Image.Resampling.LANCZOS), np.float64).ravel() for v in views]
    )
    flat -= flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-9)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The best correlation of one image's full-view thumbnail with the other's views
    (:func:`thumbnails` of each), either way round."""
    return float(max((a @ b[0]).max(), (b @ a[0]).max()))


def sample_hashes(
    samples: list,
    arrays: np.ndarray | None = None,
    *,
    dicom_window: Any = None,
    cache: str | Path | None = None,
) -> list[np.ndarray | None]:
    """Each sample's view hashes (None: too small to hash), files through ``cache``."""
    files: dict = {}
    known: dict = {}
    if arrays is None and cache:
        files, _ = stamps(str(s) for s in samples)
        stored = stamped_values(cache, TABLE, files, VERSION)
        known = {
            p: None if blob is None else np.frombuffer(blob, dtype=np.uint64).copy()
            for p, blob in stored.items()
        }
    todo = [s for s in samples if arrays is not None or str(s) not in known]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), ThreadPoolExecutor(max(2, os.cpu_count() or 1)) as pool:
        fresh = dict(
            zip(
                map(str, todo),
                pool.map(lambda s: _hash_one(s, arrays, dicom_window), todo),
                strict=True,
            )
        )
    if arrays is None and cache:
        blobs = {
            p: None if h is None else np.asarray(h, np.uint64).tobytes() for p, h in fresh.items()
        }
        remember_values(cache, TABLE, files, blobs, VERSION)
    return [fresh[str(s)] if str(s) in fresh else known[str(s)] for s in samples]


def near_copies_across_splits(
    frame: pd.DataFrame,
    arrays: np.ndarray | None = None,
    *,
    max_bits: int = NEAR_COPY_BITS,
    dicom_window: Any = None,
    cache: str | Path | None = None,
    limit: int = 5,
    digests: list[str] | None = None,
) -> list[str]:
    """One message per pair of images in two splits whose hashes are at most ``max_bits``
    apart, the first ``limit`` and a count of the rest; pairs with equal ``digests`` (the
    samples' content hashes: byte-identical, which the SHA-1 check names) are left out.
    A DDP rank other than its node's first looks for none: the node's rank 0 reports them."""
    if follower_rank():
        return []
    hashes = sample_hashes(list(frame["path"]), arrays, dicom_window=dicom_window, cache=cache)
    rows = np.array([h is not None for h in hashes])
    if rows.sum() < 2:
        return []
    index = np.flatnonzero(rows)
    a, b, distance = hamming_pairs(np.stack([hashes[i] for i in index]), int(max_bits))
    a, b = index[a], index[b]
    splits = frame["split"].to_numpy(dtype=object)
    crossing = splits[a] != splits[b]
    a, b, distance = a[crossing], b[crossing], distance[crossing]
    if not len(a):
        return []
    if digests is not None:
        differ = np.array([digests[i] != digests[j] for i, j in zip(a, b, strict=True)])
        a, b, distance = a[differ], b[differ], distance[differ]
    samples = list(frame["path"])
    views = {
        i: None if (g := _grey(samples[i], arrays, dicom_window)) is None else thumbnails(g)
        for i in np.unique(np.r_[a, b])
    }
    alike = np.array(
        [
            views[i] is not None
            and views[j] is not None
            and similarity(views[i], views[j]) >= MIN_SIMILARITY
            for i, j in zip(a, b, strict=True)
        ],
        dtype=bool,
    )
    a, b, distance = a[alike], b[alike], distance[alike]
    order = np.argsort(distance, kind="stable")
    names = frame["sample"].astype(str).to_numpy()
    messages = [
        f"near-copies in two splits ({distance[k]} of 64 hash bits apart): "
        f"{names[a[k]]} ({splits[a[k]]}), {names[b[k]]} ({splits[b[k]]})"
        for k in order[:limit]
    ]
    if len(order) > limit:
        messages.append(f"… and {len(order) - limit} more pair(s) of near-copies")
    return messages
