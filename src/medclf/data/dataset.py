"""One split as a torch Dataset (:class:`ImageDataset`), and how many loader workers
``num_workers: auto`` starts (:func:`auto_workers`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medclf.data.io import read_raw, storage_form
from medclf.data.sampling import derived_seed


class ImageDataset(Dataset):
    """One split as dicts: ``image`` (C, H, W) or (C, D, H, W) float, ``target`` (class index
    or 0/1 vector), ``index`` (row of the split frame) and, with metadata, ``metadata``.

    ``decoded`` (the decoded cache, medclf.data.decoded) holds the split's images decoded and
    fitted to the input size, row-aligned with ``frame``; then no file is read again.
    ``transform`` fits, converts to ``channels`` and augments (medclf.data.transforms)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        arrays: np.ndarray | None,
        channels: int,
        transform,
        targets: np.ndarray,
        metadata: np.ndarray | None = None,
        dicom_window: Any = None,
        decoded: Sequence[np.ndarray] | None = None,
        seed: int | None = None,
    ) -> None:
        self.paths = frame["path"].tolist()
        self.seed = seed
        self.targets = targets
        self.arrays = arrays
        self.channels = channels
        self.transform = transform
        self.metadata = metadata
        self.dicom_window = dicom_window
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.paths)

    def raw(self, i: int) -> np.ndarray:
        """Row ``i`` as decoded (uint8, uint16 or float32): from the decoded cache, fitted to
        the input size already, or read now (the transform fits it the same way)."""
        if self.decoded is not None:
            return self.decoded[i]
        if self.arrays is not None:
            return storage_form(np.asarray(self.arrays[self.paths[i]]))
        return read_raw(self.paths[i], dicom_window=self.dicom_window)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: a row, or ``(epoch, row)`` from the train split's EpochSampler, whose
        augmentation is then seeded from (seed, epoch, row) alone."""
        if isinstance(key, tuple):
            epoch, i = key
            if self.seed is not None and hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(derived_seed(self.seed, epoch, i))
        else:
            i = key
        item = {
            "image": self.transform(image=self.raw(i))["image"],
            "target": torch.as_tensor(self.targets[i]),
            "index": i,
        }
        if self.metadata is not None:
            item["metadata"] = torch.from_numpy(self.metadata[i])
        return item


class IndexDataset(Dataset):
    """A split's samples without their images (``datamodule.on_device``): ``index``,
    ``target`` and ``metadata``; the datamodule gathers the images from the decoded set on
    the device once the batch is there."""

    def __init__(self, targets: np.ndarray, metadata: np.ndarray | None = None) -> None:
        # copies: the table's arrays are read-only, which torch warns about (and they are small)
        self.targets = torch.tensor(np.asarray(targets))
        self.metadata = torch.tensor(np.asarray(metadata)) if metadata is not None else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        i = key[1] if isinstance(key, tuple) else key
        item = {"target": self.targets[i], "index": i}
        if self.metadata is not None:
            item["metadata"] = self.metadata[i]
        return item


def auto_workers(on_gpu: bool, processes: int = 1, cores: int | None = None) -> int:
    """Loader workers for ``num_workers: auto``. Training on CPU: 2 (the model step needs the
    cores, and 2 workers already decode 64 px JPEGs about 24 times faster than resnet18
    trains on them). On GPUs: the cores this process may use, shared among the node's
    ``processes`` training processes, at most 16 each (resnet50 at 224 px, bf16, on one H100
    trains about 2000 images/s; one worker decodes and augments about 150-190 of them)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    if not on_gpu:
        return min(2, cores)
    return max(1, min(16, cores // max(processes, 1)))
