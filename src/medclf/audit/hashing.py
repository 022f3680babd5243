"""Perceptual hashes of greyscale images and the search for pairs of nearby hashes.

Each image gets imagehash's pHash (a 64-bit sign pattern of the 8 × 8 lowest DCT frequencies
of the image shrunk to 32 × 32) of its full view and, by default, of nine 95 % crops on a
3 × 3 grid. A copy cropped by 5 % moved the pHash of its full view by up to 26 of 64 bits on
generated images, as far as some distinct images lie, but it lands within 6 bits of one of
its original's crop views. The distance of two images is therefore the smallest one
between either image's views and the other's full view.

``hamming_pairs`` finds every pair within a distance, exactly: up to 7 bits through a
multi-index on the hashes' bytes, otherwise by comparing all of them (XOR and population
count); in chunks of bounded memory, on a few threads (numpy releases the GIL).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

HASH_SIZE = 8  # 8 × 8 DCT coefficients → 64 bits, imagehash's default
SIDE = HASH_SIZE * 4  # imagehash shrinks to 32 × 32 before the DCT
CROP_KEEP = 0.95
"""Each side of a crop view, as a fraction of the image's side."""
CROP_GRID = 3
"""Crop views per axis: offsets 0, ½ and all of the 5 % margin."""
MAX_SIDE = 256
"""Larger images are first shrunk to this side (box filter) so every view costs the same."""
CHUNK_ELEMENTS = 1 << 22


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count where numpy has it, else a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return table[as_bytes].sum(axis=-1, dtype=np.uint8)


def _dct_matrix() -> np.ndarray:
    """The first 8 rows of scipy.fftpack's unnormalised DCT-II over 32 samples."""
    n = np.arange(SIDE)
    return 2.0 * np.cos(np.pi * np.arange(HASH_SIZE)[:, None] * (2 * n + 1) / (2 * SIDE))


_DCT = _dct_matrix()


def phash_bits(small: np.ndarray) -> np.ndarray:
    """imagehash.phash of a stack of 32 × 32 greyscale images (M, 32, 32) as (M,) uint64: bit
    63 is the hash's first bit, so ``int(str(imagehash.phash(img)), 16)`` is the same number.
    The 8 × 8 DCT is two small matrix products (rounded to 1e-6, so that the equal
    coefficients of a flat image compare equal); the comparison with the median as imagehash."""
    pixels = np.asarray(small, dtype=np.float64)
    coefficients = np.round(_DCT @ pixels @ _DCT.T, 6).reshape(len(pixels), -1)
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


@lru_cache(maxsize=512)
def _crop_weights(size: int) -> np.ndarray:
    """(CROP_GRID * 32, size) Lanczos-3 weights that shrink each crop window of one axis to 32
    samples, as Pillow's antialiased resize of a box does (its support and centres)."""
    keep = max(1, round(size * CROP_KEEP))
    rows = []
    for start in np.linspace(0, size - keep, CROP_GRID):
        scale = keep / SIDE
        stretch = max(scale, 1.0)
        centres = start + (np.arange(SIDE) + 0.5) * scale
        source = np.arange(size) + 0.5
        offsets = source[None, :] - centres[:, None]
        weights = _lanczos(offsets / stretch) * (np.abs(offsets) < 3.0 * stretch + 0.5)
        rows.append(weights / weights.sum(axis=1, keepdims=True))
    return np.concatenate(rows).astype(np.float32)


def view_hashes(grey: np.ndarray, crop_views: bool = True) -> np.ndarray:
    """pHashes (K,) uint64 of a 2D uint8 image: its full view first (imagehash.phash exactly,
    for images up to MAX_SIDE px), then (``crop_views``) the nine 95 % crops on a 3 × 3 grid
    (K = 10), shrunk with the same Lanczos filter as matrix products; else K = 1."""
    from PIL import Image

    image = Image.fromarray(np.asarray(grey, dtype=np.uint8))
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    full = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.LANCZOS))[None]
    if not crop_views:
        return phash_bits(full)
    pixels = np.asarray(image, dtype=np.float32)
    shrunk = _crop_weights(image.height) @ pixels @ _crop_weights(image.width).T
    crops = shrunk.reshape(CROP_GRID, SIDE, CROP_GRID, SIDE).transpose(0, 2, 1, 3)
    crops = np.clip(np.rint(crops.reshape(-1, SIDE, SIDE)), 0, 255)
    return phash_bits(np.concatenate([full, crops]))


def _scan_chunk(
    views: np.ndarray, full: np.ndarray, start: int, stop: int, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of every image i in [start, stop) and every j whose full view lies
    within ``max_distance`` bits of one of i's views (i = j included)."""
    k = views.shape[1]
    distance = _popcount(views[start:stop].reshape(-1, 1) ^ full[None, :])
    rows, cols = np.nonzero(distance <= max_distance)
    return rows // k + start, cols, distance[rows, cols]


def _byte(values: np.ndarray, byte: int) -> np.ndarray:
    """Byte number ``byte`` (0 lowest) of each uint64, as int64 bucket keys."""
    return ((values >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64)


def _bucket_chunk(flat, members, keys, table, max_distance):
    """(view index, j, distance) of the views ``members`` (indices into ``flat``, whose byte
    is ``keys``, in key order) against every full view j in the same bucket: ``table`` holds
    the full views sorted by that byte (and their rows), and each bucket's start and size."""
    order, ordered, starts, sizes = table
    counts = sizes[keys]
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    position = np.arange(total, dtype=np.int64) + np.repeat(starts[keys] - (ends - counts), counts)
    distance = _popcount(np.repeat(flat[members], counts) ^ ordered[position])
    hits = np.flatnonzero(distance <= max_distance)
    source = members[np.searchsorted(ends, hits, side="right")]
    return source, order[position[hits]], distance[hits]


def _index_search(views, full, max_distance, chunk_elements, pool):
    """Multi-index search (Norouzi et al. 2012): two hashes within 7 bits agree exactly in one
    of their 8 bytes at least (pigeonhole), so only pairs that share a byte are compared.
    Views are taken in bucket order, so each chunk reads the sorted full views in sequence."""
    k = views.shape[1]
    flat = views.reshape(-1)
    tasks = []
    for byte in range(8):
        keys = _byte(full, byte)
        sizes = np.bincount(keys, minlength=256)
        order = np.argsort(keys, kind="stable")
        table = (order, full[order], np.cumsum(sizes) - sizes, sizes)
        mine = _byte(flat, byte)
        members = np.argsort(mine, kind="stable")
        work = np.cumsum(sizes[mine[members]])
        bounds = np.searchsorted(work, np.arange(chunk_elements, work[-1], chunk_elements))
        for chunk in np.split(members, bounds):
            if len(chunk):
                tasks.append((chunk, mine[chunk], table))
    parts = list(pool.map(lambda t: _bucket_chunk(flat, t[0], t[1], t[2], max_distance), tasks))
    return [(source // k, target, d) for source, target, d in parts]


def _index_work(views: np.ndarray, full: np.ndarray) -> int:
    """Comparisons the multi-index search makes (pairs sharing a byte, per byte)."""
    total = 0
    for byte in range(8):
        a = np.bincount(_byte(views.reshape(-1), byte), minlength=256)
        total += int(a @ np.bincount(_byte(full, byte), minlength=256))
    return total


def hamming_pairs(
    hashes: np.ndarray,
    max_distance: int,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of images whose hashes are within ``max_distance`` bits: (a, b, distance) with
    a < b, each pair once at its smallest distance.

    ``hashes`` is (N,) or (N, K) uint64 (column 0 the full view, see the module). Exhaustive:
    up to 7 bits, a multi-index search compares only hashes that share a byte, unless that
    saves less than a factor of 4 (many alike images); otherwise, and above 7 bits, every
    view with every full view (N × N × K), vectorised in chunks of about ``chunk_elements``.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    views = hashes[:, None] if hashes.ndim == 1 else hashes
    n, k = views.shape
    empty = np.zeros(0, np.int64)
    if n < 2:
        return empty, empty, empty
    views = np.ascontiguousarray(views)
    full = np.ascontiguousarray(views[:, 0])
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        if max_distance < 8 and _index_work(views, full) * 4 < n * n * k:
            # its chunks hold ~6 index arrays per comparison: a quarter of the scan's size
            parts = _index_search(views, full, max_distance, chunk_elements // 4, pool)
        else:
            rows = max(1, chunk_elements // (n * k))
            parts = list(
                pool.map(
                    lambda s: _scan_chunk(views, full, s, min(n, s + rows), max_distance),
                    range(0, n, rows),
                )
            )
    a, b, d = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(3))
    keep = a != b
    a, b, d = a[keep], b[keep], d[keep]
    low, high = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((d, high, low))  # per pair, its smallest distance first
    low, high, d = low[order], high[order], d[order]
    first = np.ones(len(low), bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    return low[first], high[first], d[first]
