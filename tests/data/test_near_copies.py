"""Near-copies in two splits before training (medclf.data.near_copies through the datamodule's
leakage check): each kind of copy the audit finds (resized 0.5-2×, JPEG quality 70, noise
σ = 5, a 5 % crop) is named when it lands in another split, an error with
``duplicates=error``; distinct images and copies within one split are not; images under
32 px are not hashed; the hashes are kept in the check cache."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import check_datamodule
from medclf.data import near_copies
from medclf.data.datamodule import CsvDataModule
from medclf.errors import ConfigError, DataError

sys.path.insert(0, str(Path(__file__).parents[1] / "audit"))
from audit_synthetic import cropped, jpeg, noisy, resized, structured_images  # noqa: E402

DISTINCT = 40


@pytest.fixture(scope="module")
def copies_csv(tmp_path_factory) -> Path:
    """40 distinct 64-96 px images in train/val/test, and one copy of each kind: four in
    another split than their original, one resized copy in the original's split."""
    root = tmp_path_factory.mktemp("near_copies")
    rng = np.random.default_rng(3)
    images = structured_images(DISTINCT, seed=11, low=64, high=96)
    rows = []
    for i, image in enumerate(images):
        split = ("train", "val", "test")[i % 3] if i >= 6 else "train"
        Image.fromarray(image).save(root / f"img{i:02d}.png")
        rows.append((f"img{i:02d}.png", "ab"[i % 2], split))
    made = {
        "resized": resized(images[0], 0.5),
        "jpeg": jpeg(images[1]),
        "noise": noisy(images[2], rng),
        "crop": cropped(images[3], rng),
        "same_split": resized(images[4], 2.0),
    }
    for i, (kind, image) in enumerate(made.items()):
        Image.fromarray(image).save(root / f"copy_{kind}.png")
        rows.append((f"copy_{kind}.png", "ab"[i % 2], "train" if kind == "same_split" else "test"))
    pd.DataFrame(rows, columns=["image", "label", "split"]).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _setup(csv: Path, **kwargs) -> CsvDataModule:
    base = {"image_size": 32, "batch_size": 4, "split_column": "split", "near_copy_bits": 6}
    module = CsvDataModule(csv_path=csv, **(base | kwargs))
    module.setup()
    return module


def test_each_kind_of_copy_in_another_split_is_named(copies_csv, caplog, tmp_path) -> None:
    cache = tmp_path / "check.sqlite"
    with caplog.at_level(logging.WARNING, logger="medclf.data.groups"):
        module = _setup(copies_csv, check_cache=str(cache))
    found = " ".join(module.duplicates_found)
    for kind, original in (("resized", 0), ("jpeg", 1), ("noise", 2), ("crop", 3)):
        assert f"copy_{kind}.png (test)" in found, kind
        assert f"img{original:02d}.png (train)" in found, kind
    assert "copy_same_split" not in found  # within one split: not leakage
    assert len(module.duplicates_found) == 4  # and no pair of distinct images
    assert "near-copies in two splits" in caplog.text

    with pytest.raises(DataError, match=r"(?s)duplicates=error.*copy_jpeg\.png.*near_copy_bits"):
        _setup(copies_csv, duplicates="error")
    assert _setup(copies_csv, near_copy_bits=None).duplicates_found == []
    assert _setup(copies_csv, duplicates="ignore").duplicates_found == []


def test_hashes_are_kept_per_file_in_the_check_cache(copies_csv, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "check.sqlite"
    samples = sorted(str(p) for p in copies_csv.parent.glob("*.png"))
    first = near_copies.sample_hashes(samples, cache=cache)
    calls = []
    original = near_copies._hash_one
    monkeypatch.setattr(near_copies, "_hash_one", lambda *a: calls.append(a[0]) or original(*a))
    again = near_copies.sample_hashes(samples, cache=cache)
    assert calls == []
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    changed = Path(samples[0])
    Image.fromarray(np.asarray(Image.open(changed))[::-1].copy()).save(changed)
    near_copies.sample_hashes(samples, cache=cache)
    assert calls == [samples[0]]  # only the changed file is hashed again


def test_small_images_are_not_hashed_and_the_key_is_checked() -> None:
    digits = (np.random.default_rng(0).integers(0, 17, (20, 8, 8, 1))).astype(np.float32)
    assert near_copies.sample_hashes(list(range(20)), digits) == [None] * 20
    frame = pd.DataFrame(
        {"path": range(20), "sample": [f"d{i}" for i in range(20)], "split": ["train", "test"] * 10}
    )
    assert near_copies.near_copies_across_splits(frame, np.repeat(digits[:1], 20, 0)) == []
    for bad in (64, -1, "six", True):
        with pytest.raises(ConfigError, match=r"datamodule.near_copy_bits"):
            check_datamodule(near_copy_bits=bad)


def test_look_alike_distinct_images_are_not_confirmed(tmp_path) -> None:
    """benchmarks/small_data.py's blobs2d (240 distinct 32 px blob-in-noise images): many
    pairs across splits are hash candidates, none is confirmed by the thumbnails."""
    from medclf.audit.hashing import hamming_pairs

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from small_data import blobs2d

    data = np.load(blobs2d(tmp_path / "blobs2d.npz"))
    arrays = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])[..., None]
    splits = np.concatenate([[s] * len(data[f"{s}_images"]) for s in ("train", "val", "test")])
    frame = pd.DataFrame(
        {"path": range(len(arrays)), "sample": [f"b{i}" for i in range(len(arrays))]}
    ).assign(split=splits)
    hashes = np.stack(near_copies.sample_hashes(list(range(len(arrays))), arrays))
    a, b, _ = hamming_pairs(hashes, near_copies.NEAR_COPY_BITS)
    assert (splits[a] != splits[b]).sum() >= 10  # the hash alone would name them
    assert near_copies.near_copies_across_splits(frame, arrays) == []
