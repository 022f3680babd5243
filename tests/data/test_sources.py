"""Sample tables: digits, class folders, CSV tables, and stratified seeded splitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, class_image
from PIL import Image

from medclf.data.sources import csv_table, digits_table, folder_table
from medclf.data.splits import assign_splits
from medclf.errors import ConfigError, DataError


def _png(path: Path, label: int = 0, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(class_image(label, np.random.default_rng(seed), size=8)).save(path)
    return path


def _write_csv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


# --- digits -------------------------------------------------------------------------------


def test_digits_table():
    """1,797 8×8 one-channel images in [0, 1], labels 0–9 indexing the arrays."""
    from sklearn.datasets import load_digits

    table = digits_table()
    digits = load_digits()
    assert table.class_names == [str(i) for i in range(10)]
    assert len(table.frame) == 1797
    assert table.arrays.shape == (1797, 8, 8, 1)
    assert table.arrays.dtype == np.float32
    assert table.arrays.min() == 0.0 and table.arrays.max() == 1.0
    assert table.frame["split"].isna().all()
    row = table.frame.iloc[100]
    np.testing.assert_allclose(table.arrays[row["path"], :, :, 0], digits.images[100] / 16.0)
    assert row["label"] == digits.target[100]
    assert table.frame["sample"].is_unique


# --- folders ------------------------------------------------------------------------------


def test_folder_table_class_folders(image_folder: Path):
    """data_dir/<class>/: sorted class names, labels from the folder, relative sample ids."""
    table = folder_table(image_folder)
    frame = table.frame
    assert table.class_names == sorted(CLASSES)
    assert table.arrays is None
    assert len(frame) == 36
    assert frame["split"].isna().all()
    assert frame.groupby("label").size().tolist() == [12, 12, 12]
    for _, row in frame.iterrows():
        path = Path(row["path"])
        assert path.is_file()
        assert table.class_names[row["label"]] == path.parent.name
        assert row["sample"] == f"{path.parent.name}/{path.name}"
    assert "malignant/malignant_03.png" in set(frame["sample"])


def test_folder_table_ignores_non_images_and_hidden_folders(image_folder: Path):
    """Non-image files are skipped; hidden folders are not classes."""
    (image_folder / "benign" / "notes.txt").write_text("x")
    _png(image_folder / ".cache" / "x.png")
    table = folder_table(image_folder)
    assert table.class_names == sorted(CLASSES)
    assert len(table.frame) == 36


def test_folder_table_given_splits(tmp_path: Path):
    """data_dir/{train,val,test}/<class>/: each sample keeps the split of its folder."""
    root = tmp_path / "data"
    expected = {}
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for label, name in enumerate(("cat", "dog")):
            for i in range(n):
                _png(root / split / name / f"{i}.png", label, i)
                expected[f"{split}/{name}/{i}.png"] = (split, label)
    table = folder_table(root)
    assert table.class_names == ["cat", "dog"]
    got = {row.sample: (row.split, row.label) for row in table.frame.itertuples()}
    assert got == expected
    kept = assign_splits(table.frame, 0.3, 0.3, seed=0)
    assert kept["split"].tolist() == table.frame["split"].tolist()


def test_folder_table_class_only_in_train(tmp_path: Path):
    """Class names are the union over split folders."""
    root = tmp_path / "data"
    _png(root / "train" / "a" / "0.png")
    _png(root / "train" / "b" / "0.png")
    _png(root / "val" / "a" / "0.png")
    assert folder_table(root).class_names == ["a", "b"]


def test_folder_table_empty_class_folder(image_folder: Path):
    """An empty class folder → DataError naming that folder."""
    empty = image_folder / "unused"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as info:
        folder_table(image_folder)
    assert str(empty) in str(info.value)


def test_folder_table_numeric_classes_sort_naturally(tmp_path: Path):
    """Class folders 2, 10, 1 → ['1', '2', '10'], not string order."""
    for name in ("2", "10", "1"):
        _png(tmp_path / "d" / name / "a.png")
    table = folder_table(tmp_path / "d")
    assert table.class_names == ["1", "2", "10"]
    labels = {row.sample.split("/")[0]: row.label for row in table.frame.itertuples()}
    assert labels == {"1": 0, "2": 1, "10": 2}


@pytest.mark.parametrize("value", [None, "", "???"])
def test_folder_table_data_dir_not_set(value):
    """An unset data_dir → ConfigError naming datamodule.data_dir."""
    with pytest.raises(ConfigError, match=r"datamodule\.data_dir"):
        folder_table(value)


def test_folder_table_data_dir_missing(tmp_path: Path):
    """A data_dir that does not exist → DataError naming the key and the path."""
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"datamodule\.data_dir") as info:
        folder_table(missing)
    assert str(missing) in str(info.value)


def test_folder_table_no_class_folders(tmp_path: Path):
    """Images directly in data_dir without class folders → DataError."""
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class folders"):
        folder_table(tmp_path / "flat")


# --- CSV ----------------------------------------------------------------------------------


def test_csv_table_relative_to_csv_folder(image_csv: Path):
    """Paths relative to the CSV's folder by default; names sorted; sample = path as given."""
    table = csv_table(image_csv, image_column="file", label_column="diagnosis")
    frame = table.frame
    assert table.class_names == sorted(CLASSES)
    assert len(frame) == 36
    assert frame["split"].isna().all()
    raw = pd.read_csv(image_csv)
    assert frame["sample"].tolist() == raw["file"].tolist()
    for row, name in zip(frame.itertuples(), raw["diagnosis"], strict=True):
        assert Path(row.path) == image_csv.parent / row.sample
        assert Path(row.path).is_file()
        assert table.class_names[row.label] == name


def test_csv_table_relative_to_image_dir(tmp_path: Path):
    """With image_dir, relative paths resolve against it, not against the CSV's folder."""
    images = tmp_path / "elsewhere" / "pics"
    _png(images / "a.png")
    _png(images / "b.png", 1)
    csv = _write_csv(tmp_path / "labels.csv", [("image", "label"), ("a.png", "x"), ("b.png", "y")])
    table = csv_table(csv, image_dir=images)
    assert table.frame["path"].tolist() == [str(images / "a.png"), str(images / "b.png")]
    with pytest.raises(DataError) as info:
        csv_table(csv)  # relative to the CSV's folder, where a.png does not exist
    assert str(tmp_path / "a.png") in str(info.value)


def test_csv_table_absolute_paths_kept(tmp_path: Path):
    """Absolute paths are used as they are, whatever image_dir says."""
    a = _png(tmp_path / "abs" / "a.png")
    b = _png(tmp_path / "abs" / "b.png")
    csv = _write_csv(tmp_path / "t.csv", [("image", "label"), (str(a), "x"), (str(b), "y")])
    table = csv_table(csv, image_dir=tmp_path / "unused")
    assert table.frame["path"].tolist() == [str(a), str(b)]


def test_csv_table_missing_label_column(image_csv: Path):
    """A missing column → DataError naming it, the key, the columns and a close match."""
    with pytest.raises(DataError) as info:
        csv_table(image_csv, image_column="file", label_column="diagnosys")
    message = str(info.value)
    assert "'diagnosys'" in message
    assert "datamodule.label_column" in message
    assert "Did you mean: diagnosis?" in message
    assert "Columns are: file, diagnosis" in message


def test_csv_table_missing_image_column(image_csv: Path):
    """The default image column 'image' is absent from this table → named in the error."""
    with pytest.raises(DataError, match=r"'image' \(datamodule\.image_column\)"):
        csv_table(image_csv, label_column="diagnosis")


def test_csv_table_missing_image_file(image_csv: Path):
    """A listed image that does not exist → DataError naming that file."""
    gone = image_csv.parent / "img" / "normal_05.jpg"
    gone.unlink()
    with pytest.raises(DataError, match="1 image file") as info:
        csv_table(image_csv, image_column="file", label_column="diagnosis")
    assert str(gone) in str(info.value)


def test_csv_table_not_set_or_missing(tmp_path: Path):
    """No csv_path → ConfigError with the key; a path that does not exist → DataError."""
    with pytest.raises(ConfigError, match=r"datamodule\.csv_path"):
        csv_table(None)
    with pytest.raises(DataError, match=r"datamodule\.csv_path"):
        csv_table(tmp_path / "missing.csv")


def test_csv_table_empty_table(tmp_path: Path):
    """A header without rows → DataError."""
    csv = _write_csv(tmp_path / "t.csv", [("image", "label")])
    with pytest.raises(DataError, match="no rows"):
        csv_table(csv)


def _split_csv(tmp_path: Path, splits: list[str]) -> Path:
    rows = [("image", "label", "split")]
    for i, split in enumerate(splits):
        _png(tmp_path / f"{i}.png", i % 2, i)
        rows.append((f"{i}.png", "ab"[i % 2], split))
    return _write_csv(tmp_path / "t.csv", rows)


def test_csv_table_split_column(tmp_path: Path):
    """A split column is kept (case-insensitive); blank cells are left to assign_splits."""
    csv = _split_csv(tmp_path, ["train", "VAL", "test", "", "Train", ""])
    table = csv_table(csv, split_column="split")
    assert table.frame["split"].tolist()[:3] == ["train", "val", "test"]
    assert pd.isna(table.frame["split"].iloc[3]) and pd.isna(table.frame["split"].iloc[5])
    assert table.frame["split"].iloc[4] == "train"
    # Without split_column the column is ignored.
    assert csv_table(csv).frame["split"].isna().all()


def test_csv_table_bad_split_value(tmp_path: Path):
    """A split value other than train/val/test → DataError naming the value."""
    csv = _split_csv(tmp_path, ["train", "validation", "test", "train"])
    with pytest.raises(DataError, match="validation") as info:
        csv_table(csv, split_column="split")
    assert "train, val, test" in str(info.value)


def test_csv_table_numeric_labels_sort_naturally(tmp_path: Path):
    """Labels 10, 2, 1 → classes ['1', '2', '10'] and labels indexed in that order."""
    rows = [("image", "label")]
    for i, label in enumerate(("10", "2", "1", "2")):
        _png(tmp_path / f"{i}.png")
        rows.append((f"{i}.png", label))
    table = csv_table(_write_csv(tmp_path / "t.csv", rows))
    assert table.class_names == ["1", "2", "10"]
    assert table.frame["label"].tolist() == [2, 1, 0, 1]


# --- assign_splits ------------------------------------------------------------------------


def _frame(counts: dict[int, int]) -> pd.DataFrame:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return pd.DataFrame(
        {
            "sample": [f"s{i}" for i in range(len(labels))],
            "path": [f"/x/s{i}.png" for i in range(len(labels))],
            "label": labels,
            "split": None,
        }
    )


COUNTS = {0: 200, 1: 100, 2: 60, 3: 40}  # 400 samples, imbalanced


def test_assign_splits_fractions_and_stratification():
    """Split sizes follow the fractions, and each split keeps every class in proportion."""
    frame = assign_splits(_frame(COUNTS), val_fraction=0.2, test_fraction=0.1, seed=0)
    sizes = frame["split"].value_counts()
    assert sizes.sum() == 400
    assert sizes["test"] == pytest.approx(40, abs=2)
    assert sizes["val"] == pytest.approx(80, abs=2)
    assert sizes["train"] == pytest.approx(280, abs=3)
    table = pd.crosstab(frame["label"], frame["split"])
    for split, fraction in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        for label, n in COUNTS.items():
            assert table.loc[label, split] == pytest.approx(n * fraction, abs=2)


def test_assign_splits_does_not_modify_input():
    """The input frame is left untouched."""
    frame = _frame(COUNTS)
    assign_splits(frame, 0.2, 0.1, seed=0)
    assert frame["split"].isna().all()


def test_assign_splits_seeded():
    """Same seed → same split; another seed → a different one."""
    a = assign_splits(_frame(COUNTS), 0.2, 0.1, seed=7)["split"].tolist()
    b = assign_splits(_frame(COUNTS), 0.2, 0.1, seed=7)["split"].tolist()
    c = assign_splits(_frame(COUNTS), 0.2, 0.1, seed=8)["split"].tolist()
    assert a == b
    assert a != c


def test_assign_splits_zero_fraction():
    """A zero fraction draws no samples for that split."""
    frame = assign_splits(_frame(COUNTS), val_fraction=0.25, test_fraction=0.0, seed=0)
    assert set(frame["split"]) == {"train", "val"}
    assert (frame["split"] == "val").sum() == 100


def test_assign_splits_keeps_given_test_and_draws_val_from_train():
    """With a test split given, it is kept and val is val_fraction of the rest."""
    frame = _frame(COUNTS)
    test_rows = frame.groupby("label").head(10).index
    frame.loc[test_rows, "split"] = "test"
    out = assign_splits(frame, val_fraction=0.25, test_fraction=0.3, seed=0)
    assert (out.loc[test_rows, "split"] == "test").all()
    assert (out["split"] == "test").sum() == 40
    assert (out["split"] == "val").sum() == pytest.approx(90, abs=2)
    assert set(out.loc[out["split"] == "val", "label"]) == set(COUNTS)


def test_assign_splits_single_sample_class():
    """A class with one sample cannot be stratified → DataError naming the class."""
    with pytest.raises(DataError, match="class index 2 has 1 sample"):
        assign_splits(_frame({0: 20, 1: 20, 2: 1}), 0.2, 0.2, seed=0)


def test_assign_splits_too_few_samples():
    """A split too small to hold every class → DataError suggesting the fraction key."""
    with pytest.raises(DataError, match=r"datamodule\.test_fraction"):
        assign_splits(_frame({c: 4 for c in range(10)}), 0.1, 0.05, seed=0)


def test_assign_splits_all_given():
    """With every split given, nothing is drawn and nothing fails."""
    frame = _frame({0: 3, 1: 3})
    frame["split"] = ["train", "val", "test"] * 2
    out = assign_splits(frame, 0.2, 0.2, seed=0)
    assert out["split"].tolist() == frame["split"].tolist()


def test_csv_table_empty_label_rejected(tmp_path: Path):
    """A row without a label → DataError naming the column and the line, not a class ''."""
    for i in range(3):
        _png(tmp_path / f"{i}.png")
    csv = _write_csv(
        tmp_path / "t.csv", [("image", "label"), ("0.png", "a"), ("1.png", ""), ("2.png", "b")]
    )
    with pytest.raises(DataError, match=r"'label' \(datamodule\.label_column\), first on line 3"):
        csv_table(csv)


def test_assign_splits_nothing_left_to_draw_from():
    """All samples given as val, test still to draw → DataError (not a bare ValueError)."""
    frame = _frame({0: 3, 1: 3})
    frame["split"] = "val"
    with pytest.raises(DataError, match="test split"):
        assign_splits(frame, 0.2, 0.2, seed=0)
