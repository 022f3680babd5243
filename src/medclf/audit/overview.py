"""What the data looks like before any model: class counts per split, image sizes, channels
and bit depths, intensity histograms per class and a few images of each class, as tables
and as PNG figures (matplotlib's Agg canvas, no display needed).

Input is the datamodule's ``frame`` (columns ``sample``, ``path``, ``label``, ``split``; a
label is a class index, or a 0/1 tuple for multi-label data, where a sample counts for each
of its labels) and the :class:`~medclf.audit.images.ImageScan` of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclf.audit.images import HIST_BINS, ImageScan, grey_uint8, load_image
from medclf.errors import DataError

SPLIT_ORDER = ("train", "val", "test")
NO_SPLIT = "(none)"
SAMPLES_PER_CLASS = 6


@dataclass
class Overview:
    """The overview's tables and the PNG figures written for it."""

    counts: pd.DataFrame
    """One row per split (and ``all``): samples, then the count of each class."""
    images: pd.DataFrame
    """One row per image: sample, split, label, height, width, depth, channels, bit_depth,
    mean, std (``overview.csv``)."""
    formats: pd.DataFrame
    """How many images share each (channels, bit_depth, depth > 1) combination."""
    figures: dict[str, Path] = field(default_factory=dict)


def _split_names(frame: pd.DataFrame) -> np.ndarray:
    if "split" not in frame.columns:
        return np.full(len(frame), NO_SPLIT, dtype=object)
    return frame["split"].map(lambda s: s if isinstance(s, str) else NO_SPLIT).to_numpy(object)


def membership(labels: Sequence[Any], n_classes: int, multilabel: bool) -> np.ndarray:
    """(N, K) booleans: which classes each sample belongs to."""
    if multilabel:
        return np.array([list(v) for v in labels], dtype=float).reshape(-1, n_classes) > 0
    index = np.asarray(labels, dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= n_classes):
        raise DataError(f"labels must be class indices 0..{n_classes - 1}, found {index.max()}.")
    return np.eye(n_classes, dtype=bool)[index]


def _label_text(labels, class_names: Sequence[str], multilabel: bool) -> list[str]:
    names = np.asarray(list(class_names), dtype=object)
    if multilabel:
        return [";".join(names[np.asarray(v, dtype=bool)]) for v in labels]
    return list(names[np.asarray(labels, dtype=np.int64)])


def overview_tables(
    frame: pd.DataFrame, scan: ImageScan, class_names: Sequence[str], multilabel: bool = False
) -> Overview:
    """The overview's tables (no figures) from the frame and its scan."""
    if len(frame) != len(scan.stats):
        raise DataError(
            f"the image scan has {len(scan.stats)} rows for {len(frame)} samples; scan the "
            "rows of this frame."
        )
    member = membership(frame["label"], len(class_names), multilabel)
    splits = _split_names(frame)
    order = [s for s in (*SPLIT_ORDER, NO_SPLIT) if (splits == s).any()]
    rows = []
    for split in [*order, "all"]:
        mask = np.ones(len(frame), bool) if split == "all" else splits == split
        counts = dict(zip(class_names, member[mask].sum(axis=0).tolist(), strict=True))
        rows.append({"split": split, "samples": int(mask.sum())} | counts)
    images = pd.concat(
        [
            pd.DataFrame(
                {
                    "sample": frame["sample"].astype(str).to_numpy()
                    if "sample" in frame.columns
                    else frame["path"].astype(str).to_numpy(),
                    "split": splits,
                    "label": _label_text(frame["label"], class_names, multilabel),
                }
            ),
            scan.stats.reset_index(drop=True),
        ],
        axis=1,
    )
    formats = (
        images.assign(volume=images["depth"] > 1)
        .groupby(["channels", "bit_depth", "volume"], as_index=False)
        .size()
        .rename(columns={"size": "images"})
    )
    return Overview(pd.DataFrame(rows), images, formats)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png")
    partial.replace(path)
    return path


def counts_figure(counts: pd.DataFrame, class_names: Sequence[str]):
    """Grouped bars: samples of each class in each split."""
    splits = counts[counts["split"] != "all"]
    fig = _figure(max(5.0, 0.5 * len(class_names) * max(1, len(splits)) + 2), 3.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(class_names))
    for i, (_, row) in enumerate(splits.iterrows()):
        ax.bar(x + i * width, [row[c] for c in class_names], width, label=row["split"])
    ax.set_xticks(x + width * (len(splits) - 1) / 2, class_names, rotation=30, ha="right")
    ax.set(ylabel="images", title="Images per class and split")
    ax.legend()
    return fig


def sizes_figure(images: pd.DataFrame):
    """Width against height of every image (a volume's in-plane size), by split."""
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    for split, part in images.groupby("split", sort=False):
        ax.scatter(part["width"], part["height"], s=8, alpha=0.5, label=str(split))
    ax.set(xlabel="width (px)", ylabel="height (px)", title="Image sizes")
    ax.legend()
    return fig


def histograms_figure(histograms: np.ndarray, member: np.ndarray, class_names: Sequence[str]):
    """The mean intensity histogram of each class's images (each image weighs the same)."""
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    centres = (np.arange(HIST_BINS) + 0.5) / HIST_BINS
    for k, name in enumerate(class_names):
        if member[:, k].any():
            ax.plot(centres, histograms[member[:, k]].mean(axis=0), label=name)
    ax.set(xlabel="intensity (0 = black, 1 = white)", ylabel="share of pixels")
    ax.set_title("Intensity histograms per class")
    ax.legend(fontsize="small")
    return fig


def samples_figure(
    frame: pd.DataFrame,
    member: np.ndarray,
    class_names: Sequence[str],
    arrays: np.ndarray | None = None,
    dicom_window: Any = None,
    per_class: int = SAMPLES_PER_CLASS,
    seed: int = 0,
):
    """A row of up to ``per_class`` images (drawn at random, seeded) for each class."""
    rng = np.random.default_rng(seed)
    fig = _figure(1.3 * per_class + 1.2, 1.3 * len(class_names) + 0.3)
    axes = fig.subplots(len(class_names), per_class, squeeze=False)
    paths = frame["path"].to_numpy(object)
    for k, name in enumerate(class_names):
        rows = np.flatnonzero(member[:, k])
        chosen = rng.choice(rows, min(per_class, len(rows)), replace=False) if len(rows) else []
        for j, ax in enumerate(axes[k]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center")
            if j < len(chosen):
                image = load_image(paths[chosen[j]], arrays, dicom_window)
                ax.imshow(grey_uint8(image), cmap="gray", vmin=0, vmax=255)
            else:
                ax.set_axis_off()
    return fig


def data_overview(
    frame: pd.DataFrame,
    scan: ImageScan,
    class_names: Sequence[str],
    out_dir: str | Path,
    *,
    multilabel: bool = False,
    arrays: np.ndarray | None = None,
    dicom_window: Any = None,
    per_class: int = SAMPLES_PER_CLASS,
) -> Overview:
    """The overview's tables and its four figures, written to ``out_dir`` as
    ``class_counts.png``, ``image_sizes.png``, ``intensity_histograms.png`` and
    ``class_samples.png``."""
    overview = overview_tables(frame, scan, class_names, multilabel)
    member = membership(frame["label"], len(class_names), multilabel)
    out = Path(out_dir)
    figures = {
        "class_counts": counts_figure(overview.counts, class_names),
        "image_sizes": sizes_figure(overview.images),
        "intensity_histograms": histograms_figure(scan.histograms, member, class_names),
        "class_samples": samples_figure(
            frame, member, class_names, arrays, dicom_window, per_class
        ),
    }
    overview.figures = {name: _save(fig, out / f"{name}.png") for name, fig in figures.items()}
    return overview
