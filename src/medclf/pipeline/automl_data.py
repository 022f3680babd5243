"""What medclf-automl reads of the data before anything is trained, and what it picks from
that, each choice with its reason (logged and in the report).

Read: the samples per split and class (class balance), the task (multi-class or
multi-label), groups (patients), 2D or 3D, channels, and from a sample of the files their
size and bit depth. Picked (unless the command line sets the key): the image size, the batch
size, ``recipe=small_data`` for small sets, a short list of backbones to search, balanced
class weights for imbalanced classes, patient-level metrics for grouped data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger("medclf.automl")

SMALL_DATA = 1500  # training images below which recipe=small_data (README, "Results")
IMBALANCE = 3.0  # largest / smallest class above which classes are weighted
MAX_SIDE = 224  # the largest image side picked (pretrained backbones' native size)
SAMPLED_FILES = 64  # files whose header gives the image size and bit depth
SHORTLIST_2D_SMALL = ("resnet18", "mobilenetv2", "efficientnetb0")
SHORTLIST_2D = ("resnet18", "efficientnetb0", "densenet121")
SHORTLIST_3D = ("3d_resnet18", "3d_resnet34")


@dataclass
class DataSummary:
    """What the data is, as read before training."""

    source: str
    samples: int
    splits: dict[str, int]
    classes: dict[str, int]  # class → samples (multi-label: positives)
    task: str
    spatial_dims: int
    channels: int
    groups: int | None
    size: list[int] | None  # median image side(s) of the sampled files: [H, W] or [D, H, W]
    bit_depth: str

    @property
    def imbalance(self) -> float:
        counts = [c for c in self.classes.values() if c > 0]
        return max(counts) / min(counts) if counts else 1.0


@dataclass
class Choice:
    """One setting picked from the data: the override and why."""

    key: str
    value: Any
    reason: str
    applied: bool = True  # false: the command line set the key, this is only what it would be

    @property
    def override(self) -> str:
        value = self.value
        if isinstance(value, list | tuple):
            value = "[" + ",".join(str(v) for v in value) + "]"
        elif isinstance(value, bool):
            value = str(value).lower()
        return f"{self.key}={value}"


@dataclass
class Plan:
    summary: DataSummary
    choices: list[Choice] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)

    def overrides(self) -> list[str]:
        return [c.override for c in self.choices if c.applied]

    def as_dict(self) -> dict:
        return {
            "summary": asdict(self.summary),
            "choices": [asdict(c) for c in self.choices],
            "backbones": self.backbones,
        }


def _file_header(path: str) -> tuple[list[int], str] | None:
    """(spatial size, bit depth) from an image file's header (PIL), None if not readable so."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    depth = {"I;16": "16-bit", "I;16B": "16-bit", "I": "32-bit integer", "F": "float"}
    return [height, width], depth.get(mode, "8-bit")


def read_summary(datamodule: Any, source: str) -> DataSummary:
    """The summary of a set-up datamodule (medclf.pipeline.build.make_datamodule)."""
    frame = datamodule.frame
    splits = {str(k): int(v) for k, v in frame["split"].value_counts().items()}
    counts = datamodule.split_counts()
    total = counts[counts.columns[3:]].sum()
    classes = {str(k): int(v) for k, v in total.items()}
    groups = int(frame["group"].nunique()) if datamodule.groups else None
    arrays = datamodule.table.arrays
    sizes, depths = [], set()
    if arrays is not None:
        sizes = [list(arrays.shape[1:-1])]
        depths.add("float" if np.issubdtype(arrays.dtype, np.floating) else f"{arrays.dtype}")
    else:
        paths = list(frame["path"])
        step = max(1, len(paths) // SAMPLED_FILES)
        for path in paths[::step][:SAMPLED_FILES]:
            found = _file_header(str(path))
            if found is not None:
                sizes.append(found[0])
                depths.add(found[1])
    size = [int(v) for v in np.median(np.array(sizes), axis=0)] if sizes else None
    return DataSummary(
        source=source,
        samples=len(frame),
        splits=splits,
        classes=classes,
        task=datamodule.task,
        spatial_dims=int(datamodule.spatial_dims),
        channels=int(datamodule.channels),
        groups=groups,
        size=size,
        bit_depth=", ".join(sorted(depths)) or "unknown (not an image file format with a header)",
    )


def _given(train_argv: list[str], key: str) -> bool:
    """Whether the command line sets ``key`` (or the group it belongs to, for a group)."""
    keys = {a.split("=", 1)[0].lstrip("+~") for a in train_argv}
    return key in keys


def plan(summary: DataSummary, cfg: DictConfig, train_argv: list[str], backbones=None) -> Plan:
    """The settings picked from ``summary``; the command line's keys are kept (their choice
    is listed as not applied)."""
    from medclf.models.registry import BACKBONES

    found = Plan(summary)
    train = summary.splits.get("train", 0)

    def add(key: str, value: Any, reason: str) -> None:
        found.choices.append(Choice(key, value, reason, applied=not _given(train_argv, key)))

    small = train < SMALL_DATA
    fixed = [
        a.split("=", 1)[1]
        for a in train_argv
        if a.split("=", 1)[0].lstrip("+") in ("backbone", "backbone.name")
    ]
    if fixed:
        found.backbones, reason = [fixed[-1]], "set on the command line: not searched"
    elif backbones:
        found.backbones = [str(b) for b in backbones]
        reason = "given (automl.backbones)"
    elif summary.spatial_dims == 3:
        found.backbones, reason = list(SHORTLIST_3D), "3D volumes: MONAI's 3D ResNets"
    elif small:
        found.backbones = list(SHORTLIST_2D_SMALL)
        reason = f"{train} training images (< {SMALL_DATA}): small, fast networks"
    else:
        found.backbones = list(SHORTLIST_2D)
        reason = f"{train} training images: mid-sized networks"
    log.info("backbones to search: %s (%s)", ", ".join(found.backbones), reason)
    if small:
        add(
            "recipe",
            "small_data",
            f"{train} training images (< {SMALL_DATA}): the small-data "
            "recipe (batch 16, weight EMA, label smoothing, warm-up)",
        )
    if summary.spatial_dims == 2 and summary.size:
        minimum = (
            max(BACKBONES[b].min_size for b in found.backbones if b in BACKBONES)
            if any(b in BACKBONES for b in found.backbones)
            else 1
        )
        side = min(summary.size)
        size = int(min(MAX_SIDE, max(32, minimum, int(np.ceil(side / 8) * 8))))
        why = (
            f"median image {summary.size[0]}x{summary.size[1]} px: its smaller side rounded up "
            f"to a multiple of 8, at least 32 and the backbones' smallest input ({minimum}), "
            f"at most {MAX_SIDE}"
        )
        add("datamodule.image_size", size, why)
    elif summary.spatial_dims == 3:
        log.info("3D volumes (median %s): datamodule.volume_size as configured", summary.size)
    batch = 16 if small else 32
    batch = int(max(2, min(batch, 2 ** int(np.log2(max(2, train // 4))))))
    add(
        "datamodule.batch_size",
        batch,
        f"{train} training images: batch {batch} (at least 4 "
        "steps an epoch" + (", the small-data recipe's 16" if small else "") + ")",
    )
    if summary.task != "multilabel" and summary.imbalance > IMBALANCE:
        add(
            "loss.class_weights",
            "balanced",
            f"classes imbalanced {summary.imbalance:.1f}:1 "
            f"(> {IMBALANCE:g}:1): the loss weighs each class by its inverse frequency",
        )
    if summary.groups:
        add(
            "eval.aggregate",
            "mean",
            f"{summary.groups} groups (patients): splits and folds keep "
            "them whole; the report adds patient-level metrics (images averaged per patient)",
        )
    log.info(
        "data: %d samples (%s), %s, %dD, %d channel(s), %s, image size %s; classes %s",
        summary.samples,
        ", ".join(f"{k} {v}" for k, v in sorted(summary.splits.items())),
        summary.task,
        summary.spatial_dims,
        summary.channels,
        summary.bit_depth,
        summary.size,
        summary.classes,
    )
    for choice in found.choices:
        state = "" if choice.applied else " (not applied: the command line sets it)"
        log.info("picked %s: %s%s", choice.override, choice.reason, state)
    return found
