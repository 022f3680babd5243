"""The data modules' loaders (a mixin of medclf.data.datamodule.ClassificationDataModule):
the train split's sampler, the number of workers, the train/val/test DataLoaders, the loaders
for what is fitted after training, and ``on_device``'s batches (images added on the device).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from medclf.compat import epochs_processed
from medclf.data.dataset import IndexDataset, auto_workers
from medclf.data.sampling import EpochSampler, eval_sampler
from medclf.data.transforms import seed_worker


class Loaders:
    """DataLoaders of the set-up splits (``datasets``), by the datamodule's settings."""

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

    def _loader(self, split: str, drop_last: bool = False, sampler=None, lightning=False):
        """The split's DataLoader. It has its own generator (for the workers' base seed), so
        making an iterator never draws from torch's global one (dropout's, reseeded per
        epoch by medclf.pipeline.resume.ResumeState, whether or not the run was resumed).
        ``lightning``: the loaders Lightning's loops read, whose batches pass
        :meth:`on_after_batch_transfer`: with ``on_device`` indices and targets only, in this
        process; with ``compact`` 8-bit images as uint8."""
        dataset = self.datasets[split]
        workers = self.workers()
        collate = None
        if lightning and self.device_images is not None:
            dataset, workers = IndexDataset(dataset.targets, dataset.metadata), 0
        elif lightning and self.compact:
            dataset = copy.copy(dataset)
            dataset.transform = copy.copy(dataset.transform)
            dataset.transform.compact = True
            collate = collate_compact
        return DataLoader(
            dataset,
            generator=torch.Generator().manual_seed(self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=collate,
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
        dataset = copy.copy(self.datasets[split])
        dataset.transform = self._transform(train=False)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        sampler = self._train_sampler()
        return self._loader("train", self.drop_last, sampler, lightning=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=eval_sampler(self.datasets["val"]), lightning=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", sampler=eval_sampler(self.datasets["test"]), lightning=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device the batch was moved to: a compact (uint8) batch scaled to float32
        in [0, 1] (in the precision's input dtype), or with ``on_device`` the batch's images
        gathered (and, training, augmented)."""
        if not isinstance(batch, dict):
            return batch
        image = batch.get("image")
        if image is not None and image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        elif image is None and self.device_images is not None:
            trainer = self.trainer
            split = "train" if trainer.training else "test" if trainer.testing else "val"
            image = self.device_images.batch_images(split, batch["index"], trainer.current_epoch)
        else:
            return batch
        trainer = self.trainer
        precision = getattr(trainer, "precision_plugin", None) if trainer is not None else None
        batch["image"] = precision.convert_input(image) if precision is not None else image
        return batch


def collate_compact(items: list[dict]) -> dict:
    """``default_collate``, with the uint8 images of a batch that also holds float ones
    (an augmentation that returned floats for some samples) scaled to float32 first."""
    if len({item["image"].dtype for item in items}) > 1:
        items = [
            {**item, "image": item["image"].float().div_(255.0)}
            if item["image"].dtype == torch.uint8
            else item
            for item in items
        ]
    return default_collate(items)
