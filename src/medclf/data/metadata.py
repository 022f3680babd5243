"""Tabular metadata → a float matrix for the classification head's metadata block.

Fitted on the train split only: numeric columns are standardised with train mean and std
after imputing missing values with the train median (plus a 0/1 missing-indicator column
when the column has gaps in the train split); categorical columns are one-hot over the train
categories, and an unseen or missing category encodes as all zeros. The fitted state is plain data
(:meth:`MetadataEncoder.state`), saved in checkpoints so prediction needs nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from medclf.errors import ConfigError, DataError, Problems


class MetadataEncoder:
    """Encode named metadata columns the same way for every split."""

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns

    @classmethod
    def fit(
        cls, table: pd.DataFrame, train: np.ndarray, types: dict[str, str] | None = None
    ) -> MetadataEncoder:
        """Fit on the rows ``train`` (boolean mask) of ``table``; ``types`` forces a kind."""
        types = dict(types or {})
        unknown = sorted(set(types) - set(table.columns))
        if unknown:
            raise ConfigError(
                f"datamodule.meta_types names {unknown}, which are not in "
                f"datamodule.meta_columns ({', '.join(table.columns)})."
            )
        columns = []
        problems = Problems()
        for name in table.columns:
            with problems.check():
                columns.append(cls._fit_column(name, table[name], train, types.get(name)))
        problems.raise_any()
        return cls(columns)

    @staticmethod
    def _fit_column(
        name: str, values: pd.Series, train: np.ndarray, kind: str | None
    ) -> dict[str, Any]:
        kind = kind or _guess_kind(name, values)
        if kind not in ("numeric", "categorical"):
            raise ConfigError(f"datamodule.meta_types.{name}={kind!r}: use numeric or categorical.")
        if values[train].isna().all():
            raise DataError(
                f"metadata column {name!r} has no values in the train split"
                f"{' (it is empty throughout)' if values.isna().all() else ''}; fill it in or "
                "remove it from datamodule.meta_columns."
            )
        if kind == "numeric":
            numbers = _to_numbers(values, name)
            median = float(numbers[train].median())
            filled = numbers[train].fillna(median)
            std = float(filled.std(ddof=0))
            return {
                "name": name,
                "kind": kind,
                "median": median,
                "mean": float(filled.mean()),
                "std": std if std > 0 else 1.0,
                "indicator": bool(numbers[train].isna().any()),
            }
        categories = sorted({str(v) for v in values[train].dropna()})
        return {"name": name, "kind": kind, "categories": categories}

    @property
    def width(self) -> int:
        """Number of encoded variables (``head.meta_variables``)."""
        return sum(
            1 + c["indicator"] if c["kind"] == "numeric" else len(c["categories"])
            for c in self.columns
        )

    def feature_names(self) -> list[str]:
        names = []
        for c in self.columns:
            if c["kind"] == "numeric":
                names += [c["name"]] + ([f"{c['name']}_missing"] if c["indicator"] else [])
            else:
                names += [f"{c['name']}={v}" for v in c["categories"]]
        return names

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Encode every row of ``table`` (which must hold the fitted columns)."""
        parts = []
        for c in self.columns:
            values = table[c["name"]]
            if c["kind"] == "numeric":
                numbers = _to_numbers(values, c["name"])
                missing = numbers.isna().to_numpy()
                z = (numbers.fillna(c["median"]).to_numpy() - c["mean"]) / c["std"]
                parts.append(z[:, None])
                if c["indicator"]:
                    parts.append(missing[:, None].astype(float))
            else:
                index = {v: i for i, v in enumerate(c["categories"])}
                onehot = np.zeros((len(values), len(index)))
                for row, value in enumerate(values):
                    if not _missing(value) and str(value) in index:
                        onehot[row, index[str(value)]] = 1.0
                parts.append(onehot)
        return (
            np.concatenate(parts, axis=1).astype(np.float32)
            if parts
            else np.zeros((len(table), 0), np.float32)
        )

    def state(self) -> list[dict[str, Any]]:
        """The fitted encoding as plain data (for checkpoints and MLflow)."""
        return [dict(c) for c in self.columns]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _guess_kind(name: str, values: pd.Series) -> str:
    """numeric when every present value is a number, categorical when few are; a column of
    mostly numbers with a few words is a typo to fix, never silently categorical."""
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce").notna()
    if len(present) and numeric.all():
        return "numeric"
    if len(present) and numeric.mean() >= 0.5:
        words = present[~numeric]
        raise DataError(
            f"metadata column {name!r} holds numbers but also {words.iloc[0]!r} (CSV line "
            f"{words.index[0] + 2}, {len(words)} such value(s)); fix the value, leave it empty, or "
            f"declare the column categorical with datamodule.meta_types.{name}=categorical."
        )
    return "categorical"


def _to_numbers(values: pd.Series, name: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna() & values.notna()]
    if len(bad):
        raise DataError(
            f"metadata column {name!r} is numeric but holds {bad.iloc[0]!r} (CSV line "
            f"{bad.index[0] + 2}); fix the value, leave it empty, or declare the column "
            f"categorical with datamodule.meta_types.{name}=categorical."
        )
    return numbers.astype(float)
