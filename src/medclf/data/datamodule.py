"""LightningDataModules: one per data source, sharing splitting, checks and loaders.

``setup()`` is idempotent and does every check (paths, columns, decodable images, class
counts) up front, so ``train.main`` calls it before building a model or an MLflow run: bad
data fails before any training, with the file named.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from medclf.data.io import convert_channels, read_image
from medclf.data.sources import SampleTable, assign_splits, csv_table, digits_table, folder_table
from medclf.data.transforms import build_transform, image_hw, seed_worker
from medclf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Samples of one split as ``{"image": (C, H, W) float, "target": int, "index": int}``."""

    def __init__(self, frame: pd.DataFrame, arrays, channels: int, transform) -> None:
        self.paths = frame["path"].tolist()
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.arrays = arrays
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        image = self.arrays[self.paths[i]] if self.arrays is not None else read_image(self.paths[i])
        return convert_channels(image, self.channels)

    def __getitem__(self, i: int) -> dict:
        image = self.transform(image=self.load(i))["image"]
        return {"image": image, "target": int(self.labels[i]), "index": i}


class ClassificationDataModule(L.LightningDataModule):
    """Base: subclasses implement :meth:`load_table`; everything else is shared."""

    def __init__(
        self,
        image_size: int | list[int] = 224,
        channels: int | str = "auto",
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 42,
        augment=None,
        verify_images: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"datamodule.batch_size={batch_size!r} must be a positive integer.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"datamodule.num_workers={num_workers!r} must be an integer >= 0.")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ConfigError(f"datamodule.{key}={value} must be in [0, 1).")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"datamodule.val_fraction + test_fraction = {val_fraction + test_fraction} "
                "leaves nothing to train on; keep their sum below 1."
            )
        if channels != "auto" and (not isinstance(channels, int) or channels not in (1, 3)):
            raise ConfigError(f"datamodule.channels={channels!r}: use auto, 1 or 3.")
        try:
            height, width = image_hw(image_size)
        except (TypeError, ValueError):
            height = width = 0
        if height < 1 or width < 1:
            raise ConfigError(
                f"datamodule.image_size={image_size!r} must be a positive integer or a "
                "[height, width] pair of them."
            )
        self.image_size = image_size
        self.requested_channels = channels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = augment
        self.verify_images = verify_images
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.drop_last = drop_last
        self.table: SampleTable | None = None
        self.frame: pd.DataFrame | None = None
        self.channels: int | None = None
        self.datasets: dict[str, ImageDataset] = {}

    def load_table(self) -> SampleTable:
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        return self.table.class_names

    @property
    def n_classes(self) -> int:
        return len(self.table.class_names)

    @property
    def task(self) -> str:
        return "multiclass"

    def split_frame(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == split].reset_index(drop=True)

    def train_labels(self) -> np.ndarray:
        return self.split_frame("train")["label"].to_numpy()

    def setup(self, stage: str | None = None) -> None:
        if self.frame is not None:
            return
        table = self.load_table()
        frame = assign_splits(table.frame, self.val_fraction, self.test_fraction, self.seed)
        for split in ("train", "val", "test"):
            if not (frame["split"] == split).any():
                raise DataError(
                    f"the {split} split is empty ({len(frame)} samples in all); add samples or "
                    f"raise datamodule.{split}_fraction."
                    if split != "train"
                    else "the train split is empty."
                )
        self.table = table
        self.channels = self._check_images(frame, table.arrays)
        n_train = int((frame["split"] == "train").sum())
        if self.drop_last and n_train < self.batch_size:
            raise DataError(
                f"the train split has {n_train} samples, fewer than datamodule.batch_size="
                f"{self.batch_size} with datamodule.drop_last=true: no batch would be trained. "
                "Lower the batch size or set datamodule.drop_last=false."
            )
        self.frame = frame
        counts = frame["split"].value_counts()
        log.info(
            "data: %d classes, %d channel(s); train %d, val %d, test %d samples",
            self.n_classes,
            self.channels,
            counts.get("train", 0),
            counts.get("val", 0),
            counts.get("test", 0),
        )
        for split in ("train", "val", "test"):
            augment = self.augment if split == "train" else None
            self.datasets[split] = ImageDataset(
                self.split_frame(split),
                table.arrays,
                self.channels,
                build_transform(self.image_size, augment, seed=self.seed),
            )

    def _check_images(self, frame: pd.DataFrame, arrays) -> int:
        """Decode every image once (or a sample when verify_images=false); pick channels."""
        if arrays is not None:
            found = {int(arrays.shape[-1])}
        else:
            paths = frame["path"].tolist()
            if not self.verify_images:
                paths = paths[:16]
            errors, found = [], set()
            with ThreadPoolExecutor(max_workers=4) as pool:
                for result in pool.map(_probe, paths):
                    if isinstance(result, str):
                        errors.append(result)
                    else:
                        found.add(result)
            if errors:
                more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
                raise DataError(
                    f"{len(errors)} unreadable image(s):\n  " + "\n  ".join(errors[:5]) + more
                )
        if self.requested_channels != "auto":
            return int(self.requested_channels)
        return 3 if max(found) >= 3 else 1

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _probe(path: str) -> int | str:
    try:
        channels = int(read_image(path).shape[-1])
    except DataError as exc:
        return str(exc)
    if channels not in (1, 3):
        return (
            f"{path}: {channels} channels; only greyscale or RGB(A) images are supported. "
            "Convert it or remove it."
        )
    return channels


class DigitsDataModule(ClassificationDataModule):
    """The default demo: scikit-learn's 8×8 digits, upsampled to ``image_size``."""

    def load_table(self) -> SampleTable:
        return digits_table()


class FolderDataModule(ClassificationDataModule):
    """``data_dir`` with one sub-folder per class, or train/ val/ test/ each holding those."""

    def __init__(self, data_dir: str | Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_dir = data_dir

    def load_table(self) -> SampleTable:
        return folder_table(self.data_dir)


class CsvDataModule(ClassificationDataModule):
    """A CSV with an image-path column and a label column (and optionally a split column)."""

    def __init__(
        self,
        csv_path: str | Path | None = None,
        image_dir: str | Path | None = None,
        image_column: str = "image",
        label_column: str = "label",
        split_column: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.csv_path = csv_path
        self.image_dir = image_dir
        self.image_column = image_column
        self.label_column = label_column
        self.split_column = split_column

    def load_table(self) -> SampleTable:
        return csv_table(
            self.csv_path,
            self.image_dir,
            self.image_column,
            self.label_column,
            self.split_column,
        )
