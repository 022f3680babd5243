"""Generated data for the audit tests and benchmarks/audit_core.py: distinct greyscale images
with structure (a gradient, soft blobs, shapes and lines), the copies a data set picks up
(resized, JPEG re-encoded, noisy, cropped), a set of files with such copies injected across
splits, and a cheap deterministic stand-in for a backbone's pooled features.

(A helper module, not a conftest.py: other tests import the root conftest by name.)"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("resized", "jpeg", "noise", "crop")


def single_blas_thread() -> Iterator[None]:
    """For an autouse fixture: one BLAS thread, as small matrix products run 10-100× slower
    when two spinning BLAS threads share two busy cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def structured_image(rng: np.random.Generator, low: int = 64, high: int = 128) -> np.ndarray:
    """One uint8 image of low-high px a side: a gradient, 3-6 blobs, 5-10 shapes and lines."""
    from PIL import Image, ImageDraw

    h, w = (int(v) for v in rng.integers(low, high + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx / w + np.sin(angle) * yy / h - 0.5
    image = 128 + rng.uniform(-60, 60) * ramp
    for _ in range(rng.integers(3, 7)):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.2) * max(h, w)
        image += rng.uniform(-80, 80) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(5, 11)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.08, 0.3) * max(h, w)
        box = [x0, y0, x0 + size * rng.uniform(0.4, 1.0), y0 + size * rng.uniform(0.4, 1.0)]
        fill, kind = int(rng.integers(0, 256)), int(rng.integers(3))
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.line(box, fill=fill, width=int(rng.integers(2, 6)))
    return np.asarray(pil)


def structured_images(n: int, seed: int = 0, low: int = 64, high: int = 128) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [structured_image(rng, low, high) for _ in range(n)]


def resized(image: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image

    h, w = image.shape
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def jpeg(image: np.ndarray, quality: int = 70) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 5.0) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def cropped(image: np.ndarray, rng: np.random.Generator, share: float = 0.05) -> np.ndarray:
    """A window of (1 - share) of each side, at a random position (0 to ``share`` off)."""
    h, w = image.shape
    ch, cw = round(h * (1 - share)), round(w * (1 - share))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return image[top : top + ch, left : left + cw]


def gradient_features(images: list[np.ndarray], size: int = 64, grid: int = 4) -> np.ndarray:
    """A HOG-like stand-in for pooled backbone features: the standardised image at ``size``
    px, its gradient energy in 8 orientations plus its intensity, smoothed and pooled on a
    ``grid`` × ``grid`` layout ((8 + 1) × grid² values). Smoothing over half a cell keeps it
    close for a copy shifted or cropped by a few per cent, as a backbone's features are."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    bins, cell = 8, size // grid
    rows = []
    for image in images:
        x = np.asarray(
            Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), np.float32
        )
        x = gaussian_filter((x - x.mean()) / (x.std() + 1e-3), 1.0)
        gy, gx = np.gradient(x)
        magnitude, angle = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
        which = np.minimum((angle / np.pi * bins).astype(int), bins - 1)
        channels = np.stack([magnitude * (which == k) for k in range(bins)] + [x])
        channels = gaussian_filter(channels, (0, cell / 2, cell / 2))
        rows.append(channels.reshape(bins + 1, grid, cell, grid, cell).mean((2, 4)).ravel())
    return np.stack(rows)


@dataclass
class DuplicateSet:
    frame: pd.DataFrame
    """sample, path, label, split: the distinct images (train) first, then the copies."""
    images: list[np.ndarray]
    copies: dict[tuple[int, int], str]
    """(row of the original, row of the copy) → the kind of copy."""


def write_duplicate_set(root: Path, distinct: int = 500, per_kind: int = 40) -> DuplicateSet:
    """``distinct`` generated PNGs in train and, alternately in val and test, ``per_kind``
    copies of as many of them for each kind: resized 0.5-2×, re-encoded as JPEG at quality 70
    (a .jpg file), given Gaussian noise of σ = 5, cropped by 5 %."""
    from PIL import Image

    images = structured_images(distinct, seed=0)
    rng = np.random.default_rng(1)
    originals = rng.choice(distinct, per_kind * len(KINDS), replace=False)
    rows, copies, all_images = [], {}, list(images)
    for i, image in enumerate(images):
        path = root / f"img_{i:03d}.png"
        Image.fromarray(image).save(path)
        rows.append((path.stem, str(path), i % 3, "train"))
    for n, original in enumerate(originals):
        kind, image = KINDS[n // per_kind], images[original]
        path = root / f"copy_{n:03d}_{kind}.png"
        if kind == "jpeg":
            path = path.with_suffix(".jpg")
            Image.fromarray(image).save(path, "JPEG", quality=70)
            copy = np.asarray(Image.open(path))
        else:
            if kind == "resized":
                copy = resized(image, rng.uniform(0.5, 2.0))
            else:
                copy = noisy(image, rng) if kind == "noise" else cropped(image, rng)
            Image.fromarray(copy).save(path)
        copies[(int(original), len(rows))] = kind
        rows.append((path.stem, str(path), int(original) % 3, ("val", "test")[n % 2]))
        all_images.append(copy)
    frame = pd.DataFrame(rows, columns=["sample", "path", "label", "split"])
    return DuplicateSet(frame, all_images, copies)
