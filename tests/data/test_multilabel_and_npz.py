"""Multi-label CSV labels, metadata columns, iterative splits, MedMNIST-style .npz sources,
and the data modules built on them (batches, balanced sampler, metadata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import class_image
from PIL import Image

from medclf.data.datamodule import CsvDataModule, NpzDataModule
from medclf.data.sampling import EpochSampler
from medclf.data.sources import csv_table, label_matrix, npz_table
from medclf.data.splits import assign_splits
from medclf.errors import ConfigError, DataError


def _pngs(root: Path, n: int) -> list[str]:
    """n small grey PNGs under root/img; their paths relative to root."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        image = class_image(i % 3, np.random.default_rng(i), size=8)
        Image.fromarray(image).save(root / "img" / f"{i:03d}.png")
        files.append(f"img/{i:03d}.png")
    return files


def _csv(root: Path, columns: dict[str, list[str]], name: str = "labels.csv") -> Path:
    n = len(next(iter(columns.values())))
    frame = pd.DataFrame({"file": _pngs(root, n), **columns})
    frame.to_csv(root / name, index=False)
    return root / name


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- CSV multi-label labels and metadata ---------------------------------------------------


def test_csv_label_columns_are_multilabel_tuples(tmp_path: Path):
    """0/1 and true/false columns (any case, padded) → 0/1 tuples; classes = column names."""
    path = _csv(
        tmp_path,
        {
            "nodule": ["1", "0", "true", "False", " 1 ", "0"],
            "effusion": ["0", "0", "TRUE", "1", "0", "1.0"],
        },
    )
    table = csv_table(path, image_column="file", label_columns=["nodule", "effusion"])
    assert table.multilabel
    assert table.class_names == ["nodule", "effusion"]  # column order, not sorted
    assert list(table.frame["label"]) == [(1, 0), (0, 0), (1, 1), (0, 1), (1, 0), (0, 1)]
    matrix = label_matrix(table.frame["label"], multilabel=True)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, [[1, 0], [0, 0], [1, 1], [0, 1], [1, 0], [0, 1]])


@pytest.mark.parametrize("bad", ["2", "yes", "-1"])
def test_csv_label_columns_bad_value_names_the_column(tmp_path: Path, bad: str):
    path = _csv(tmp_path, {"a": ["1", "0", "1"], "b": ["0", bad, "1"]})
    with pytest.raises(DataError, match=rf"column 'b'.*\['{bad}'\]"):
        csv_table(path, image_column="file", label_columns=["a", "b"])


def test_csv_label_columns_missing_column_named(tmp_path: Path):
    path = _csv(tmp_path, {"a": ["1", "0", "1"]})
    with pytest.raises(DataError, match=r"'mass'.*label_columns"):
        csv_table(path, image_column="file", label_columns=["a", "mass"])


def test_csv_separated_names_are_multilabel(tmp_path: Path):
    """label_column with ';'-joined names (spaces allowed) → sorted class names and tuples."""
    path = _csv(
        tmp_path,
        {"finding": ["effusion;nodule", " nodule ", "mass ; effusion", "nodule", "mass;nodule"]},
    )
    table = csv_table(path, image_column="file", label_column="finding")
    assert table.multilabel
    assert table.class_names == ["effusion", "mass", "nodule"]
    assert list(table.frame["label"]) == [(1, 0, 1), (0, 0, 1), (1, 1, 0), (0, 0, 1), (0, 1, 1)]


def test_csv_custom_label_separator(tmp_path: Path):
    path = _csv(tmp_path, {"label": ["b|a", "a", "c"]})
    table = csv_table(path, image_column="file", label_separator="|")
    assert table.class_names == ["a", "b", "c"]
    assert list(table.frame["label"]) == [(1, 1, 0), (1, 0, 0), (0, 0, 1)]


def test_csv_single_label_stays_class_indices(tmp_path: Path):
    """Without a separator in any row the labels are plain class indices."""
    path = _csv(tmp_path, {"label": ["cat", "dog", "cat", "bird"]})
    table = csv_table(path, image_column="file")
    assert not table.multilabel
    assert table.class_names == ["bird", "cat", "dog"]
    labels = table.frame["label"].to_numpy()
    assert labels.dtype.kind == "i"
    assert labels.tolist() == [1, 2, 1, 0]
    assert label_matrix(table.frame["label"], multilabel=False).dtype == np.int64


def test_csv_meta_columns_blank_is_nan(tmp_path: Path):
    """meta holds the named columns as strings, NaN where blank or whitespace, row-aligned."""
    path = _csv(
        tmp_path, {"label": ["a", "b", "a"], "age": ["31", "", "47"], "sex": ["F", "  ", "M"]}
    )
    table = csv_table(path, image_column="file", meta_columns=["age", "sex"])
    meta = table.meta
    assert list(meta.columns) == ["age", "sex"]
    assert meta.index.equals(table.frame.index)
    assert meta["age"].tolist()[::2] == ["31", "47"] and pd.isna(meta["age"][1])
    assert meta["sex"].tolist()[::2] == ["F", "M"] and pd.isna(meta["sex"][1])
    assert csv_table(path, image_column="file").meta is None


def test_csv_missing_meta_column_named(tmp_path: Path):
    path = _csv(tmp_path, {"label": ["a", "b"], "age": ["1", "2"]})
    with pytest.raises(DataError, match=r"'weight'.*meta_columns"):
        csv_table(path, image_column="file", meta_columns=["age", "weight"])


# --- iterative stratification ---------------------------------------------------------------


def _multilabel_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 5)) < [0.5, 0.3, 0.15, 0.08, 0.04]).astype(int)
    labels[:5, 4] = 1  # at least a handful of the rarest label
    frame = pd.DataFrame(
        {"sample": range(n), "path": range(n), "label": [tuple(r) for r in labels], "split": None}
    )
    return frame, labels


def test_multilabel_splits_are_iteratively_stratified():
    """Every label in every split; per-label positive fractions close to the overall ones
    (a random split of 45 samples misses them by ~0.07 for common labels)."""
    frame, labels = _multilabel_frame()
    out = assign_splits(frame, val_fraction=0.15, test_fraction=0.15, seed=3)
    sizes = out["split"].value_counts()
    assert sizes["val"] == 45 and sizes["test"] == 45 and sizes["train"] == 210
    overall = labels.mean(axis=0)
    for split in ("train", "val", "test"):
        part = labels[(out["split"] == split).to_numpy()]
        assert (part.sum(axis=0) > 0).all(), split
        np.testing.assert_allclose(part.mean(axis=0), overall, atol=0.025, err_msg=split)


def test_multilabel_splits_are_seeded():
    frame, _ = _multilabel_frame()
    a = assign_splits(frame, 0.15, 0.15, seed=3)["split"]
    b = assign_splits(frame, 0.15, 0.15, seed=3)["split"]
    c = assign_splits(frame, 0.15, 0.15, seed=4)["split"]
    assert a.equals(b)
    assert not a.equals(c)


def test_multilabel_splits_keep_given_test():
    """A given test split is kept; val is drawn from the rest."""
    frame, _ = _multilabel_frame(120)
    frame.loc[:19, "split"] = "test"
    out = assign_splits(frame, 0.25, 0.15, seed=0)
    assert (out.loc[:19, "split"] == "test").all()
    assert (out["split"] == "test").sum() == 20
    assert (out["split"] == "val").sum() == 25


# --- npz_table -----------------------------------------------------------------------------


def test_npz_grey_2d(tmp_path: Path):
    """(N, 28, 28) uint8 with (N, 1) labels → (N, 28, 28, 1) arrays, class indices."""
    images, labels = _images((20, 28, 28)), np.arange(20).reshape(20, 1) % 4
    table = npz_table(_npz(tmp_path / "d.npz", train_images=images, train_labels=labels))
    assert table.arrays.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(table.arrays[..., 0], images)
    assert not table.multilabel
    assert table.class_names == ["0", "1", "2", "3"]
    assert table.frame["label"].tolist() == (np.arange(20) % 4).tolist()
    assert table.frame["path"].tolist() == list(range(20))
    assert table.frame["split"].isna().all()  # to be drawn by assign_splits


def test_npz_rgb_2d_and_flat_labels(tmp_path: Path):
    images = _images((12, 28, 28, 3))
    table = npz_table(_npz(tmp_path / "d.npz", train_images=images, train_labels=np.arange(12) % 2))
    assert table.arrays.shape == (12, 28, 28, 3)
    np.testing.assert_array_equal(table.arrays, images)
    assert table.class_names == ["0", "1"]


def test_npz_3d_volumes(tmp_path: Path):
    """(N, 28, 28, 28) → (N, 28, 28, 28, 1); (N, D, H, W, C) is kept."""
    images = _images((4, 28, 28, 28))
    table = npz_table(_npz(tmp_path / "v.npz", train_images=images, train_labels=np.zeros(4)))
    assert table.arrays.shape == (4, 28, 28, 28, 1)
    np.testing.assert_array_equal(table.arrays[..., 0], images)
    five = _images((3, 6, 6, 6, 2))
    table = npz_table(_npz(tmp_path / "c.npz", train_images=five, train_labels=np.zeros(3)))
    assert table.arrays.shape == (3, 6, 6, 6, 2)


def test_npz_multilabel(tmp_path: Path):
    """(N, 14) labels → multi-label tuples, class names '0'..'13'."""
    labels = np.random.default_rng(0).integers(0, 2, (10, 14)).astype(np.uint8)
    table = npz_table(
        _npz(tmp_path / "m.npz", train_images=_images((10, 8, 8)), train_labels=labels)
    )
    assert table.multilabel
    assert table.class_names == [str(i) for i in range(14)]
    np.testing.assert_array_equal(label_matrix(table.frame["label"], True), labels)


def test_npz_given_splits_are_kept(tmp_path: Path):
    """train/val/test arrays → their splits in that order; with train and test only, train
    rows are left to be drawn (val from them) and test is kept."""
    arrays = {
        "train_images": _images((6, 8, 8)),
        "train_labels": np.arange(6) % 2,
        "val_images": _images((3, 8, 8), 1),
        "val_labels": np.array([0, 1, 0]),
        "test_images": _images((4, 8, 8), 2),
        "test_labels": np.array([1, 1, 0, 2]),
    }
    table = npz_table(_npz(tmp_path / "all.npz", **arrays))
    assert table.frame["split"].tolist() == ["train"] * 6 + ["val"] * 3 + ["test"] * 4
    assert table.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(table.arrays[6:9, ..., 0], arrays["val_images"])
    assert table.frame["label"].tolist()[9:] == [1, 1, 0, 2]
    del arrays["val_images"], arrays["val_labels"]
    table = npz_table(_npz(tmp_path / "two.npz", **arrays))
    split = table.frame["split"]
    assert split[:6].isna().all() and split[6:].tolist() == ["test"] * 4


def test_npz_errors(tmp_path: Path):
    """No train_images (found keys listed), no labels, length mismatch, unreadable file."""
    path = _npz(tmp_path / "a.npz", images=_images((2, 8, 8)), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"no 'train_images'.*\['images', 'labels'\]"):
        npz_table(path)
    path = _npz(tmp_path / "b.npz", train_images=_images((2, 8, 8)))
    with pytest.raises(DataError, match="train_labels"):
        npz_table(path)
    path = _npz(tmp_path / "c.npz", train_images=_images((5, 8, 8)), train_labels=np.zeros(4))
    with pytest.raises(DataError, match="5 samples but train_labels 4"):
        npz_table(path)
    (tmp_path / "d.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read"):
        npz_table(tmp_path / "d.npz")
    with pytest.raises(DataError, match="no such file"):
        npz_table(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="datamodule.path"):
        npz_table("???")


def test_npz_class_names(tmp_path: Path):
    path = _npz(tmp_path / "a.npz", train_images=_images((4, 8, 8)), train_labels=[0, 1, 2, 1])
    assert npz_table(path, class_names=["x", "y", "z"]).class_names == ["x", "y", "z"]
    with pytest.raises(ConfigError, match="2 names but .* 3 classes"):
        npz_table(path, class_names=["x", "y"])


def test_npz_uint8_kept_other_dtypes_scaled_once_for_the_whole_file(tmp_path: Path):
    """uint8 stays as stored (scaled per sample by the fixed 1/255); int16 and float images are
    scaled to [0, 1] with one scale for all samples, so equal raw values stay equal."""
    path = _npz(tmp_path / "u.npz", train_images=_images((3, 4, 4)), train_labels=[0, 1, 0])
    assert npz_table(path).arrays.dtype == np.uint8
    ct = np.zeros((2, 4, 4), np.int16)
    ct[0, 0, :2] = [-1000, 100]  # one sample with negative values (HU-like) ...
    ct[1, 0, :2] = [0, 100]  # ... one without
    path = _npz(tmp_path / "ct.npz", train_images=ct, train_labels=[0, 1])
    arrays = npz_table(path).arrays
    assert arrays.dtype == np.float32
    np.testing.assert_allclose(arrays[..., 0], (ct + 32768.0) / 65535.0, rtol=1e-6)
    floats = np.zeros((2, 4, 4), np.float32)
    floats[0, 0, 0], floats[1, 0, 0], floats[1, 0, 1] = 500, 500, 1000
    path = _npz(tmp_path / "f.npz", train_images=floats, train_labels=[0, 1])
    np.testing.assert_allclose(npz_table(path).arrays[..., 0], floats / 1000.0)


def test_npz_datamodule_loads_equal_raw_values_equally(tmp_path: Path):
    """Through the data set, the raw value 100 becomes the same float in every sample."""
    ct = np.zeros((30, 4, 4), np.int16)
    ct[:, 0, 0] = 100
    ct[::2, 1, 1] = -1000
    path = _npz(tmp_path / "ct.npz", train_images=ct, train_labels=np.arange(30) % 2)
    dm = NpzDataModule(path=path, image_size=4, batch_size=2)
    dm.setup()
    dataset = dm.datasets["train"]
    values = {float(dataset[i]["image"][0, 0, 0]) for i in range(len(dataset))}
    assert len(values) == 1


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([[0, 1], [2, 0], [1, 1]]), r"0 or 1 per label .*; found 2"),
        (np.array([0, -1, 1]), "class indices >= 0; found -1"),
        (np.array([0.0, 0.5, 1.0]), "found 0.5"),
    ],
)
def test_npz_bad_labels(tmp_path: Path, labels, match):
    path = _npz(tmp_path / "a.npz", train_images=_images((3, 4, 4)), train_labels=labels)
    with pytest.raises(DataError, match=match):
        npz_table(path)


def test_npz_spatial_dims_settles_the_ambiguous_layout(tmp_path: Path):
    """(N, 8, 8, 3): auto and 2 read RGB images; 3 reads grey volumes of depth 8 (documented).
    Layouts that fit neither reading are DataErrors."""
    path = _npz(tmp_path / "a.npz", train_images=_images((4, 8, 8, 3)), train_labels=np.zeros(4))
    assert npz_table(path).arrays.shape == (4, 8, 8, 3)
    assert npz_table(path, spatial_dims=2).arrays.shape == (4, 8, 8, 3)
    assert npz_table(path, spatial_dims=3).arrays.shape == (4, 8, 8, 3, 1)
    flat = _npz(tmp_path / "b.npz", train_images=_images((4, 8, 8)), train_labels=np.zeros(4))
    with pytest.raises(DataError, match="spatial_dims=3"):
        npz_table(flat, spatial_dims=3)
    five = _npz(tmp_path / "c.npz", train_images=_images((4, 5, 5, 5, 1)), train_labels=[0] * 4)
    with pytest.raises(DataError, match="spatial_dims=2"):
        npz_table(five, spatial_dims=2)
    vectors = _npz(tmp_path / "d.npz", train_images=_images((4, 64)), train_labels=np.zeros(4))
    with pytest.raises(DataError, match=r"\(4, 64\)"):
        npz_table(vectors)


# --- NpzDataModule ---------------------------------------------------------------------------


def test_npz_datamodule_3d_batches(tmp_path: Path):
    """3D npz: spatial_dims 3, 1 channel, (B, 1, *volume_size) batches equal to a trilinear
    resize of the source volume scaled to [0, 1]."""
    rng = np.random.default_rng(0)
    images = _images((40, 10, 12, 14))
    path = _npz(tmp_path / "v.npz", train_images=images, train_labels=rng.integers(0, 3, (40, 1)))
    dm = NpzDataModule(path=path, volume_size=[8, 6, 4], batch_size=4, num_workers=0)
    dm.setup()
    assert (dm.spatial_dims, dm.channels, dm.task, dm.n_classes) == (3, 1, "multiclass", 3)
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (4, 1, 8, 6, 4)
    assert batch["target"].dtype == torch.int64
    batch = next(iter(dm.val_dataloader()))
    frame = dm.split_frame("val")
    for k, i in enumerate(batch["index"].tolist()):
        source = torch.from_numpy(images[frame["path"][i]] / 255.0).float()[None, None]
        expected = F.interpolate(source, size=(8, 6, 4), mode="trilinear")[0]
        torch.testing.assert_close(batch["image"][k], expected)
        assert batch["target"][k] == frame["label"][i]


@pytest.mark.parametrize(("shape", "channels"), [((30, 28, 28), 1), ((30, 28, 28, 3), 3)])
def test_npz_datamodule_2d_batches(tmp_path: Path, shape, channels):
    labels = np.arange(30) % 3
    path = _npz(tmp_path / "d.npz", train_images=_images(shape), train_labels=labels)
    dm = NpzDataModule(path=path, image_size=16, batch_size=5)
    dm.setup()
    assert (dm.spatial_dims, dm.channels) == (2, channels)
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (5, channels, 16, 16)
    assert batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1


def test_npz_datamodule_multilabel_targets(tmp_path: Path):
    """(N, 14) labels → float 0/1 targets (B, 14) equal to the source rows."""
    labels = np.random.default_rng(1).integers(0, 2, (60, 14)).astype(np.uint8)
    path = _npz(tmp_path / "m.npz", train_images=_images((60, 12, 12)), train_labels=labels)
    dm = NpzDataModule(path=path, image_size=12, batch_size=6)
    dm.setup()
    assert dm.task == "multilabel" and dm.n_classes == 14
    batch = next(iter(dm.val_dataloader()))
    assert batch["target"].dtype == torch.float32
    assert tuple(batch["target"].shape) == (6, 14)
    rows = dm.split_frame("val")["path"].to_numpy()[batch["index"].numpy()]
    np.testing.assert_array_equal(batch["target"].numpy(), labels[rows])


def test_npz_datamodule_keeps_given_splits(tmp_path: Path):
    arrays = {}
    for i, (split, n) in enumerate((("train", 12), ("val", 5), ("test", 7))):
        arrays[f"{split}_images"] = _images((n, 8, 8), i)
        arrays[f"{split}_labels"] = np.arange(n) % 2
    dm = NpzDataModule(path=_npz(tmp_path / "d.npz", **arrays), image_size=8, batch_size=4)
    dm.setup()
    assert {s: len(dm.datasets[s]) for s in ("train", "val", "test")} == {
        "train": 12,
        "val": 5,
        "test": 7,
    }


def test_npz_datamodule_spatial_dims_mismatch(tmp_path: Path):
    path = _npz(tmp_path / "d.npz", train_images=_images((30, 8, 8)), train_labels=[0, 1] * 15)
    with pytest.raises(DataError):
        NpzDataModule(path=path, spatial_dims=3, batch_size=4).setup()


def test_meta_columns_need_a_csv_source(tmp_path: Path):
    path = _npz(tmp_path / "d.npz", train_images=_images((30, 8, 8)), train_labels=[0, 1] * 15)
    with pytest.raises(ConfigError, match="meta_columns"):
        NpzDataModule(path=path, batch_size=4, meta_columns=["age"]).setup()


def _imbalanced_npz(tmp_path: Path) -> Path:
    labels = np.repeat([0, 1, 2], [120, 60, 20])
    return _npz(tmp_path / "i.npz", train_images=_images((200, 8, 8)), train_labels=labels)


def test_balanced_sampler_weights_are_inverse_class_frequency(tmp_path: Path):
    """sampler=balanced: per-sample weight 1 / count(class) over the train split."""
    dm = NpzDataModule(path=_imbalanced_npz(tmp_path), image_size=8, sampler="balanced")
    dm.setup()
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, EpochSampler) and sampler.weights is not None
    assert sampler.num_samples == len(dm.datasets["train"])
    targets = dm.split_frame("train")["label"].to_numpy()
    expected = 1.0 / np.bincount(targets)[targets]
    np.testing.assert_allclose(sampler.weights.numpy(), expected)
    plain = NpzDataModule(path=_imbalanced_npz(tmp_path), image_size=8)
    plain.setup()
    assert plain.train_dataloader().sampler.weights is None


def test_balanced_sampler_draws_classes_evenly(tmp_path: Path):
    """Over many epochs each of the 3 classes (60/30/10 %) is drawn about a third of the time."""
    dm = NpzDataModule(path=_imbalanced_npz(tmp_path), image_size=8, sampler="balanced")
    dm.setup()
    sampler = dm.train_dataloader().sampler
    targets = dm.split_frame("train")["label"].to_numpy()
    drawn = []
    for epoch in range(30):
        sampler.set_epoch(epoch)
        drawn.append(targets[[i for _, i in sampler]])
    drawn = np.concatenate(drawn)
    share = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.04)
    assert np.bincount(targets)[0] / len(targets) > 0.55  # the data itself is imbalanced


def test_balanced_sampler_multilabel_weights(tmp_path: Path):
    """Multi-label: mean inverse frequency of the sample's positive labels (no positive: the
    smallest inverse frequency)."""
    labels = np.zeros((40, 3), np.uint8)
    labels[:24, 0] = 1
    labels[20:32, 1] = 1
    labels[30:36, 2] = 1  # rows 36-39 have no positive label
    path = _npz(tmp_path / "m.npz", train_images=_images((40, 8, 8)), train_labels=labels)
    dm = NpzDataModule(path=path, image_size=8, batch_size=4, sampler="balanced")
    dm.setup()
    targets = dm.split_targets("train")
    counts = targets.sum(axis=0)
    expected = []
    for row in targets:
        positives = np.flatnonzero(row)
        expected.append(np.mean(1 / counts[positives]) if positives.size else 1 / counts.max())
    np.testing.assert_allclose(dm.train_dataloader().sampler.weights.numpy(), expected)


# --- CsvDataModule with metadata -----------------------------------------------------------


def _meta_csv(image_csv: Path) -> tuple[Path, pd.DataFrame]:
    """The conftest table plus an age column (some blanks) and a site column."""
    table = pd.read_csv(image_csv, dtype=str)
    rng = np.random.default_rng(5)
    ages = rng.integers(20, 90, len(table)).astype(str).astype(object)
    ages[::6] = ""
    table["age"] = ages
    table["site"] = np.array(["north", "south", "east"])[rng.integers(0, 3, len(table))]
    path = image_csv.with_name("meta.csv")
    table.to_csv(path, index=False)
    return path, table


def test_csv_datamodule_metadata_batches(image_csv: Path):
    """batch['metadata'] has meta_variables columns: age z-scored with train statistics after
    train-median imputation (+ missing indicator), site one-hot over train sites."""
    path, table = _meta_csv(image_csv)
    dm = CsvDataModule(
        csv_path=path,
        image_column="file",
        label_column="diagnosis",
        meta_columns=["age", "site"],
        image_size=16,
        batch_size=4,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    dm.setup()
    train_rows = dm.frame.index[dm.frame["split"] == "train"]
    ages = pd.to_numeric(table["age"].replace("", np.nan)).to_numpy(float)
    train_ages = ages[train_rows]
    assert np.isnan(train_ages).any()  # blanks in train → an indicator column
    median = np.nanmedian(train_ages)
    filled = np.where(np.isnan(ages), median, ages)
    mean, std = filled[train_rows].mean(), filled[train_rows].std()
    sites = sorted(set(table["site"][train_rows]))
    assert dm.meta_variables == 2 + len(sites)
    assert dm.meta_encoder.feature_names() == ["age", "age_missing"] + [f"site={s}" for s in sites]

    def expected(rows) -> np.ndarray:
        onehot = (table["site"].to_numpy()[rows, None] == np.array(sites)).astype(float)
        z = (filled[rows] - mean) / std
        return np.column_stack([z, np.isnan(ages[rows]), onehot])

    train_meta = dm.datasets["train"].metadata
    np.testing.assert_allclose(train_meta[:, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(train_meta[:, 0].std(), 1, atol=1e-5)
    for split in ("val", "test"):
        rows = dm.frame.index[dm.frame["split"] == split]
        batch = next(iter(dm._loader(split)))
        assert batch["metadata"].dtype == torch.float32
        assert tuple(batch["metadata"].shape) == (len(batch["index"]), dm.meta_variables)
        np.testing.assert_allclose(
            batch["metadata"].numpy(), expected(rows[batch["index"].numpy()]), rtol=1e-5
        )
    batch = next(iter(dm.train_dataloader()))
    np.testing.assert_allclose(
        batch["metadata"].numpy(), expected(train_rows[batch["index"].numpy()]), rtol=1e-5
    )


def test_csv_datamodule_meta_types_and_errors(image_csv: Path):
    """meta_types forces a kind; a text value in a numeric column fails setup, named."""
    path, table = _meta_csv(image_csv)
    common = {"csv_path": path, "image_column": "file", "label_column": "diagnosis"}
    dm = CsvDataModule(
        **common, meta_columns=["age"], meta_types={"age": "categorical"}, batch_size=4
    )
    dm.setup()
    train_rows = dm.frame.index[dm.frame["split"] == "train"]
    assert dm.meta_variables == len({a for a in table["age"][train_rows] if a})
    table.loc[3, "age"] = "unknown"
    table.to_csv(path, index=False)
    bad = CsvDataModule(**common, meta_columns=["age"], meta_types={"age": "numeric"}, batch_size=4)
    with pytest.raises(DataError, match="'age'.*'unknown'"):
        bad.setup()


def test_csv_datamodule_multilabel_columns(tmp_path: Path):
    """label_columns through the data module: multilabel task, float 0/1 target vectors."""
    rng = np.random.default_rng(2)
    labels = (rng.random((48, 3)) < [0.5, 0.3, 0.2]).astype(int)
    path = _csv(tmp_path, {name: labels[:, i].astype(str) for i, name in enumerate("abc")})
    dm = CsvDataModule(
        csv_path=path,
        image_column="file",
        label_columns=["a", "b", "c"],
        image_size=8,
        batch_size=4,
    )
    dm.setup()
    assert dm.task == "multilabel" and dm.class_names == ["a", "b", "c"]
    batch = next(iter(dm.val_dataloader()))
    rows = dm.frame.index[dm.frame["split"] == "val"][batch["index"].numpy()]
    assert batch["target"].dtype == torch.float32
    np.testing.assert_array_equal(batch["target"].numpy(), labels[rows])
