"""LightningDataModules: one per data source, sharing splitting, checks and loaders.

``setup()`` is idempotent and does every check (paths, columns, decodable images, channel
counts, 2D/3D, class counts, metadata) up front, so the pipeline calls it before building
a model or an MLflow run: bad data fails before any training, with the file named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from medclf.compat import epochs_processed
from medclf.data.checkcache import CheckCache
from medclf.data.dataset import ImageDataset, auto_workers
from medclf.data.groups import (
    check_groups_can_split,
    check_leakage,
    has_groups,
    split_counts,
    splits_table,
)
from medclf.data.inspection import inspect_images
from medclf.data.metadata import MetadataEncoder
from medclf.data.sampling import EpochSampler, eval_sampler
from medclf.data.sources import (
    SampleTable,
    csv_table,
    digits_table,
    folder_table,
    label_matrix,
    npz_table,
)
from medclf.data.splits import assign_fold, assign_splits
from medclf.data.transforms import DEFAULT_VOLUME_SIZE, input_transform, seed_worker
from medclf.errors import ConfigError, DataError, Problems

log = logging.getLogger(__name__)


class ClassificationDataModule(L.LightningDataModule):
    """Base: subclasses implement :meth:`load_table`; everything else is shared. The
    arguments are the ``datamodule`` config's, checked by the pre-flight
    (medclf.pipeline.rules.check_datamodule) before this is built."""

    def __init__(
        self,
        image_size: int | list[int] = 224,
        channels: int | str = "auto",
        batch_size: int = 32,
        num_workers: int | str = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 42,
        augment: Any = None,
        volume_augment: Any = None,
        verify_images: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = True,
        spatial_dims: int | str = "auto",
        volume_size: list[int] | None = None,
        sampler: str | None = None,
        meta_columns: list[str] | None = None,
        meta_types: dict[str, str] | None = None,
        dicom_window: Any = None,
        cache: bool = False,
        folds: int = 0,
        fold: int = 0,
        duplicates: str = "warn",
        check_cache: str | None = None,
    ) -> None:
        super().__init__()
        volume_size = list(volume_size or DEFAULT_VOLUME_SIZE)
        self.image_size = image_size
        self.volume_size = volume_size
        self.folds = int(folds or 0)
        self.fold = int(fold or 0)
        self.requested_channels = channels
        self.requested_spatial_dims = spatial_dims
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = augment
        self.volume_augment = volume_augment
        self.verify_images = verify_images
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers != 0
        self.drop_last = drop_last
        self.sampler = None if sampler == "none" else sampler
        self.meta_columns = list(meta_columns or [])
        self.meta_types = dict(meta_types or {})
        self.dicom_window = dicom_window
        self.cache = cache
        self.duplicates = duplicates
        self.check_cache = str(check_cache) if check_cache else None
        self.duplicates_found: list[str] = []  # the leakage check's warnings, for the report
        self.table: SampleTable | None = None
        self.frame: pd.DataFrame | None = None
        self.channels: int | None = None
        self.spatial_dims: int | None = None
        self.meta_encoder: MetadataEncoder | None = None
        self.metadata: np.ndarray | None = None
        self.datasets: dict[str, ImageDataset] = {}
        self._table_problems: Problems | None = None  # setup's, for load_table's sources

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
        """``multilabel`` when a sample may carry several labels, else ``multiclass``."""
        return "multilabel" if self.table.multilabel else "multiclass"

    @property
    def meta_variables(self) -> int | None:
        """Width of the encoded metadata (the head's ``meta_variables``), None without."""
        return self.meta_encoder.width if self.meta_encoder is not None else None

    def split_frame(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == split].reset_index(drop=True)

    def split_targets(self, split: str) -> np.ndarray:
        return label_matrix(self.split_frame(split)["label"], self.table.multilabel)

    def train_labels(self) -> np.ndarray:
        return self.split_targets("train")

    @property
    def groups(self) -> bool:
        """Whether samples carry a group (patient)."""
        return has_groups(self.frame)

    def split_info(self, split: str) -> pd.DataFrame | None:
        """The report-only columns (``eval.subgroups``) of the split's samples, in order."""
        if self.table.info is None:
            return None
        index = self.frame.index[self.frame["split"] == split]
        return self.table.info.loc[index].reset_index(drop=True)

    def splits_table(self) -> pd.DataFrame:
        """``splits.csv``: sample, split, group, label of every sample."""
        return splits_table(self.frame, self.class_names, self.table.multilabel)

    def split_counts(self) -> pd.DataFrame:
        """Samples, groups and samples per class of each split."""
        return split_counts(self.frame, self.class_names, self.table.multilabel)

    def setup(self, stage: str | None = None) -> None:
        if self.frame is not None:
            return
        # independent checks: all their problems are reported at once
        problems = self._table_problems = Problems()
        table = None
        with problems.check():
            table = self.load_table()
        if table is None:
            problems.raise_any()
        if self.meta_columns and table.meta is None:
            raise ConfigError(
                f"datamodule.meta_columns={self.meta_columns} needs a table with those columns "
                "(datamodule=csv); this data source has no metadata."
            )
        frame = None
        with problems.check():
            frame = self._split(table)
            self.duplicates_found = check_leakage(frame, table.arrays, self.duplicates)
        decoded: dict[str, np.ndarray] = {}
        self.image_check: dict[str, int] = {}
        with problems.check():
            self.channels, self.spatial_dims = inspect_images(
                (table.frame if frame is None else frame)["path"],
                table.arrays,
                decoded if self.cache else None,
                every=self.verify_images,
                channels=self.requested_channels,
                spatial_dims=self.requested_spatial_dims,
                dicom_window=self.dicom_window,
                check_cache=CheckCache(self.check_cache) if self.check_cache else None,
                counts=self.image_check,
            )
        if frame is not None:
            n_train = int((frame["split"] == "train").sum())
            if self.drop_last and n_train < self.batch_size:
                problems.add(
                    f"the train split has {n_train} samples, fewer than datamodule.batch_size="
                    f"{self.batch_size} with datamodule.drop_last=true: no batch would be "
                    "trained. Lower the batch size or set datamodule.drop_last=false."
                )
            if table.meta is not None and self.meta_columns:
                with problems.check():
                    meta = table.meta.loc[frame.index]
                    train = (frame["split"] == "train").to_numpy()
                    self.meta_encoder = MetadataEncoder.fit(meta, train, self.meta_types)
                    self.metadata = self.meta_encoder.transform(meta)
        problems.raise_any()
        self.table = table
        self.frame = frame
        counts = frame["split"].value_counts()
        log.info(
            "data: %d classes (%s), %dD, %d channel(s)%s; train %d, val %d, test %d samples",
            self.n_classes,
            self.task,
            self.spatial_dims,
            self.channels,
            f", {self.meta_variables} metadata variables" if self.meta_encoder else "",
            counts.get("train", 0),
            counts.get("val", 0),
            counts.get("test", 0),
        )
        for split in ("train", "val", "test"):
            mask = (frame["split"] == split).to_numpy()
            split_frame = self.split_frame(split)
            self.datasets[split] = ImageDataset(
                split_frame,
                table.arrays,
                self.channels,
                self._transform(train=split == "train"),
                self.split_targets(split),
                self.metadata[mask] if self.metadata is not None else None,
                self.dicom_window,
                [decoded[path] for path in split_frame["path"]] if decoded else None,
                self.seed,
            )
        self._log_cache(decoded)

    def _split(self, table: SampleTable) -> pd.DataFrame:
        """The table with every sample's split; each split non-empty, every class trained."""
        names = table.class_names
        if table.frame["split"].isna().any() or (table.frame["split"] == "train").any():
            check_groups_can_split(table.frame, names)
        frame = assign_splits(table.frame, self.val_fraction, self.test_fraction, self.seed, names)
        if self.folds >= 2:  # cross-validation: this fold is the val split
            frame = assign_fold(frame, self.folds, self.fold, self.seed, names)
        for split in ("train", "val", "test"):
            if not (frame["split"] == split).any():
                raise DataError(
                    f"the {split} split is empty ({len(frame)} samples in all); add samples or "
                    f"raise datamodule.{split}_fraction."
                    if split != "train"
                    else "the train split is empty."
                )
        targets = label_matrix(frame["label"], table.multilabel)
        train = (frame["split"] == "train").to_numpy()
        if table.multilabel:
            trained = targets[train].sum(axis=0) > 0
        else:
            trained = np.bincount(targets[train], minlength=len(table.class_names)) > 0
        unseen = [name for name, seen in zip(table.class_names, trained, strict=True) if not seen]
        if unseen:
            where = frame.loc[~train, "split"].value_counts().to_dict()
            raise DataError(
                f"label(s) {unseen} occur only outside the train split (val/test samples: "
                f"{where}): the model could never learn them. Move samples of those labels "
                "to train, or fix the labels."
            )
        return frame

    def _log_cache(self, decoded: dict[str, np.ndarray]) -> None:
        if not self.cache:
            return
        if not decoded:
            log.info("datamodule.cache: the images are already in memory (no files to cache)")
            return
        megabytes = sum(image.nbytes for image in decoded.values()) / 2**20
        log.info(
            "datamodule.cache: %d decoded images held in memory (%.0f MB)", len(decoded), megabytes
        )

    def _transform(self, train: bool):
        """Resize (+ train-split augmentation): albumentations for 2D, VolumeTransform for 3D."""
        augment = (
            (self.volume_augment if self.spatial_dims == 3 else self.augment) if train else None
        )
        return input_transform(
            self.spatial_dims, self.image_size, self.volume_size, augment, seed=self.seed
        )

    def _train_sampler(self) -> EpochSampler:
        """The train split's order for this epoch (resumed runs: the restored epoch). With
        ``sampler=balanced``: draws with probability inverse to the sample's class size
        (multi-label: the mean inverse frequency of the sample's positive labels)."""
        dataset = self.datasets["train"]
        # the epoch the loop runs next (what Lightning passes to set_epoch); a checkpoint
        # saved at validation end has the epoch processed but not completed
        trainer = self.trainer
        epoch = epochs_processed(trainer) if trainer is not None else 0
        if self.sampler != "balanced":
            return EpochSampler(dataset, self.seed, epoch)
        targets = self.split_targets("train")
        if targets.ndim == 1:
            counts = np.bincount(targets, minlength=self.n_classes)
            weights = 1.0 / counts[targets]
        else:
            inverse = 1.0 / np.maximum(targets.sum(axis=0), 1)
            positives = targets.sum(axis=1)
            weights = np.where(
                positives > 0, targets @ inverse / np.maximum(positives, 1), inverse.min()
            )
        weights = torch.as_tensor(weights, dtype=torch.double)
        return EpochSampler(dataset, self.seed, epoch, weights=weights)

    def workers(self) -> int:
        """``num_workers``, with ``auto`` resolved for the attached Trainer (or, before one is
        attached, for the machine): see ``auto_workers``."""
        if self.num_workers != "auto":
            return self.num_workers
        trainer = self.trainer
        if trainer is not None:
            on_gpu = trainer.accelerator.__class__.__name__ != "CPUAccelerator"
            processes = trainer.num_devices
        else:
            on_gpu, processes = torch.cuda.is_available(), max(torch.cuda.device_count(), 1)
        return auto_workers(on_gpu, processes)

    def _loader(self, split: str, drop_last: bool = False, sampler=None):
        """The split's DataLoader. It has its own generator (for the workers' base seed), so
        making an iterator never draws from torch's global one (dropout's, reseeded per
        epoch by medclf.pipeline.resume.ResumeState, whether or not the run was resumed)."""
        workers = self.workers()
        return DataLoader(
            self.datasets[split],
            generator=torch.Generator().manual_seed(self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=seed_worker if workers > 0 else None,
        )

    def full_loader(self, split: str) -> DataLoader:
        """Every sample of ``split`` in this process (no distributed sampler): what is fitted
        after training (calibration, thresholds) sees the whole validation split."""
        return self._loader(split)

    def recalibration_loader(self) -> DataLoader:
        """The train split without augmentation, this rank's share, in a fixed order: what
        batch-norm statistics are re-estimated on (medclf.pipeline.batchnorm)."""
        import copy

        dataset = copy.copy(self.datasets["train"])
        dataset.transform = self._transform(train=False)
        workers = self.workers()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=eval_sampler(dataset),
            num_workers=workers,
            worker_init_fn=seed_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def plain_loader(self, split: str) -> DataLoader:
        """Every sample of ``split`` without augmentation, in the split's order, in this
        process (no distributed sampler): what the data audit reads features from."""
        import copy

        dataset = copy.copy(self.datasets[split])
        dataset.transform = self._transform(train=False)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", drop_last=self.drop_last, sampler=self._train_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=eval_sampler(self.datasets["val"]))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", sampler=eval_sampler(self.datasets["test"]))


class DigitsDataModule(ClassificationDataModule):
    """The default demo: scikit-learn's 8×8 digits, upsampled to ``image_size``."""

    def load_table(self) -> SampleTable:
        return digits_table()


class FolderDataModule(ClassificationDataModule):
    """``data_dir`` with one sub-folder per class, or train/ val/ test/ each holding those."""

    def __init__(
        self, data_dir: str | Path | None = None, group_pattern: str | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.group_pattern = group_pattern

    def load_table(self) -> SampleTable:
        return folder_table(self.data_dir, self.group_pattern)


class CsvDataModule(ClassificationDataModule):
    """A CSV with an image-path column and labels (one name column, ``;``-separated names
    for multi-label, or several 0/1 ``label_columns``), optional split and metadata."""

    def __init__(
        self,
        csv_path: str | Path | None = None,
        image_dir: str | Path | None = None,
        image_column: str = "image",
        label_column: str | None = "label",
        split_column: str | None = None,
        label_columns: list[str] | None = None,
        label_separator: str = ";",
        group_column: str | None = None,
        info_columns: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.group_column = group_column
        self.info_columns = list(info_columns or [])
        self.csv_path = csv_path
        self.image_dir = image_dir
        self.image_column = image_column
        self.label_column = label_column
        self.split_column = split_column
        self.label_columns = list(label_columns) if label_columns else None
        self.label_separator = label_separator

    def load_table(self) -> SampleTable:
        return csv_table(
            self.csv_path,
            self.image_dir,
            self.image_column,
            self.label_column,
            self.split_column,
            label_columns=self.label_columns,
            label_separator=self.label_separator,
            meta_columns=self.meta_columns,
            problems=self._table_problems,
            group_column=self.group_column,
            info_columns=self.info_columns,
        )


class NpzDataModule(ClassificationDataModule):
    """A MedMNIST-style ``.npz`` (train/val/test images and labels, 2D or 3D)."""

    def __init__(
        self, path: str | Path | None = None, class_names: list[str] | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.npz_class_names = list(class_names) if class_names else None

    def load_table(self) -> SampleTable:
        return npz_table(self.path, self.requested_spatial_dims, self.npz_class_names)
