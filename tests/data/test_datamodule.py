"""Data modules: setup checks, splits, batches, train-only augmentation, repeatability."""

from __future__ import annotations

import os
from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
from conftest import CLASSES

from helpers import check_datamodule
from medclf.data.datamodule import (
    ClassificationDataModule,
    CsvDataModule,
    DigitsDataModule,
    FolderDataModule,
)
from medclf.errors import ConfigError, DataError


def _augment() -> A.BasicTransform:
    """A random augmentation applied to every image (p=1) that changes pixel values."""
    return A.Affine(rotate=(-40, 40), translate_percent=(-0.2, 0.2), p=1.0)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    """Digits at their native 8×8 so batch pixels can be compared with the source arrays."""
    dm = DigitsDataModule(image_size=8, batch_size=64, val_fraction=0.2, test_fraction=0.1)
    dm.setup()
    return dm


def _first_train_batch(dm: ClassificationDataModule) -> dict:
    L.seed_everything(0, workers=True)
    return next(iter(dm.train_dataloader()))


def _digits(seed: int = 3, **kwargs) -> DigitsDataModule:
    dm = DigitsDataModule(image_size=12, batch_size=16, seed=seed, augment=_augment(), **kwargs)
    dm.setup()
    return dm


# --- digits: splits and batches -----------------------------------------------------------


def test_digits_setup_splits(digits: DigitsDataModule):
    """10 classes, 1 channel, splits partition all 1,797 samples by the fractions."""
    assert digits.n_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.channels == 1
    assert digits.task == "multiclass"
    sizes = {s: len(digits.split_frame(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.1 * 1797, abs=2)
    assert sizes["val"] == pytest.approx(0.2 * 1797, abs=2)
    assert {s: len(digits.datasets[s]) for s in sizes} == sizes
    samples = [set(digits.split_frame(s)["sample"]) for s in sizes]
    assert not (samples[0] & samples[1] or samples[0] & samples[2] or samples[1] & samples[2])
    for split in sizes:
        assert set(digits.split_frame(split)["label"]) == set(range(10))
    np.testing.assert_array_equal(digits.train_labels(), digits.split_frame("train")["label"])


def test_digits_setup_idempotent(digits: DigitsDataModule):
    """A second setup() keeps the same frame and datasets."""
    frame, datasets = digits.frame, dict(digits.datasets)
    digits.setup("fit")
    assert digits.frame is frame
    assert digits.datasets == datasets


def test_digits_batches_match_source(digits: DigitsDataModule):
    """Batches: (B, 1, H, W) float in [0, 1], int targets; index → split_frame row → source."""
    from sklearn.datasets import load_digits

    source = load_digits()
    for split, loader in (("val", digits.val_dataloader()), ("train", digits.train_dataloader())):
        batch = next(iter(loader))
        images, targets, index = batch["image"], batch["target"], batch["index"]
        assert images.shape == (64, 1, 8, 8)
        assert images.dtype == torch.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert targets.dtype == torch.int64 and index.dtype == torch.int64
        rows = digits.split_frame(split).iloc[index.numpy()]
        np.testing.assert_array_equal(targets.numpy(), rows["label"].to_numpy())
        for image, path in zip(images, rows["path"], strict=True):
            np.testing.assert_allclose(image[0].numpy(), source.images[path] / 16.0, atol=1e-6)
            assert source.target[path] == rows.loc[rows["path"] == path, "label"].item()


def test_digits_image_size_resizes():
    """image_size sets the batch height and width; a [h, w] pair is honoured."""
    dm = DigitsDataModule(image_size=[16, 20], batch_size=8)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (8, 1, 16, 20)
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0


def test_val_loader_not_shuffled_and_complete(digits: DigitsDataModule):
    """val/test loaders visit every sample once, in order, and keep the last short batch."""
    for split, loader in (("val", digits.val_dataloader()), ("test", digits.test_dataloader())):
        index = torch.cat([batch["index"] for batch in loader])
        assert index.tolist() == list(range(len(digits.split_frame(split))))


def test_train_loader_drops_last(digits: DigitsDataModule):
    """The train loader drops the last short batch (drop_last=True by default)."""
    n_train = len(digits.split_frame("train"))
    sizes = [len(batch["target"]) for batch in digits.train_dataloader()]
    assert sizes == [64] * (n_train // 64)


# --- augmentation and repeatability ------------------------------------------------------


def test_augment_train_only():
    """The augmentation changes train images between reads; val and test are stable."""
    dm = _digits()
    for split in ("val", "test"):
        first, second = dm.datasets[split][5]["image"], dm.datasets[split][5]["image"]
        assert torch.equal(first, second)
    train = dm.datasets["train"]
    assert not torch.equal(train[5]["image"], train[5]["image"])
    plain = DigitsDataModule(image_size=12, batch_size=16, seed=3)
    plain.setup()
    assert torch.equal(plain.datasets["val"][5]["image"], dm.datasets["val"][5]["image"])


def test_same_seed_same_first_batch():
    """Two data modules with the same seed yield the same first shuffled, augmented batch."""
    a, b = _first_train_batch(_digits()), _first_train_batch(_digits())
    assert torch.equal(a["index"], b["index"])
    assert torch.equal(a["image"], b["image"])
    other = _first_train_batch(_digits(seed=4))
    assert not torch.equal(a["image"], other["image"])


def test_same_seed_same_first_batch_with_workers():
    """Repeatable with two loader workers too (seed_worker re-seeds each worker's pipeline)."""
    a = _first_train_batch(_digits(num_workers=2))
    b = _first_train_batch(_digits(num_workers=2))
    assert torch.equal(a["index"], b["index"])
    assert torch.equal(a["image"], b["image"])


# --- folder and CSV data modules ---------------------------------------------------------


def test_folder_datamodule_grey(image_folder: Path):
    """Greyscale PNG folders: channels auto → 1, three classes, batches at image_size."""
    dm = FolderDataModule(data_dir=image_folder, image_size=16, batch_size=4)
    dm.setup()
    assert dm.channels == 1
    assert dm.class_names == sorted(CLASSES)
    assert len(dm.frame) == 36
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 1, 16, 16)
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0


def test_folder_datamodule_forced_rgb(image_folder: Path):
    """channels=3 on grey images repeats the grey channel."""
    dm = FolderDataModule(data_dir=image_folder, image_size=16, batch_size=4, channels=3)
    dm.setup()
    assert dm.channels == 3
    image = dm.datasets["test"][0]["image"]
    assert image.shape == (3, 16, 16)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])


def test_csv_datamodule_rgb(image_csv: Path):
    """RGB JPEGs listed in a CSV: channels auto → 3."""
    dm = CsvDataModule(
        csv_path=image_csv,
        image_column="file",
        label_column="diagnosis",
        image_size=16,
        batch_size=4,
    )
    dm.setup()
    assert dm.channels == 3
    assert dm.class_names == sorted(CLASSES)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16)
    rows = dm.split_frame("train").iloc[batch["index"].numpy()]
    np.testing.assert_array_equal(batch["target"].numpy(), rows["label"].to_numpy())


def test_csv_datamodule_split_column(image_csv: Path):
    """A split column in the CSV decides the splits; nothing is drawn from the fractions."""

    def split_of(i: int) -> str:  # per class of 12: 8 train, 2 val, 2 test
        return "train" if i % 12 < 8 else "val" if i % 12 < 10 else "test"

    lines = image_csv.read_text().splitlines()
    rows = [lines[0] + ",split"] + [f"{x},{split_of(i)}" for i, x in enumerate(lines[1:])]
    image_csv.write_text("\n".join(rows) + "\n")
    dm = CsvDataModule(
        csv_path=image_csv,
        image_column="file",
        label_column="diagnosis",
        split_column="split",
        image_size=8,
        batch_size=4,
        val_fraction=0.4,
    )
    dm.setup()
    assert dm.frame["split"].tolist() == [split_of(i) for i in range(36)]
    assert len(dm.datasets["val"]) == 6 and len(dm.datasets["test"]) == 6


def test_corrupt_image_named_by_setup(image_folder: Path):
    """setup() decodes every image up front; a corrupt one → DataError naming the file."""
    bad = image_folder / "normal" / "normal_03.png"
    bad.write_text("not a png")
    dm = FolderDataModule(data_dir=image_folder, image_size=8, batch_size=4)
    with pytest.raises(DataError, match="1 unreadable image") as info:
        dm.setup()
    assert str(bad) in str(info.value)
    assert dm.frame is None


def test_several_corrupt_images_all_named(image_folder: Path):
    """Several corrupt images are listed together in one error."""
    bad = [image_folder / "benign" / "benign_00.png", image_folder / "normal" / "normal_11.png"]
    bad[0].write_bytes(b"")
    data = (image_folder / "malignant" / "malignant_00.png").read_bytes()
    bad[1].write_bytes(data[: len(data) // 2])
    dm = FolderDataModule(data_dir=image_folder, image_size=8, batch_size=4)
    with pytest.raises(DataError, match="2 unreadable image") as info:
        dm.setup()
    for path in bad:
        assert str(path) in str(info.value)


def test_drop_last_needs_a_full_batch(image_folder: Path):
    """drop_last with fewer train samples than batch_size → DataError naming batch_size."""
    dm = FolderDataModule(data_dir=image_folder, image_size=8, batch_size=64)
    with pytest.raises(DataError, match=r"datamodule\.batch_size=64"):
        dm.setup()
    dm = FolderDataModule(data_dir=image_folder, image_size=8, batch_size=64, drop_last=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["target"]) == len(dm.split_frame("train"))


def test_empty_split_rejected(tmp_path: Path):
    """Given train/ and val/ folders with test_fraction=0 → no test split → DataError."""
    from PIL import Image

    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (8, 8), i * 40).save(tmp_path / split / name / f"{i}.png")
    dm = FolderDataModule(data_dir=tmp_path, image_size=8, batch_size=2, test_fraction=0.0)
    with pytest.raises(DataError, match="test split is empty"):
        dm.setup()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 0}, "datamodule.batch_size"),
        ({"batch_size": -4}, "datamodule.batch_size"),
        ({"batch_size": 2.5}, "datamodule.batch_size"),
        ({"num_workers": -1}, "datamodule.num_workers"),
        ({"num_workers": "many"}, "datamodule.num_workers"),
        ({"val_fraction": 1.0}, "datamodule.val_fraction"),
        ({"test_fraction": -0.1}, "datamodule.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.45}, "val_fraction + test_fraction"),
        ({"channels": 0}, "datamodule.channels"),
        ({"channels": "rgb"}, "datamodule.channels"),
    ],
)
def test_invalid_config_rejected(kwargs: dict, key: str):
    """Invalid datamodule values → ConfigError naming the key (the pre-flight's check)."""
    with pytest.raises(ConfigError) as info:
        check_datamodule(**kwargs)
    assert key in str(info.value)


def test_folder_datamodule_missing_data_dir():
    """FolderDataModule without data_dir fails in setup() naming datamodule.data_dir."""
    with pytest.raises(ConfigError, match=r"datamodule\.data_dir"):
        FolderDataModule(image_size=8).setup()


def test_workers_get_distinct_augmentation():
    """Each loader worker draws its own augmentation (seed_worker), not copies of one stream."""
    dm = DigitsDataModule(image_size=12, batch_size=4, num_workers=2, augment=_augment())
    dm.setup()
    train = dm.datasets["train"]
    train.arrays = np.repeat(train.arrays[:1], len(train.arrays), axis=0)  # one image only
    L.seed_everything(0, workers=True)
    loader = iter(dm.train_dataloader())
    first, second = next(loader)["image"], next(loader)["image"]  # from workers 0 and 1
    assert not torch.equal(first, second)


def test_image_with_unsupported_channels_named_by_setup(image_folder: Path):
    """A 5-channel TIFF among greyscale PNGs fails in setup() with its path, not later
    inside the training loop."""
    import tifffile

    bad = image_folder / "benign" / "five.tif"
    tifffile.imwrite(
        bad, np.zeros((24, 24, 5), np.uint8), photometric="minisblack", planarconfig="contig"
    )
    dm = FolderDataModule(data_dir=image_folder, image_size=8, batch_size=4)
    with pytest.raises(
        DataError, match=r"different channel counts: 1 \(e\.g\. .*5 \(e\.g\. "
    ) as info:
        dm.setup()
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("image_size", [0, -8, [16], [16, 0], "big"])
def test_invalid_image_size_rejected(image_size):
    """image_size must be a positive int or an [h, w] pair → ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"datamodule\.image_size"):
        check_datamodule(image_size=image_size)


# --- num_workers: auto ------------------------------------------------------------------


def test_auto_workers_rule() -> None:
    from medclf.data.dataset import auto_workers

    assert auto_workers(on_gpu=False, cores=2) == 2
    assert auto_workers(on_gpu=False, cores=64) == 2  # CPU training: the model needs the cores
    assert auto_workers(on_gpu=False, cores=1) == 1
    assert auto_workers(on_gpu=True, processes=1, cores=16) == 16
    assert auto_workers(on_gpu=True, processes=4, cores=32) == 8  # shared among DDP ranks
    assert auto_workers(on_gpu=True, processes=1, cores=128) == 16
    assert auto_workers(on_gpu=True, processes=8, cores=4) == 1


def test_auto_workers_follow_the_attached_trainer(tmp_path) -> None:
    dm = _digits(num_workers="auto", persistent_workers=True)
    dm.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path)
    loader = dm.train_dataloader()
    assert loader.num_workers == min(2, len(os.sched_getaffinity(0)))
    assert loader.persistent_workers


def test_default_config_uses_auto_workers() -> None:
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["datamodule=folder", "datamodule.data_dir=/x"])
    assert cfg.datamodule.num_workers == "auto"
