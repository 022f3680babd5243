"""Inputs for a trained model outside training: new images from a folder or a CSV, prepared
exactly as the checkpoint's validation data was (channels, resize, metadata encoding), and
test-time augmentation views.

A folder gives every image file under it (recursively, sorted). A CSV names one image per
row in ``image_column`` (a path, relative to the CSV's folder or absolute); the metadata
columns a metadata model was trained with must be there too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medclf.data.io import convert_channels, is_image_file, read_image
from medclf.data.metadata import MetadataEncoder
from medclf.data.transforms import VolumeTransform, build_transform
from medclf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def input_table(source: str | Path, image_column: str = "path") -> pd.DataFrame:
    """``sample`` (the path as given) and ``path`` (resolved) per image, plus the CSV's other
    columns."""
    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if is_image_file(p))
        if not paths:
            raise DataError(f"input={source}: no image files in this folder (or below it).")
        return pd.DataFrame(
            {"sample": [str(p.relative_to(source)) for p in paths], "path": [str(p) for p in paths]}
        )
    if source.is_file() and source.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(source)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise DataError(f"input={source}: not a readable CSV ({exc}).") from None
        if image_column not in table.columns:
            raise ConfigError(
                f"input={source} has no column {image_column!r} (columns: "
                f"{', '.join(map(str, table.columns))}); set image_column=<the column of paths>."
            )
        if table.empty:
            raise DataError(f"input={source}: the CSV has no rows.")
        samples = table[image_column].astype(str)
        resolved = [p if Path(p).is_absolute() else str(source.parent / p) for p in samples]
        table = table.drop(columns=[image_column])
        table.insert(0, "path", resolved)
        table.insert(0, "sample", samples)
        return table
    raise ConfigError(
        f"input={source}: give a folder of images or a .csv with an {image_column!r} column."
    )


class PredictDataset(Dataset):
    """Images (and encoded metadata) of ``table``, prepared as for the checkpoint's
    validation split; ``channel_changes`` counts images converted to the model's channels."""

    def __init__(self, table: pd.DataFrame, spec: dict[str, Any]) -> None:
        self.paths = table["path"].tolist()
        self.channels = spec["channels"]
        self.dicom_window = spec.get("dicom_window")
        if spec["spatial_dims"] == 3:
            self.transform = VolumeTransform(spec.get("volume_size") or [32, 32, 32])
        else:
            self.transform = build_transform(spec["image_size"])
        self.metadata = None
        if spec["metadata"]:
            names = [c["name"] for c in spec["metadata"]]
            missing = [n for n in names if n not in table.columns]
            if missing:
                raise ConfigError(
                    f"the model was trained with metadata columns {names}; the input lacks "
                    f"{missing}. Give a CSV input with these columns."
                )
            self.metadata = MetadataEncoder(spec["metadata"]).transform(table[names])
        self.spatial_dims = spec["spatial_dims"]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        image = read_image(self.paths[i], dicom_window=self.dicom_window)
        dims = image.ndim - 1
        if dims != self.spatial_dims:
            raise DataError(
                f"{self.paths[i]}: a {dims}D image, but the model takes {self.spatial_dims}D "
                "input; predict with a model trained on this kind of image."
            )
        have = image.shape[-1]
        item = {
            "image": self.transform(image=convert_channels(image, self.channels))["image"],
            "index": i,
            "converted": have != self.channels,
        }
        if self.metadata is not None:
            item["metadata"] = torch.from_numpy(self.metadata[i])
        return item


def tta_views(image: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The first ``n`` of a fixed list of flipped and rotated views of a batch (N, C, *spatial),
    the unchanged batch first (as AUCMEDI's ``predict_augmenting``, but deterministic).

    2D: identity, horizontal flip, vertical flip, 180° turn, then (square images only) 90°,
    270°, transpose, anti-transpose: at most 8 (4 for non-square images). 3D: identity and
    flips along W, H, D and their combinations: at most 8."""
    spatial = image.ndim - 2
    if spatial == 2:
        h, w = -2, -1
        views = [
            lambda x: x,
            lambda x: x.flip(w),
            lambda x: x.flip(h),
            lambda x: x.flip(h, w),
        ]
        if image.shape[-1] == image.shape[-2]:
            views += [
                lambda x: x.rot90(1, (h, w)),
                lambda x: x.rot90(3, (h, w)),
                lambda x: x.transpose(h, w),
                lambda x: x.flip(h, w).transpose(h, w),
            ]
    else:
        d, h, w = -3, -2, -1
        axes = [(), (w,), (h,), (d,), (h, w), (d, w), (d, h), (d, h, w)]
        views = [(lambda x, a=a: x.flip(a) if a else x) for a in axes]
    if not 1 <= n <= len(views):
        raise ConfigError(
            f"tta={n}: use 1 (no augmentation) to {len(views)} views for these "
            f"{'square ' if spatial == 2 and len(views) == 8 else ''}{spatial}D inputs."
        )
    return [view(image) for view in views[:n]]


def combine(probabilities: list[np.ndarray], how: str, task: str, threshold: float) -> np.ndarray:
    """One (N, K) array from several models' (N, K) probabilities: ``mean``, ``median`` or
    ``vote`` (majority of the models' predicted classes, as the share of votes per class;
    multi-label: per label at ``threshold``)."""
    stack = np.stack(probabilities)
    if how == "mean":
        return stack.mean(0)
    if how == "median":
        return np.median(stack, 0)
    if how == "vote":
        if task == "multilabel":
            return (stack >= threshold).mean(0)
        k = stack.shape[-1]
        votes = np.eye(k)[stack.argmax(-1)]  # (models, N, K)
        return votes.mean(0)
    raise ConfigError(f"ensemble={how!r}: use mean, median or vote.")


def predicted_labels(probs: np.ndarray, class_names: list[str], task: str, threshold: float):
    """The predicted class name per row (multi-label: the ``;``-joined names at or above
    ``threshold``; binary: the second class when its probability reaches it)."""
    if task == "multilabel":
        return [
            ";".join(n for n, p in zip(class_names, row, strict=True) if p >= threshold)
            for row in probs
        ]
    if task == "binary":
        return [class_names[int(row[1] >= threshold)] for row in probs]
    return [class_names[i] for i in probs.argmax(1)]
