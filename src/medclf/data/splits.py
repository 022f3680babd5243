"""Train/val/test splits and cross-validation folds: stratified and seeded (iteratively
stratified for multi-label data, Sechidis et al. 2011); splits the data gives are kept.
With groups (a ``group`` column: patients), every group stays whole in one split or fold,
stratified by class as far as the groups allow (scikit-learn's StratifiedGroupKFold; for
multi-label data the groups' label sets are stratified iteratively)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medclf.data.groups import check_groups_can_split, has_groups
from medclf.data.sources import label_matrix
from medclf.errors import DataError


def assign_splits(
    frame: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: list[str] | None = None,
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
        if has_groups(frame):
            groups = frame.loc[candidates, "group"]
            picked = _group_split(candidates, labels, groups, share, seed, split, fraction)
            frame.loc[picked, "split"] = split
            remaining -= fraction
            continue
        if isinstance(labels.iloc[0], tuple):
            picked = _iterative_split(candidates, labels, share, seed, split, fraction)
            frame.loc[picked, "split"] = split
            remaining -= fraction
            continue
        counts = labels.value_counts()
        stratify = labels if counts.min() >= 2 else None
        if stratify is None:
            raise DataError(
                f"class {_class_name(counts.idxmin(), class_names)} has {counts.min()} "
                "sample(s) in the train pool; a "
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


def _class_name(index: int, class_names: list[str] | None) -> str:
    return repr(class_names[index]) if class_names else f"index {index}"


def assign_fold(
    frame: pd.DataFrame, folds: int, fold: int, seed: int, class_names: list[str] | None = None
) -> pd.DataFrame:
    """Cross-validation: the train and val samples are cut into ``folds`` stratified, seeded
    folds (iteratively stratified for multi-label data); fold ``fold`` becomes the val split,
    the others train. The test split is left as it is."""
    from sklearn.model_selection import StratifiedKFold

    if not 0 <= fold < folds:
        raise DataError(f"fold {fold} of cv.folds={folds}: use 0 … {folds - 1}.")
    frame = frame.copy()
    pool = frame.index[frame["split"].isin(["train", "val"])]
    labels = frame.loc[pool, "label"]
    if has_groups(frame):
        groups = frame.loc[pool, "group"]
        val = _group_folds(labels, groups, folds, seed)[fold]
        frame.loc[pool, "split"] = "train"
        frame.loc[pool[val], "split"] = "val"
        return frame
    if isinstance(labels.iloc[0], tuple):
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        target = label_matrix(labels, multilabel=True)
    else:
        counts = labels.value_counts()
        if counts.min() < folds:
            raise DataError(
                f"class {_class_name(counts.idxmin(), class_names)} has {counts.min()} "
                "sample(s) outside the test "
                f"split, fewer than cv.folds={folds}: every fold needs one of each class. "
                "Lower cv.folds or add samples."
            )
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        target = labels.to_numpy()
    _, val = list(splitter.split(np.zeros(len(pool)), target))[fold]
    frame.loc[pool, "split"] = "train"
    frame.loc[pool[val], "split"] = "val"
    return frame


def _iterative_split(candidates, labels, share: float, seed: int, split: str, fraction: float):
    """Multi-label stratification (Sechidis et al. 2011, via iterative-stratification)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    matrix = label_matrix(labels, multilabel=True)
    n_pick = int(round(share * len(candidates)))
    if n_pick < 1 or n_pick >= len(candidates):
        raise DataError(
            f"cannot draw a {split} split of {fraction:.0%} from {len(candidates)} samples. "
            f"Lower datamodule.{split}_fraction or add samples."
        )
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
    _, picked = next(splitter.split(np.zeros(len(matrix)), matrix))
    return candidates[picked]


def _group_targets(labels: pd.Series, groups: pd.Series):
    """(unique groups, each sample's group index, the group-level multi-label matrix)."""
    names, inverse = np.unique(groups.astype(str).to_numpy(), return_inverse=True)
    matrix = label_matrix(labels, multilabel=True)
    per_group = np.zeros((len(names), matrix.shape[1]), dtype=np.float32)
    np.maximum.at(per_group, inverse, matrix)
    return names, inverse, per_group


def _group_folds(labels: pd.Series, groups: pd.Series, folds: int, seed: int) -> list[np.ndarray]:
    """Positions (into ``labels``) of each fold's samples, every group in one fold."""
    n_groups = groups.nunique()
    if n_groups < folds:
        raise DataError(
            f"{n_groups} groups cannot fill {folds} folds that keep each group whole; lower "
            "cv.folds (or datamodule fractions) or add patients."
        )
    if isinstance(labels.iloc[0], tuple):
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        names, inverse, per_group = _group_targets(labels, groups)
        splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [
            np.flatnonzero(np.isin(inverse, held))
            for _, held in splitter.split(np.zeros(len(names)), per_group)
        ]
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    target = labels.to_numpy(dtype=int)
    return [held for _, held in splitter.split(np.zeros(len(labels)), target, groups.astype(str))]


def _group_split(candidates, labels, groups, share: float, seed: int, split: str, fraction):
    """About ``share`` of the candidates, whole groups only: one fold of
    round(1 / share) group-stratified folds."""
    folds = max(2, int(round(1 / share)))
    try:
        held = _group_folds(labels, groups, folds, seed)[0]
    except DataError:
        raise DataError(
            f"cannot draw a {split} split of {fraction:.0%} that keeps each group whole from "
            f"{groups.nunique()} groups; lower datamodule.{split}_fraction or add patients."
        ) from None
    return candidates[held]


def split_samples(
    table, val_fraction: float, test_fraction: float, seed: int, folds: int = 0, fold: int = 0
) -> pd.DataFrame:
    """A SampleTable's frame with every sample's split (with ``folds`` >= 2: fold ``fold`` is
    the val split); each split non-empty, every class trained."""
    names = table.class_names
    if table.frame["split"].isna().any() or (table.frame["split"] == "train").any():
        check_groups_can_split(table.frame, names)
    frame = assign_splits(table.frame, val_fraction, test_fraction, seed, names)
    if folds >= 2:  # cross-validation: this fold is the val split
        frame = assign_fold(frame, folds, fold, seed, names)
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
