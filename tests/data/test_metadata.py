"""MetadataEncoder: train-only statistics, imputation, one-hot, kinds, errors and state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medclf.data.metadata import MetadataEncoder
from medclf.errors import ConfigError, DataError

NAN = np.nan
# Rows 0-4 train, 5-7 val/test. Values are strings as csv_table gives them (NaN when blank).
TRAIN = np.array([True] * 5 + [False] * 3)


def _table(**overrides) -> pd.DataFrame:
    columns = {
        "age": ["20", NAN, "40", "60", "35", "1000", NAN, "50"],
        "sex": ["M", "F", "F", NAN, "M", "F", "X", NAN],
        "site": ["3", "1", "1", "2", "3", "2", "9", "1"],
    }
    columns.update(overrides)
    return pd.DataFrame(columns)


def test_numeric_train_median_imputation_then_train_mean_std():
    """age: train median fills gaps, then z-scores with the filled train mean/std (ddof 0)."""
    table = _table()
    encoder = MetadataEncoder.fit(table[["age"]], TRAIN)
    train_ages = np.array([20, NAN, 40, 60, 35])
    median = np.nanmedian(train_ages)  # 37.5
    filled = np.where(np.isnan(train_ages), median, train_ages)
    mean, std = filled.mean(), filled.std()
    ages = np.array([20, NAN, 40, 60, 35, 1000, NAN, 50])
    expected_z = (np.where(np.isnan(ages), median, ages) - mean) / std
    out = encoder.transform(table[["age"]])
    assert out.dtype == np.float32 and out.shape == (8, 2)
    np.testing.assert_allclose(out[:, 0], expected_z, rtol=1e-5)
    np.testing.assert_array_equal(out[:, 1], np.isnan(ages).astype(float))
    (state,) = encoder.state()
    assert state["median"] == pytest.approx(37.5)
    assert state["mean"] == pytest.approx(mean) and state["std"] == pytest.approx(std)


def test_numeric_matches_sklearn_imputer_and_scaler():
    """Same numbers as SimpleImputer(median, add_indicator) + StandardScaler fitted on train."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    table = _table()
    ages = table[["age"]].astype(float).to_numpy()
    imputer = SimpleImputer(strategy="median", add_indicator=True).fit(ages[TRAIN])
    scaler = StandardScaler().fit(imputer.transform(ages[TRAIN])[:, :1])
    imputed = imputer.transform(ages)
    expected = np.column_stack([scaler.transform(imputed[:, :1]), imputed[:, 1]])
    out = MetadataEncoder.fit(table[["age"]], TRAIN).transform(table[["age"]])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_val_test_rows_do_not_change_the_statistics():
    """Changing every non-train value leaves the fitted state and the train rows unchanged."""
    a = _table()
    b = _table(
        age=a["age"].tolist()[:5] + ["-500", "7", "99999"],
        sex=a["sex"].tolist()[:5] + ["Z", "Z", "M"],
    )
    enc_a = MetadataEncoder.fit(a, TRAIN)
    enc_b = MetadataEncoder.fit(b, TRAIN)
    assert enc_a.state() == enc_b.state()
    np.testing.assert_array_equal(enc_a.transform(a)[TRAIN], enc_b.transform(b)[TRAIN])


def test_missing_indicator_only_for_columns_with_gaps():
    """A complete numeric column encodes to one variable, a gappy one to value + indicator."""
    table = _table(age=["20", "30", "40", "60", "35", "1000", "1", "50"])
    encoder = MetadataEncoder.fit(table[["age"]], TRAIN)
    assert encoder.width == 1
    assert encoder.feature_names() == ["age"]
    assert encoder.transform(table[["age"]]).shape == (8, 1)
    gappy = MetadataEncoder.fit(_table()[["age"]], TRAIN)
    assert gappy.width == 2
    assert gappy.feature_names() == ["age", "age_missing"]


def test_indicator_is_fitted_on_train_rows_only():
    """Gaps only in val/test rows add no indicator (the encoding is fitted on train only);
    such rows are imputed with the train median."""
    table = _table(age=["20", "30", "40", "60", "35", NAN, "1", NAN])
    encoder = MetadataEncoder.fit(table[["age"]], TRAIN)
    assert encoder.feature_names() == ["age"]
    out = encoder.transform(table[["age"]])
    filled = np.array([20, 30, 40, 60, 35], float)
    assert out[5, 0] == pytest.approx((35 - filled.mean()) / filled.std(), rel=1e-5)


def test_categorical_one_hot_over_sorted_train_categories():
    """sex: one-hot over sorted train categories; unseen (X) and missing rows are all zeros."""
    table = _table()
    encoder = MetadataEncoder.fit(table[["sex"]], TRAIN)
    assert encoder.feature_names() == ["sex=F", "sex=M"]
    expected = np.array(
        [[0, 1], [1, 0], [1, 0], [0, 0], [0, 1], [1, 0], [0, 0], [0, 0]], dtype=np.float32
    )
    np.testing.assert_array_equal(encoder.transform(table[["sex"]]), expected)


def test_categorical_matches_sklearn_one_hot():
    """Same matrix as OneHotEncoder(handle_unknown='ignore') fitted on the train rows."""
    from sklearn.preprocessing import OneHotEncoder

    table = _table(sex=["b", "c", "a", "c", "b", "a", "d", "c"])
    onehot = OneHotEncoder(handle_unknown="ignore").fit(table.loc[TRAIN, ["sex"]])
    expected = onehot.transform(table[["sex"]]).toarray()
    encoder = MetadataEncoder.fit(table[["sex"]], TRAIN)
    assert encoder.state()[0]["categories"] == list(onehot.categories_[0])
    np.testing.assert_array_equal(encoder.transform(table[["sex"]]), expected)


def test_kind_auto_detection():
    """Numeric strings → numeric (1 value per column); text, or words with a few numbers →
    categorical; numbers with a few words → an error naming the word (a typo would otherwise
    turn the column categorical without a word)."""
    table = _table(mixed=["1", "x", "three", "y", "z", "6", "w", "v"])
    kinds = {c["name"]: c["kind"] for c in MetadataEncoder.fit(table, TRAIN).state()}
    assert kinds == {
        "age": "numeric",
        "sex": "categorical",
        "site": "numeric",
        "mixed": "categorical",
    }
    typo = _table(mixed=["1", "2", "three", "4", "5", "6", "7", "8"])
    with pytest.raises(DataError, match=r"'mixed' holds numbers but also 'three' \(CSV line 4"):
        MetadataEncoder.fit(typo, TRAIN)


def test_types_force_a_kind():
    """site holds numeric-looking codes: declared categorical it is one-hot, not a z-score."""
    table = _table()
    encoder = MetadataEncoder.fit(table[["site"]], TRAIN, {"site": "categorical"})
    assert encoder.feature_names() == ["site=1", "site=2", "site=3"]
    out = encoder.transform(table[["site"]])
    expected = np.zeros((8, 3), np.float32)
    for row, value in enumerate(table["site"]):
        if value in ("1", "2", "3"):
            expected[row, int(value) - 1] = 1
    np.testing.assert_array_equal(out, expected)  # "9" is unseen: all zeros


def test_declared_numeric_column_with_text_names_column_and_value():
    """A numeric column holding text → DataError naming the column and the bad value."""
    table = _table()
    with pytest.raises(DataError, match=r"'sex'.*'M'"):
        MetadataEncoder.fit(table[["sex"]], TRAIN, {"sex": "numeric"})
    encoder = MetadataEncoder.fit(table[["age"]], TRAIN)
    with pytest.raises(DataError, match=r"'age'.*'unknown'"):
        encoder.transform(pd.DataFrame({"age": ["30", "unknown"]}))


def test_all_missing_in_train_is_an_error():
    """A column without a single train value cannot be fitted, even if val/test have some."""
    table = _table(age=[NAN] * 5 + ["1", "2", "3"])
    with pytest.raises(DataError, match="'age'.*no values in the train split"):
        MetadataEncoder.fit(table, TRAIN)
    table = _table(sex=[NAN] * 5 + ["M", "F", "M"])
    with pytest.raises(DataError, match="'sex'"):
        MetadataEncoder.fit(table, TRAIN)


def test_bad_types_are_config_errors():
    """Unknown column in types, or a kind other than numeric/categorical → ConfigError."""
    table = _table()
    with pytest.raises(ConfigError, match="weight"):
        MetadataEncoder.fit(table, TRAIN, {"weight": "numeric"})
    with pytest.raises(ConfigError, match="ordinal"):
        MetadataEncoder.fit(table, TRAIN, {"site": "ordinal"})


def test_width_and_feature_names_match_transform():
    """width == len(feature_names()) == transform columns, in column order."""
    table = _table()
    encoder = MetadataEncoder.fit(table, TRAIN, {"site": "categorical"})
    names = encoder.feature_names()
    assert names == ["age", "age_missing", "sex=F", "sex=M", "site=1", "site=2", "site=3"]
    assert encoder.width == len(names) == encoder.transform(table).shape[1]
    empty = MetadataEncoder([])
    assert empty.width == 0 and empty.transform(table).shape == (8, 0)


def test_state_is_plain_json_and_round_trips():
    """state() survives json; an encoder rebuilt from it transforms identically."""
    table = _table()
    encoder = MetadataEncoder.fit(table, TRAIN, {"site": "categorical"})
    text = json.dumps(encoder.state())
    rebuilt = MetadataEncoder(json.loads(text))
    assert rebuilt.state() == encoder.state()
    assert rebuilt.width == encoder.width
    assert rebuilt.feature_names() == encoder.feature_names()
    new_rows = _table(age=["1", NAN, "3", "4", "5", "6", "7", "8"], sex=["F"] * 8)
    np.testing.assert_array_equal(rebuilt.transform(new_rows), encoder.transform(new_rows))
    np.testing.assert_array_equal(rebuilt.transform(table), encoder.transform(table))


def test_constant_train_column_does_not_divide_by_zero():
    """A constant train column has std 1 (finite output), not NaN."""
    table = _table(age=["5", "5", "5", "5", "5", "6", "7", "8"])
    out = MetadataEncoder.fit(table[["age"]], TRAIN).transform(table[["age"]])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], [0, 0, 0, 0, 0, 1, 2, 3])


def test_csv_missing_markers_and_spaces_in_metadata(tmp_path) -> None:
    """NA-like markers are missing values and cells are stripped, so 'age' stays numeric."""
    from PIL import Image

    from medclf.data.sources import csv_table

    rows = ["image,label,age,sex"]
    for i, (age, sex) in enumerate([("41", " M"), ("NA", "M"), ("n/a", "F "), ("?", "F")]):
        Image.new("L", (4, 4)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]},{age},{sex}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    meta = csv_table(tmp_path / "t.csv", meta_columns=["age", "sex"]).meta
    assert meta["age"].isna().tolist() == [False, True, True, True]
    assert meta["sex"].tolist() == ["M", "M", "F", "F"]
    encoder = MetadataEncoder.fit(meta, np.ones(4, bool))
    assert [c["kind"] for c in encoder.columns] == ["numeric", "categorical"]
