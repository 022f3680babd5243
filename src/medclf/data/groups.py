"""Groups (patients, lesions, studies): samples that belong together and must stay in one
split, and the leakage check every run makes before training: no group in two splits (an
error) and no byte-identical image in two splits (a warning, or an error with
``datamodule.duplicates=error``).

A table's ``group`` column holds each sample's group (None without groups). The CSV
datamodule reads it from ``datamodule.group_column``; the folder datamodule takes the first
group of the regular expression ``datamodule.group_pattern`` matched against the file name.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from medclf.data.checkcache import remember_values, stamped_values, stamps
from medclf.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DUPLICATES = ("warn", "error", "ignore")
SPLIT_ORDER = ("train", "val", "test")
CONTENT_TABLE = "content_sha1"  # each file's SHA-1, in the image check's cache


def has_groups(frame: pd.DataFrame) -> bool:
    return "group" in frame.columns and frame["group"].notna().any()


def groups_from_pattern(paths: Sequence[str], pattern: str) -> list[str]:
    """The group of each file: the first group of ``pattern`` searched in its file name."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"datamodule.group_pattern={pattern!r} is not a regular expression ({exc})."
        ) from None
    if regex.groups < 1:
        raise ConfigError(
            f"datamodule.group_pattern={pattern!r} has no group: put the part of the file name "
            r"that names the patient in parentheses, e.g. '^(P\d+)_'."
        )
    groups, unmatched = [], []
    for path in paths:
        found = regex.search(Path(path).name)
        if found is None or not found.group(1):
            unmatched.append(str(path))
        groups.append(found.group(1) if found else None)
    if unmatched:
        more = f" (and {len(unmatched) - 3} more)" if len(unmatched) > 3 else ""
        raise DataError(
            f"datamodule.group_pattern={pattern!r} finds no group in the file name of "
            f"{len(unmatched)} image(s): {', '.join(unmatched[:3])}{more}. Change the pattern "
            "so that its first group matches every file name."
        )
    return groups


def check_groups_can_split(frame: pd.DataFrame, class_names: Sequence[str]) -> None:
    """Splits drawn by group need every class in two groups at least: a class whose samples
    all belong to one patient would be in train or in test, never in both."""
    if not has_groups(frame):
        return
    multilabel = isinstance(frame["label"].iloc[0], tuple)
    for index, name in enumerate(class_names):
        has = frame["label"].map(lambda v, i=index: bool(v[i]) if multilabel else v == i)
        groups = frame.loc[has.to_numpy(), "group"].unique()
        if len(groups) == 1:
            raise DataError(
                f"class {name!r} occurs only in group {groups[0]!r} "
                f"({int(has.sum())} sample(s)): splits that keep each group whole cannot put "
                "it in both train and test. Add patients with that class, or leave "
                "datamodule.group_column (group_pattern) unset to split by image."
            )


def group_leaks(frame: pd.DataFrame, limit: int = 5) -> list[str]:
    """One message per group found in more than one split, naming the group and its files."""
    if not has_groups(frame):
        return []
    grouped = frame.dropna(subset=["group"]).groupby("group", sort=True)["split"].nunique()
    leaked = grouped.index[grouped > 1]
    messages = []
    for group in leaked[:limit]:
        rows = frame[frame["group"] == group]
        where = "; ".join(
            f"{split}: {', '.join(map(str, rows.loc[rows['split'] == split, 'sample'][:3]))}"
            for split in SPLIT_ORDER
            if (rows["split"] == split).any()
        )
        messages.append(f"group {group!r} is in {rows['split'].nunique()} splits ({where})")
    if len(leaked) > limit:
        messages.append(f"… and {len(leaked) - limit} more group(s) in two splits")
    return messages


def content_hashes(
    frame: pd.DataFrame, arrays: np.ndarray | None, cache: str | Path | None = None
) -> list[str]:
    """A SHA-1 of each sample's bytes: the file's, or the in-memory array's. With ``cache``
    (the image check's SQLite file) a file's hash is kept there with its size and modification
    time, so a later run reads no file whose stamps are unchanged."""
    if arrays is not None:
        return [
            hashlib.sha1(np.ascontiguousarray(arrays[i]).tobytes()).hexdigest()
            for i in frame["path"]
        ]
    paths = [str(p) for p in frame["path"]]
    files = stamps(paths)[0] if cache else {}
    known = stamped_values(cache, CONTENT_TABLE, files) if cache else {}
    todo = [p for p in dict.fromkeys(paths) if p not in known]

    def digest(path: str) -> str:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()

    with ThreadPoolExecutor(max_workers=4) as pool:
        fresh = dict(zip(todo, pool.map(digest, todo), strict=True))
    if cache and fresh:
        remember_values(cache, CONTENT_TABLE, files, fresh)
    return [fresh[p] if p in fresh else known[p] for p in paths]


def duplicates_across_splits(
    frame: pd.DataFrame,
    arrays: np.ndarray | None,
    limit: int = 5,
    digests: list[str] | None = None,
) -> list[str]:
    """One message per set of byte-identical images that spans two splits (``digests``:
    the samples' content_hashes, when already computed)."""
    if digests is None:
        digests = content_hashes(frame, arrays)
    hashes = pd.Series(digests, index=frame.index)
    splits = frame["split"].groupby(hashes, sort=False).nunique()  # in order of appearance
    crossing = splits.index[splits > 1]
    messages = []
    for digest in crossing[:limit]:
        rows = frame[(hashes == digest).to_numpy()]
        named = ", ".join(
            f"{s} ({split})" for s, split in zip(rows["sample"], rows["split"], strict=True)
        )
        messages.append(f"identical images in two splits: {named}")
    if len(crossing) > limit:
        messages.append(f"… and {len(crossing) - limit} more set(s) of identical images")
    return messages


def check_leakage(
    frame: pd.DataFrame,
    arrays: np.ndarray | None,
    duplicates: str,
    *,
    near_copy_bits: int | None = None,
    dicom_window=None,
    cache: str | None = None,
) -> list[str]:
    """Raise on a group in two splits; on byte-identical images in two splits, and on
    near-copies within ``near_copy_bits`` hash bits (medclf.data.near_copies; None: not
    looked for), warn (or raise with ``duplicates=error``). Returns the duplicate messages
    (for the run report)."""
    leaks = group_leaks(frame)
    if leaks:
        raise DataError(
            "a group (patient) is in more than one split, so the test would score images of "
            "patients the model was trained on:\n    " + "\n    ".join(leaks) + "\nWhere medclf "
            "draws the splits it keeps each group whole; where the data gives them (a split "
            "column, train/ val/ test/ folders), move each group's images into one split."
        )
    if duplicates == "ignore":
        return []
    digests = content_hashes(frame, arrays, cache)
    found = duplicates_across_splits(frame, arrays, digests=digests)
    if near_copy_bits is not None:
        from medclf.data.near_copies import near_copies_across_splits

        found += near_copies_across_splits(
            frame,
            arrays,
            max_bits=near_copy_bits,
            dicom_window=dicom_window,
            cache=cache,
            digests=digests,
        )
    if found and duplicates == "error":
        raise DataError(
            "identical or near-identical images are in more than one split "
            "(datamodule.duplicates=error):\n    " + "\n    ".join(found) + "\nRemove the "
            "copies, or give them one group (datamodule.near_copy_bits=null checks "
            "byte-identical images only)."
        )
    for message in found:
        log.warning(
            "%s: an image scored in one split and seen in another flatters the metrics; remove "
            "one copy (datamodule.duplicates=error makes this an error)",
            message,
        )
    return found


def splits_table(frame: pd.DataFrame, class_names: Sequence[str], multilabel: bool) -> pd.DataFrame:
    """``splits.csv``: sample, split, group, label (names; multi-label joined by ``;``)."""
    names = np.asarray(list(class_names), dtype=object)
    if multilabel:
        labels = [";".join(names[np.asarray(v, dtype=bool)]) for v in frame["label"]]
    else:
        labels = list(names[frame["label"].to_numpy(dtype=int)])
    group = frame["group"] if "group" in frame.columns else None
    return pd.DataFrame(
        {
            "sample": frame["sample"].to_numpy(),
            "split": frame["split"].to_numpy(),
            "group": group.to_numpy() if group is not None else None,
            "label": labels,
        }
    )


def split_counts(frame: pd.DataFrame, class_names: Sequence[str], multilabel: bool) -> pd.DataFrame:
    """One row per split: samples, groups (NaN without groups) and samples per class."""
    rows = []
    grouped = has_groups(frame)
    for split in SPLIT_ORDER:
        part = frame[frame["split"] == split]
        row = {"split": split, "samples": len(part)}
        row["groups"] = part["group"].nunique() if grouped else np.nan
        if multilabel:
            matrix = np.array([list(v) for v in part["label"]]).reshape(len(part), -1)
            counts = matrix.sum(axis=0) if len(part) else np.zeros(len(class_names))
        else:
            counts = np.bincount(part["label"].to_numpy(dtype=int), minlength=len(class_names))
        row.update({name: int(count) for name, count in zip(class_names, counts, strict=True)})
        rows.append(row)
    return pd.DataFrame(rows)
