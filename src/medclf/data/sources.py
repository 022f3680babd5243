"""Where samples come from: the packaged digits demo, a class-per-folder tree, a CSV, or a
MedMNIST-style ``.npz``.

Each source returns a :class:`SampleTable`: one row per sample with its id, where its image
is (a file path or an index into in-memory arrays), its label and its split (or None when
the split is to be drawn). A label is a class index (single-label) or a tuple of 0/1 per
class (multi-label). Drawing the missing splits is medclf.data.splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medclf.data.groups import groups_from_pattern
from medclf.data.io import IMAGE_SUFFIXES, image_files, to_unit_float
from medclf.errors import ConfigError, DataError, Problems, did_you_mean

SPLITS = ("train", "val", "test")


@dataclass
class SampleTable:
    """Samples (columns ``sample``, ``path``, ``label``, ``split``) and their class names.

    ``arrays`` holds in-memory images (N, H, W, C) or volumes (N, D, H, W, C) when ``path``
    is an index into it. ``meta`` holds the raw metadata columns (strings, NaN when blank),
    row-aligned with ``frame``.
    """

    frame: pd.DataFrame
    class_names: list[str]
    arrays: np.ndarray | None = None
    multilabel: bool = False
    meta: pd.DataFrame | None = None
    info: pd.DataFrame | None = None  # columns kept for the report (subgroups), not the model


def label_matrix(labels: pd.Series | np.ndarray, multilabel: bool) -> np.ndarray:
    """Class indices (N,) for single-label data, a 0/1 matrix (N, C) for multi-label data."""
    if multilabel:
        return np.array([list(v) for v in labels], dtype=np.float32)
    return np.asarray(labels, dtype=np.int64)


def _natural_sorted(values) -> list[str]:
    values = sorted({str(v) for v in values})
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return values


def _required_file(value: str | Path | None, key: str, example: str) -> Path:
    """The file a ``datamodule.KEY`` names: ConfigError when unset, DataError when missing."""
    if value in (None, "", "???"):
        raise ConfigError(f"datamodule.{key} is not set: datamodule.{key}={example}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataError(f"datamodule.{key}={str(path)!r}: no such file.")
    return path


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


def _class_folders(root: Path) -> dict[str, list[str]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {}
    for folder in folders:
        files = image_files(folder)
        if not files:
            raise DataError(
                f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                "Add images or remove the folder."
            )
        found[folder.name] = files
    return found


def folder_table(data_dir: str | Path, group_pattern: str | None = None) -> SampleTable:
    """``data_dir/<class>/*.png`` or ``data_dir/{train,val,test}/<class>/*.png``; with
    ``group_pattern``, each file's group is the pattern's first group in its file name."""
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
    prefix = len(os.path.join(str(root), ""))
    rows = [
        (path[prefix:], path, index[name], split)
        for split, per in layout.items()
        for name, files in per.items()
        for path in files
    ]
    frame = pd.DataFrame(rows, columns=["sample", "path", "label", "split"])
    if group_pattern:
        frame["group"] = groups_from_pattern(frame["path"], group_pattern)
    return SampleTable(frame, class_names)


def csv_table(
    csv_path: str | Path,
    image_dir: str | Path | None = None,
    image_column: str = "image",
    label_column: str | None = "label",
    split_column: str | None = None,
    label_columns: list[str] | None = None,
    label_separator: str = ";",
    meta_columns: list[str] | None = None,
    problems: Problems | None = None,
    group_column: str | None = None,
    info_columns: list[str] | None = None,
) -> SampleTable:
    """A table with an image-path column (absolute or relative to ``image_dir``) and labels.

    Labels: one ``label_column`` of class names (multi-label when a value holds
    ``label_separator``, e.g. ``effusion;nodule``), or several ``label_columns`` of 0/1.
    Problems that leave the rest of the table usable (repeated rows, missing image files:
    those rows are left out) go to ``problems`` when given, so that the caller can check
    the remaining images too and report everything at once; otherwise they raise.
    ``group_column`` names each sample's group (patient): no cell may be empty.
    """
    csv_path = _required_file(csv_path, "csv_path", "/path/to/labels.csv")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{csv_path}: cannot parse as CSV ({exc}).") from None
    label_keys = (
        [("label_columns", c) for c in label_columns]
        if label_columns
        else [("label_column", label_column)]
    )
    wanted = [("image_column", image_column), *label_keys]
    wanted += [("split_column", split_column)] if split_column else []
    wanted += [("meta_columns", c) for c in meta_columns or []]
    wanted += [("group_column", group_column)] if group_column else []
    wanted += [("eval.subgroups", c) for c in info_columns or []]
    fatal = Problems()
    for key, column in wanted:
        if column not in table.columns:
            hint = did_you_mean(column, table.columns)
            where = key if key.startswith("eval.") else f"datamodule.{key}"
            fatal.add(
                f"{csv_path}: no column {column!r} ({where}).{hint}"
                f" Columns are: {', '.join(table.columns) or '(none)'}."
            )
    if table.empty:
        fatal.add(f"{csv_path}: the table has no rows.")
    fatal.raise_any()
    usable = problems if problems is not None else Problems()  # the rest stays checkable
    blank_labels = False
    grouping = [("group_column", group_column)] if group_column else []
    for key, column in [("image_column", image_column), *label_keys, *grouping]:
        blank = np.flatnonzero(table[column].str.strip() == "")
        if blank.size:
            blank_labels |= key not in ("image_column", "group_column")
            fatal.add(
                f"{csv_path}: {blank.size} row(s) have an empty {column!r} "
                f"(datamodule.{key}), first on line {blank[0] + 2}. Fill them in or remove "
                "those rows."
            )
    repeated = table[image_column][table[image_column].duplicated(keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        lines = [i + 2 for i in repeated.index[repeated == first]]
        usable.add(
            f"{csv_path}: {repeated.nunique()} image(s) of column {image_column!r} are listed "
            f"more than once, first {first!r} on lines {', '.join(map(str, lines))}. Each "
            "sample must appear once: remove the repeated rows (or merge their labels)."
        )
    base = Path(image_dir).expanduser() if image_dir else csv_path.parent
    paths = [p if Path(p).is_absolute() else str(base / p) for p in table[image_column]]
    found = np.array([Path(p).is_file() for p in paths])
    missing = [p for p, ok in zip(paths, found, strict=True) if not ok]
    if missing:
        usable.add(
            f"{csv_path}: {len(missing)} image file(s) of column {image_column!r} not found, "
            f"first {missing[0]!r}. Paths are absolute or relative to datamodule.image_dir "
            f"({str(base)!r})."
        )
    split = table[split_column].str.lower().replace("", None) if split_column else None
    if split is not None:
        bad = sorted(set(split.dropna()) - set(SPLITS))
        if bad:
            fatal.add(
                f"{csv_path}: column {split_column!r} holds {bad}; allowed: train, val, test."
            )
    if not blank_labels:  # labels are parsed only when none is blank
        with fatal.check():
            class_names, labels, multilabel = _csv_labels(
                csv_path, table, label_column, label_columns, label_separator
            )
    if problems is None:
        for message in usable.messages:
            fatal.add(message)
    fatal.raise_any()
    frame = pd.DataFrame(
        {
            "sample": table[image_column].to_numpy(),
            "path": paths,
            "label": labels,
            "split": split.to_numpy() if split is not None else None,
        }
    )
    if group_column:
        frame["group"] = table[group_column].str.strip().to_numpy()
    meta = _metadata_frame(table, meta_columns) if meta_columns else None
    info = _metadata_frame(table, info_columns) if info_columns else None
    if missing:  # reported in problems; the other rows are still checked
        frame = frame[found]  # the index stays the CSV row (line - 2) for later messages
        meta = meta[found] if meta is not None else None
        info = info[found] if info is not None else None
    return SampleTable(frame, class_names, multilabel=multilabel, meta=meta, info=info)


MISSING_MARKERS = {"", "na", "n/a", "nan", "null", "none", "?", "-"}


def _metadata_frame(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Metadata cells stripped of spaces; blanks and common markers (NA, n/a, ?) → NaN."""
    meta = table[list(columns)].apply(lambda col: col.str.strip())
    return meta.mask(meta.apply(lambda col: col.str.lower().isin(MISSING_MARKERS)))


def _csv_labels(csv_path, table, label_column, label_columns, separator):
    """(class names, per-row labels, multilabel?) from one name column or several 0/1 columns."""
    if label_columns:
        values = table[list(label_columns)].apply(lambda col: col.str.strip().str.lower())
        truth = {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}
        for column in label_columns:
            bad = sorted(set(values[column]) - set(truth))
            if bad:
                raise DataError(
                    f"{csv_path}: column {column!r} (datamodule.label_columns) must hold 0 or 1 "
                    f"per row, found {bad[:3]}."
                )
        labels = [tuple(truth[v] for v in row) for row in values.itertuples(index=False)]
        return list(label_columns), labels, True
    names = table[label_column].str.strip()
    if names.str.contains(separator, regex=False).any():
        per_row = [{n.strip() for n in v.split(separator) if n.strip()} for v in names]
        class_names = _natural_sorted(set().union(*per_row))
        labels = [tuple(int(c in row) for c in class_names) for row in per_row]
        return class_names, labels, True
    class_names = _natural_sorted(names)
    index = {name: i for i, name in enumerate(class_names)}
    return class_names, names.map(index).astype(int).to_numpy(), False


def npz_table(
    path: str | Path, spatial_dims: int | str = "auto", class_names: list[str] | None = None
) -> SampleTable:
    """The MedMNIST ``.npz`` layout: ``{train,val,test}_images`` and ``..._labels`` arrays.

    Images are (N, H, W) grey, (N, H, W, C) with C <= 4, (N, D, H, W) volumes or
    (N, D, H, W, C); ``spatial_dims`` settles the (N, H, W, C) / (N, D, H, W) ambiguity.
    Labels (N,) or (N, 1) are class indices; (N, L) with L > 1 are multi-label 0/1.
    Images other than uint8/uint16 are scaled to [0, 1] here, once for the whole file, so
    every sample gets the same scale (per-sample scaling would depend on each sample's range).
    """
    path = _required_file(path, "path", "/path/to/data.npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            wanted = {f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")}
            arrays = {key: data[key] for key in keys & wanted}
    except Exception as exc:
        raise DataError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc}).") from None
    splits = [s for s in SPLITS if f"{s}_images" in keys]
    if "train" not in splits:
        raise DataError(
            f"{path}: no 'train_images' array (found {sorted(keys)}); the MedMNIST layout has "
            "train_images/train_labels and optionally val_* and test_*."
        )
    images, labels, split_names = [], [], []
    for split in splits:
        if f"{split}_labels" not in keys:
            raise DataError(f"{path}: '{split}_images' has no matching '{split}_labels' array.")
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DataError(
                f"{path}: {split}_images has {len(x)} samples but {split}_labels {len(y)}."
            )
        images.append(x)
        labels.append(y.reshape(len(y), -1) if y.ndim > 1 else y[:, None])
        split_names += [split] * len(x)
    images = _with_channels(np.concatenate(images), spatial_dims, path)
    if not (images.dtype.kind == "b" or (images.dtype.kind == "u" and images.dtype.itemsize <= 2)):
        images = to_unit_float(images)
    labels = np.concatenate(labels)
    multilabel = labels.shape[1] > 1
    _check_npz_labels(labels, multilabel, path)
    n_classes = labels.shape[1] if multilabel else int(labels.max()) + 1
    names = list(class_names) if class_names else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ConfigError(
            f"datamodule.class_names has {len(names)} names but {path} has {n_classes} classes."
        )
    frame = pd.DataFrame(
        {
            "sample": [f"{s}_{i:05d}" for i, s in enumerate(split_names)],
            "path": np.arange(len(images)),
            "label": [tuple(int(v) for v in row) for row in labels]
            if multilabel
            else labels[:, 0].astype(int),
            "split": split_names
            if len(splits) == 3
            else [s if s != "train" else None for s in split_names],
        }
    )
    return SampleTable(frame, names, arrays=images, multilabel=multilabel)


def _check_npz_labels(labels: np.ndarray, multilabel: bool, path: Path) -> None:
    """Class indices must be integers >= 0; multi-label columns 0 or 1."""
    try:
        values = labels.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: labels must be numbers, found dtype {labels.dtype}.") from None
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
    if multilabel:
        bad |= values > 1
    if bad.any():
        allowed = "0 or 1 per label (multi-label)" if multilabel else "class indices >= 0"
        raise DataError(f"{path}: labels must be {allowed}; found {values[bad][0]:g}.")


def _with_channels(images: np.ndarray, spatial_dims: int | str, path: Path) -> np.ndarray:
    """Add a trailing channel axis where the layout has none (see :func:`npz_table`)."""
    requested = spatial_dims
    if spatial_dims == "auto":
        if images.ndim == 3:
            spatial_dims = 2
        elif images.ndim == 4:
            spatial_dims = 2 if images.shape[-1] <= 4 else 3
        else:
            spatial_dims = 3
    has_channels = images.ndim == int(spatial_dims) + 2
    if images.ndim not in (int(spatial_dims) + 1, int(spatial_dims) + 2):
        raise DataError(
            f"{path}: images of shape {images.shape} do not fit spatial_dims={requested}; "
            "expected (N, H, W[, C]) for 2D or (N, D, H, W[, C]) for 3D."
        )
    return images if has_channels else images[..., None]
