"""Inputs for a trained model outside training: new images from a folder or a CSV, prepared
exactly as the checkpoint's validation data was (medclf.inference.spec), test-time
augmentation views, and the combination of several models' probabilities.

A folder gives every image file under it (recursively, sorted). A CSV names one image per
row in ``image_column`` (a path, relative to the CSV's folder or absolute); the metadata
columns a metadata model was trained with must be there too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medclf.data.io import is_image_file, read_raw
from medclf.errors import ConfigError, DataError
from medclf.inference.spec import InputSpec
from medclf.models.outputs import decide

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

    def __init__(self, table: pd.DataFrame, spec: InputSpec) -> None:
        self.paths = table["path"].tolist()
        self.channels = spec.channels
        self.dicom_window = spec.dicom_window
        self.transform = spec.transform()
        self.metadata = spec.encode_metadata(
            table, "the input", "Give a CSV input with these columns."
        )
        self.spatial_dims = spec.spatial_dims

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        image = read_raw(self.paths[i], dicom_window=self.dicom_window)
        dims = image.ndim - 1
        if dims != self.spatial_dims:
            raise DataError(
                f"{self.paths[i]}: a {dims}D image, but the model takes {self.spatial_dims}D "
                "input; predict with a model trained on this kind of image."
            )
        have = image.shape[-1]
        item = {
            "image": self.transform(image=image)["image"],
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


ENSEMBLES = ("mean", "median", "vote")


def combine(probabilities: list[np.ndarray], how: str, task: str, threshold) -> np.ndarray:
    """One (N, K) array from several models' (N, K) probabilities: ``mean``, ``median`` or
    ``vote`` (each model's decision by medclf.models.outputs.decide, as the share of votes
    per class)."""
    stack = np.stack(probabilities)
    if how == "mean":
        return stack.mean(0)
    if how == "median":
        return np.median(stack, 0)
    if how == "vote":
        return np.mean([decide(p, task, threshold) for p in stack], axis=0)
    raise ConfigError(f"ensemble={how!r}: use mean, median or vote.")
