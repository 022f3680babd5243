"""Where samples come from: the packaged digits demo, a class-per-folder tree, or a CSV.

Each source returns a :class:`SampleTable`: one row per sample with its id, where its image
is (a file path or an index into in-memory arrays), its class index and its split (or None
when the split is to be drawn). Splitting is stratified and seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medclf.data.io import IMAGE_SUFFIXES, is_image_file
from medclf.errors import ConfigError, DataError, did_you_mean

SPLITS = ("train", "val", "test")


@dataclass
class SampleTable:
    """Samples (columns ``sample``, ``path``, ``label``, ``split``) and their class names.

    ``arrays`` holds in-memory images (N, H, W, C) when ``path`` is an index into it.
    """

    frame: pd.DataFrame
    class_names: list[str]
    arrays: np.ndarray | None = None


def _natural_sorted(values) -> list[str]:
    values = sorted({str(v) for v in values})
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return values


def digits_table() -> SampleTable:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes, 0–16 ink)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    n = len(images)
    frame = pd.DataFrame(
        {
            "sample": [f"digit_{i:04d}" for i in range(n)],
            "path": np.arange(n),
            "label": digits.target.astype(int),
            "split": None,
        }
    )
    return SampleTable(frame, [str(c) for c in range(10)], arrays=images)


def _class_folders(root: Path) -> dict[str, list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {}
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if is_image_file(p))
        if not files:
            raise DataError(
                f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                "Add images or remove the folder."
            )
        found[folder.name] = files
    return found


def folder_table(data_dir: str | Path) -> SampleTable:
    """``data_dir/<class>/*.png`` or ``data_dir/{train,val,test}/<class>/*.png``."""
    if data_dir in (None, "", "???"):
        raise ConfigError("datamodule.data_dir is not set: datamodule.data_dir=/path/to/images")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"datamodule.data_dir={str(data_dir)!r}: no such directory. It must hold one "
            "sub-folder per class, or train/ val/ test/ folders that do."
        )
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    layout = {s: _class_folders(root / s) for s in split_dirs} if split_dirs else None
    if layout is None:
        layout = {None: _class_folders(root)}
    class_names = _natural_sorted(name for per in layout.values() for name in per)
    if not class_names:
        raise DataError(f"{root}: no class folders found; expected data_dir/<class>/<image>.")
    index = {name: i for i, name in enumerate(class_names)}
    rows = [
        (str(path.relative_to(root)), str(path), index[name], split)
        for split, per in layout.items()
        for name, files in per.items()
        for path in files
    ]
    frame = pd.DataFrame(rows, columns=["sample", "path", "label", "split"])
    return SampleTable(frame, class_names)


def csv_table(
    csv_path: str | Path,
    image_dir: str | Path | None = None,
    image_column: str = "image",
    label_column: str = "label",
    split_column: str | None = None,
) -> SampleTable:
    """A table with an image-path column (absolute or relative to ``image_dir``) and labels."""
    if csv_path in (None, "", "???"):
        raise ConfigError("datamodule.csv_path is not set: datamodule.csv_path=/path/to/labels.csv")
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"datamodule.csv_path={str(csv_path)!r}: no such file.")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{csv_path}: cannot parse as CSV ({exc}).") from None
    for key, column in (("image_column", image_column), ("label_column", label_column)) + (
        (("split_column", split_column),) if split_column else ()
    ):
        if column not in table.columns:
            hint = did_you_mean(column, table.columns)
            raise DataError(
                f"{csv_path}: no column {column!r} (datamodule.{key}).{hint}"
                f" Columns are: {', '.join(table.columns)}."
            )
    if table.empty:
        raise DataError(f"{csv_path}: the table has no rows.")
    for key, column in (("image_column", image_column), ("label_column", label_column)):
        blank = np.flatnonzero(table[column].str.strip() == "")
        if blank.size:
            raise DataError(
                f"{csv_path}: {blank.size} row(s) have an empty {column!r} "
                f"(datamodule.{key}), first on line {blank[0] + 2}. Fill them in or remove "
                "those rows."
            )
    base = Path(image_dir).expanduser() if image_dir else csv_path.parent
    paths = [p if Path(p).is_absolute() else str(base / p) for p in table[image_column]]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(
            f"{csv_path}: {len(missing)} image file(s) of column {image_column!r} not found, "
            f"first {missing[0]!r}. Paths are absolute or relative to datamodule.image_dir "
            f"({str(base)!r})."
        )
    class_names = _natural_sorted(table[label_column])
    index = {name: i for i, name in enumerate(class_names)}
    split = table[split_column].str.lower().replace("", None) if split_column else None
    if split is not None:
        bad = sorted(set(split.dropna()) - set(SPLITS))
        if bad:
            raise DataError(
                f"{csv_path}: column {split_column!r} holds {bad}; allowed: train, val, test."
            )
    frame = pd.DataFrame(
        {
            "sample": table[image_column].to_numpy(),
            "path": paths,
            "label": table[label_column].map(index).astype(int).to_numpy(),
            "split": split.to_numpy() if split is not None else None,
        }
    )
    return SampleTable(frame, class_names)


def assign_splits(
    frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """Fill missing splits by stratified, seeded sampling; given splits are kept.

    Fractions are of the samples without a split (or marked train): with nothing given,
    ``test_fraction`` and ``val_fraction`` of all samples are drawn; with a test split given,
    ``val_fraction`` of the train part.
    """
    from sklearn.model_selection import train_test_split

    frame = frame.copy()
    given = set(frame["split"].dropna()) - {"train"}
    pool = frame["split"].isna() | (frame["split"] == "train")
    frame.loc[pool, "split"] = "train"
    wanted = {"test": test_fraction, "val": val_fraction}
    remaining = 1.0
    for split, fraction in wanted.items():
        if split in given or fraction <= 0:
            continue
        candidates = frame.index[frame["split"] == "train"]
        if candidates.empty:
            raise DataError(
                f"no samples without a given split (or marked train) to draw the {split} "
                "split from: every sample is already val or test. Mark some as train."
            )
        share = fraction / remaining
        labels = frame.loc[candidates, "label"]
        counts = labels.value_counts()
        stratify = labels if counts.min() >= 2 else None
        if stratify is None:
            rare = counts.idxmin()
            raise DataError(
                f"class index {rare} has {counts.min()} sample(s) in the train pool; a "
                "stratified split needs at least 2 per class. Add samples or give the split "
                "explicitly (train/ val/ test/ folders or a split column)."
            )
        try:
            _, picked = train_test_split(
                candidates, test_size=share, stratify=stratify, random_state=seed
            )
        except ValueError as exc:
            raise DataError(
                f"cannot draw a stratified {split} split of {fraction:.0%} from "
                f"{len(candidates)} samples: {exc}. Lower datamodule.{split}_fraction "
                "or add samples."
            ) from None
        frame.loc[picked, "split"] = split
        remaining -= fraction
    return frame
