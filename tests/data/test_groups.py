"""Patient-level splits and the leakage check (medclf.data.groups, medclf.data.splits): every
group stays in one split and one CV fold; a group in two given splits is an error naming it;
byte-identical images in two splits are named, with or without groups."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, class_image

from helpers import check_datamodule
from medclf.data.datamodule import CsvDataModule, FolderDataModule
from medclf.errors import ConfigError, DataError

PATIENTS = 30


@pytest.fixture
def patients_csv(tmp_path: Path) -> Path:
    """30 patients with 3 PNGs each (one class per patient, 10 per class), columns
    image, label, patient_id."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for p in range(PATIENTS):
        label = p % 3
        for k in range(3):
            name = f"img/P{p:02d}_{k}.png"
            Image.fromarray(class_image(label, rng)).save(tmp_path / name)
            rows.append({"image": name, "label": CLASSES[label], "patient_id": f"P{p:02d}"})
    path = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _module(csv: Path, **kwargs) -> CsvDataModule:
    kwargs = {"image_size": 24, "batch_size": 4, "val_fraction": 0.2, "test_fraction": 0.2} | kwargs
    return CsvDataModule(csv_path=csv, **kwargs)


def _splits_per_patient(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("group")["split"].nunique()


def test_group_column_keeps_every_patient_in_one_split(patients_csv: Path) -> None:
    datamodule = _module(patients_csv, group_column="patient_id")
    datamodule.setup()
    frame = datamodule.frame
    assert (_splits_per_patient(frame) == 1).all()
    counts = datamodule.split_counts().set_index("split")
    assert counts["groups"].sum() == PATIENTS and counts["samples"].sum() == 3 * PATIENTS
    assert (counts.loc[["val", "test"], list(CLASSES)] > 0).all().all()  # stratified by class
    table = datamodule.splits_table()
    assert list(table.columns) == ["sample", "split", "group", "label"]
    assert set(table["label"]) == set(CLASSES)
    # without groups the same data splits patients (the leak this feature prevents)
    plain = _module(patients_csv)
    plain.setup()
    patient = plain.frame["sample"].str.slice(4, 7)
    assert (plain.frame.assign(group=patient).pipe(_splits_per_patient) > 1).any()


@pytest.mark.parametrize("fold", range(3))
def test_each_cv_fold_keeps_every_patient_whole(patients_csv: Path, fold: int) -> None:
    datamodule = _module(patients_csv, group_column="patient_id", folds=3, fold=fold)
    datamodule.setup()
    assert (_splits_per_patient(datamodule.frame) == 1).all()
    assert set(datamodule.frame["split"]) == {"train", "val", "test"}


def test_multilabel_groups_stay_whole(tmp_path: Path, patients_csv: Path) -> None:
    table = pd.read_csv(patients_csv)
    table["label"] = [
        ";".join(c for i, c in enumerate(CLASSES) if (n >> i) & 1 or n % 7 == i)
        for n in range(len(table))
    ]
    table.loc[table["label"] == "", "label"] = "normal"
    path = tmp_path / "multi.csv"
    table.to_csv(path, index=False)
    datamodule = _module(path, group_column="patient_id")
    datamodule.setup()
    assert datamodule.task == "multilabel"
    assert (_splits_per_patient(datamodule.frame) == 1).all()


def test_a_patient_in_two_given_splits_is_an_error_naming_it(patients_csv: Path) -> None:
    table = pd.read_csv(patients_csv)
    table["split"] = np.where(table.index % 2, "train", "test")  # every patient in both
    table.loc[::5, "split"] = "val"
    table.to_csv(patients_csv, index=False)
    with pytest.raises(DataError, match=r"(?s)group .P00. is in 3 splits .*P00_0\.png"):
        _module(patients_csv, group_column="patient_id", split_column="split").setup()


@pytest.mark.parametrize("group_column", [None, "patient_id"])
def test_an_exact_copy_in_two_splits_is_named(
    patients_csv: Path, group_column: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    table = pd.read_csv(patients_csv)
    table["split"] = ""
    table.loc[table["patient_id"] == "P01", "split"] = "val"
    table.loc[table["patient_id"] == "P04", "split"] = "test"
    shutil.copy(patients_csv.parent / "img/P01_2.png", patients_csv.parent / "img/P04_2.png")
    table.to_csv(patients_csv, index=False)
    kwargs = {"group_column": group_column, "split_column": "split"}
    with caplog.at_level(logging.WARNING, logger="medclf.data.groups"):
        datamodule = _module(patients_csv, **kwargs)
        datamodule.setup()
    (found,) = datamodule.duplicates_found
    assert "img/P01_2.png (val)" in found and "img/P04_2.png (test)" in found
    assert "img/P04_2.png (test)" in caplog.text
    with pytest.raises(DataError, match=r"(?s)duplicates=error.*P01_2\.png.*P04_2\.png"):
        _module(patients_csv, duplicates="error", **kwargs).setup()
    quiet = _module(patients_csv, duplicates="ignore", **kwargs)
    quiet.setup()
    assert quiet.duplicates_found == []


def test_identical_sets_across_splits_are_those_a_plain_loop_finds() -> None:
    """duplicates_across_splits (vectorised: one pass over 20,000 hashes takes no time per
    image) names the sets a loop over every set of equal hashes names, in the same order."""
    from medclf.data.groups import duplicates_across_splits

    rng = np.random.default_rng(3)
    n = 2000
    digests = [f"h{v}" for v in rng.integers(0, 1700, n)]  # some hashes twice or more
    frame = pd.DataFrame(
        {"sample": [f"s{i}" for i in range(n)], "split": rng.choice(["train", "val", "test"], n)}
    )
    expected = []
    for digest in dict.fromkeys(digests):
        rows = [i for i in range(n) if digests[i] == digest]
        if len({frame["split"][i] for i in rows}) > 1:
            named = ", ".join(f"s{i} ({frame['split'][i]})" for i in rows)
            expected.append(f"identical images in two splits: {named}")
    found = duplicates_across_splits(frame, None, limit=7, digests=digests)
    assert len(expected) > 7
    assert found == [*expected[:7], f"… and {len(expected) - 7} more set(s) of identical images"]


def test_group_column_bad_input(tmp_path: Path, patients_csv: Path) -> None:
    with pytest.raises(DataError, match=r"no column 'patient'.*datamodule.group_column"):
        _module(patients_csv, group_column="patient").setup()
    table = pd.read_csv(patients_csv)
    table.loc[[4, 7], "patient_id"] = ""
    blank = tmp_path / "blank.csv"
    table.to_csv(blank, index=False)
    with pytest.raises(DataError, match=r"2 row\(s\) have an empty 'patient_id'.*line 6"):
        _module(blank, group_column="patient_id").setup()
    table = pd.read_csv(patients_csv)
    table.loc[table["label"] == "normal", "patient_id"] = "P02"  # all 'normal': one patient
    one = tmp_path / "one.csv"
    table.to_csv(one, index=False)
    with pytest.raises(DataError, match=r"class 'normal' occurs only in group 'P02'"):
        _module(one, group_column="patient_id").setup()
    with pytest.raises(DataError, match=r"no column 'sex' \(eval.subgroups\)"):
        _module(patients_csv, info_columns=["sex"]).setup()
    with pytest.raises(ConfigError, match=r"datamodule.duplicates='maybe'"):
        check_datamodule(duplicates="maybe")


def test_folder_group_pattern(tmp_path: Path, patients_csv: Path) -> None:
    root = tmp_path / "folders"
    table = pd.read_csv(patients_csv)
    for row in table.itertuples():
        (root / row.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(patients_csv.parent / row.image, root / row.label / Path(row.image).name)
    kwargs = {"image_size": 24, "batch_size": 4, "val_fraction": 0.2, "test_fraction": 0.2}
    datamodule = FolderDataModule(root, group_pattern=r"^(P\d+)_", **kwargs)
    datamodule.setup()
    assert datamodule.frame["group"].nunique() == PATIENTS
    assert (_splits_per_patient(datamodule.frame) == 1).all()
    (root / "benign" / "stray.png").write_bytes((root / "benign" / "P00_0.png").read_bytes())
    with pytest.raises(DataError, match=r"group_pattern='\^\(P\\\\d\+\)_' finds no group.*stray"):
        FolderDataModule(root, group_pattern=r"^(P\d+)_", **kwargs).setup()
    with pytest.raises(ConfigError, match="has no group"):
        FolderDataModule(root, group_pattern=r"^P\d+_", **kwargs).setup()
