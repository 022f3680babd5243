"""Shared fixtures: small generated image data sets and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("benign", "malignant", "normal")


def class_image(label: int, rng: np.random.Generator, size: int = 24, rgb: bool = False):
    """An 8-bit image whose bright quadrant encodes its class (learnable in one epoch)."""
    image = rng.integers(0, 60, (size, size), dtype=np.uint8)
    half = size // 2
    rows, cols = divmod(label, 2)
    image[rows * half : (rows + 1) * half, cols * half : (cols + 1) * half] += 150
    return np.stack([image] * 3, axis=-1) if rgb else image


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """tmp/images/<class>/<i>.png: 3 classes x 12 greyscale PNGs of 24 px."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(class_image(label, rng)).save(root / name / f"{name}_{i:02d}.png")
    return root


@pytest.fixture
def image_csv(tmp_path: Path) -> Path:
    """tmp/table/labels.csv (columns file, diagnosis) with RGB JPEGs in tmp/table/img/."""
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "table"
    (root / "img").mkdir(parents=True)
    rows = ["file,diagnosis"]
    for label, name in enumerate(CLASSES):
        for i in range(12):
            file = f"img/{name}_{i:02d}.jpg"
            Image.fromarray(class_image(label, rng, rgb=True)).save(root / file, quality=95)
            rows.append(f"{file},{name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"
