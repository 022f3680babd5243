"""The data overview: counts per split and class, sizes, channels and bit depths read from
the files, histograms per class, and the four figures as PNG files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from audit_synthetic import single_blas_thread
from PIL import Image

from medclf.audit.images import HIST_BINS, bit_depth, scan_images
from medclf.audit.overview import data_overview, overview_tables

CLASSES = ["dark", "bright", "mixed"]

one_blas_thread = pytest.fixture(autouse=True, scope="module")(single_blas_thread)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 images: 8-bit grey PNGs (dark class 0, bright class 1, sizes vary), 16-bit PNGs
    and RGB JPEGs (class 2), across train/val/test; and its frame."""
    root = tmp_path_factory.mktemp("overview")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        label, split = i % 3, ("train", "train", "val", "test")[i % 4]
        path = root / f"s{i:02d}.png"
        if label == 0:
            Image.fromarray(rng.integers(0, 40, (20 + i, 30), dtype=np.uint8)).save(path)
        elif label == 1:
            Image.fromarray(rng.integers(215, 256, (24, 24), dtype=np.uint8)).save(path)
        elif i % 2:
            path = path.with_suffix(".jpg")
            Image.fromarray(rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)).save(path)
        else:
            Image.fromarray(rng.integers(0, 65535, (16, 18), dtype=np.uint16)).save(path)
        rows.append((f"s{i:02d}", str(path), label, split))
    return pd.DataFrame(rows, columns=["sample", "path", "label", "split"])


def test_the_tables(folder) -> None:
    scan = scan_images(folder["path"])
    overview = overview_tables(folder, scan, CLASSES)
    expected = pd.crosstab(folder["split"], folder["label"])
    counts = overview.counts.set_index("split")
    for split in ("train", "val", "test"):
        assert counts.loc[split, CLASSES].tolist() == expected.loc[split].tolist()
    assert counts.loc["all", "samples"] == 12 and counts.loc["all", CLASSES].sum() == 12
    images = overview.images.set_index("sample")
    assert images.loc["s00", ["height", "width", "channels", "depth"]].tolist() == [20, 30, 1, 1]
    assert images.loc["s03", "height"] == 23
    assert images.loc["s02", "bit_depth"] == "16-bit" and images.loc["s05", "channels"] == 3
    assert images.loc["s01", "bit_depth"] == "8-bit" and images.loc["s01", "label"] == "bright"
    assert images.loc["s01", "mean"] > 0.8 > 0.2 > images.loc["s00", "mean"]
    formats = overview.formats.set_index(["channels", "bit_depth"])["images"]
    assert formats.loc[(1, "8-bit")].sum() == 8 and formats.loc[(3, "8-bit")].sum() == 2
    np.testing.assert_allclose(scan.histograms.sum(axis=1), 1.0, rtol=1e-6)
    from medclf.data.io import read_image

    for row in (0, 2, 5):
        pixels = read_image(folder["path"][row])
        counts, _ = np.histogram(pixels, bins=HIST_BINS, range=(0.0, 1.0))
        np.testing.assert_allclose(scan.histograms[row], counts / pixels.size, rtol=1e-6)
    assert scan.histograms[0, : HIST_BINS // 4].sum() == pytest.approx(1.0)  # dark: low bins


def test_the_figures_are_pngs(folder, tmp_path) -> None:
    scan = scan_images(folder["path"])
    overview = data_overview(folder, scan, CLASSES, tmp_path / "audit", per_class=3)
    assert set(overview.figures) == {
        "class_counts",
        "image_sizes",
        "intensity_histograms",
        "class_samples",
    }
    for path in overview.figures.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert not list((tmp_path / "audit").glob(".*partial"))


def test_in_memory_arrays_and_multilabel(tmp_path) -> None:
    rng = np.random.default_rng(1)
    arrays = rng.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8)
    labels = [(1, 0), (1, 1), (0, 1)] * 3
    frame = pd.DataFrame(
        {"sample": [f"n{i}" for i in range(9)], "path": np.arange(9), "label": labels}
    )
    frame["split"] = ["train"] * 6 + ["test"] * 3
    scan = scan_images(frame["path"], arrays)
    assert (scan.stats["bit_depth"] == "8-bit").all() and (scan.stats["height"] == 8).all()
    overview = data_overview(frame, scan, ["a", "b"], tmp_path, multilabel=True, arrays=arrays)
    counts = overview.counts.set_index("split")
    assert counts.loc["train", ["a", "b"]].tolist() == [4, 4]
    assert counts.loc["all", ["samples", "a", "b"]].tolist() == [9, 6, 6]
    assert overview.images["label"].tolist()[:3] == ["a", "a;b", "b"]


def test_bit_depth_from_headers(tmp_path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((4, 4), np.float32))
    np.save(tmp_path / "w.npy", np.zeros((4, 4), np.uint16))
    Image.fromarray(np.zeros((4, 4), bool)).save(tmp_path / "b.png")
    assert bit_depth(tmp_path / "v.npy") == "float32"
    assert bit_depth(tmp_path / "w.npy") == "16-bit"
    assert bit_depth(tmp_path / "b.png") == "1-bit"
    (tmp_path / "broken.png").write_bytes(b"nope")
    assert bit_depth(tmp_path / "broken.png") == "unknown"
