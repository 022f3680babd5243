"""Test metrics per subgroup (sex, age band, scanner...) with bootstrap intervals, and their
forest plot: whether the model works equally well for everyone it will be used on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medclf.errors import ConfigError, did_you_mean  # noqa: E402
from medclf.evaluation.intervals import metric_names, metric_values  # noqa: E402
from medclf.evaluation.proportions import robust_intervals  # noqa: E402

MISSING = "missing"
Bins = int | Sequence[float]


def _edge_texts(edges: np.ndarray) -> list[str]:
    """Interval edges as short text: 40 rather than 40.0, 6 significant digits unless that
    would make two edges read the same."""
    for precision in (6, None):
        texts = [
            np.format_float_positional(float(e), precision=precision, fractional=False, trim="-")
            for e in edges
        ]
        if len(set(texts)) == len(texts):
            break
    return texts


def _edges(values: pd.Series, bins: Bins) -> np.ndarray:
    """Ascending bin edges: ``bins`` quantile edges of the values (pd.qcut's, repeated edges
    dropped) or the given edges."""
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise ConfigError(f"bins={bins}: the number of quantile bins must be 1 or more")
        return pd.qcut(values, int(bins), retbins=True, duplicates="drop")[1]
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError(
            f"bins={list(bins)}: give bin edges as an increasing list of at least two "
            "numbers (e.g. [0, 40, 60, 120]) or a number of quantile bins (e.g. 4)"
        )
    return edges


def bin_column(values: pd.Series, bins: Bins = 4) -> pd.Series:
    """Subgroup labels for one metadata column: numbers binned into intervals, other values
    as text, missing values as "missing".

    ``bins`` is a number of quantile bins (pd.qcut's edges, repeated edges dropped) or a list
    of edges (as pd.cut). Intervals are closed on the left, the last one on both sides
    (like np.histogram), so labels read "[40, 60)" ... "[60, 90]"; numbers outside given
    edges become "< 40" or "> 90". The result is categorical, its categories in display
    order (intervals ascending, "missing" last), with only the labels that occur.
    """
    values = pd.Series(values).reset_index(drop=True)
    missing = values.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        labels = values.astype(str).where(~missing, MISSING)
        order = sorted(set(labels) - {MISSING})
    else:
        present = values[~missing].astype(float)
        if present.empty:
            labels, order = pd.Series([MISSING] * len(values), dtype=object), []
        else:
            labels, order = _interval_labels(values.astype(float), present, bins)
    order += [MISSING] if missing.any() else []
    return pd.Series(pd.Categorical(labels, categories=order), name=values.name)


def _interval_labels(
    values: pd.Series, present: pd.Series, bins: Bins
) -> tuple[pd.Series, list[str]]:
    """Interval labels of the non-missing ``values`` ("missing" elsewhere) and the labels
    in ascending order."""
    edges = _edges(present, bins)
    texts = _edge_texts(edges)
    if len(edges) == 1:
        names = [f"[{texts[0]}, {texts[0]}]"]
    else:
        names = [f"[{lo}, {hi})" for lo, hi in zip(texts[:-1], texts[1:], strict=True)]
        names[-1] = names[-1][:-1] + "]"
    names = [f"< {texts[0]}", *names, f"> {texts[-1]}"]
    x = values.to_numpy()
    slot = np.searchsorted(edges, x, side="right")
    slot[x == edges[-1]] = max(len(edges) - 1, 1)
    text = np.asarray(names, dtype=object)[slot]
    text[np.isnan(x)] = MISSING
    used = set(text)
    return pd.Series(text, dtype=object), [name for name in names if name in used]


def _bins_for(bins: Bins | Mapping[str, Bins], column: str) -> Bins:
    """The binning of one column: its own entry when ``bins`` is a mapping (else 4)."""
    if isinstance(bins, Mapping):
        return bins.get(column, 4)
    return bins


def subgroup_table(
    targets: np.ndarray,
    probs: np.ndarray,
    chosen: np.ndarray,
    task: str,
    class_names: Sequence[str],
    columns: Mapping[str, pd.Series],
    bins: Bins | Mapping[str, Bins] = 4,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metrics: Sequence[str] = ("accuracy", "f1", "auroc"),
) -> pd.DataFrame:
    """One row per (metadata column, subgroup) and one "overall"/"all" row first: ``column,
    subgroup, n`` and per metric its value on the subgroup's samples (``metric_values``),
    ``<metric>_ci_low``/``_ci_high``, its interval on those samples alone, and
    ``<metric>_interval``, how it was made: "bootstrap" (groups restricted likewise, same
    seed for each subgroup), "clopper-pearson" for a proportion with too few successes or
    failures for the bootstrap, or "too small" (``proportions.robust_intervals``' rule).

    ``columns`` maps a column name to its values, one per sample in the order of
    ``targets`` (the index is ignored); ``bins`` (one setting, or a dict column → setting)
    bins numeric columns as ``bin_column`` does. ``metrics`` are names ``metric_values``
    returns, per-class ones included (``sensitivity_<class>``).
    """
    known = metric_names(task, class_names)
    for name in metrics:
        if name not in known:
            raise ConfigError(
                f"metrics: unknown metric {name!r}; choose among accuracy, precision, recall, "
                f"f1, auroc or sensitivity_/specificity_/f1_<class>.{did_you_mean(name, known)}"
            )
    targets, probs, chosen = np.asarray(targets), np.asarray(probs), np.asarray(chosen)
    n = len(targets)
    group_array = None if groups is None else np.asarray(groups)
    parts = [("overall", "all", np.ones(n, dtype=bool))]
    for column, values in columns.items():
        if len(values) != n:
            raise ConfigError(
                f"subgroup column {column!r} has {len(values)} values for {n} test samples; "
                "give one value per test sample, in the order of the predictions"
            )
        labels = bin_column(values, _bins_for(bins, column))
        codes = labels.cat.codes.to_numpy()
        for code, subgroup in enumerate(labels.cat.categories):
            parts.append((column, subgroup, codes == code))
    rows = []
    for column, subgroup, mask in parts:
        args = (targets[mask], probs[mask], chosen[mask], task, class_names)
        values = metric_values(*args)
        intervals = robust_intervals(
            *args,
            groups=None if group_array is None else group_array[mask],
            n_resamples=n_resamples,
            seed=seed,
            level=level,
        )
        row = {"column": column, "subgroup": subgroup, "n": int(mask.sum())}
        for name in metrics:
            low, high, method = intervals[name]
            row.update(
                {
                    name: values[name],
                    f"{name}_ci_low": low,
                    f"{name}_ci_high": high,
                    f"{name}_interval": method,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def forest_figure(table: pd.DataFrame, metric: str = "f1") -> plt.Figure:
    """Forest plot of a ``subgroup_table``: a point and interval per subgroup, top to bottom
    in table order, labelled "column = subgroup (n=…)", with a dashed line at the overall
    value."""
    if metric not in table.columns:
        measured = [c for c in table.columns if f"{c}_ci_low" in table.columns]
        raise ConfigError(
            f"metric={metric!r} is not in the subgroup table; it has "
            f"{', '.join(measured)}.{did_you_mean(metric, measured)}"
        )
    overall = table[table["column"] == "overall"]
    rows = table[table["column"] != "overall"].reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    value = rows[metric].to_numpy(dtype=float)
    low = rows[f"{metric}_ci_low"].to_numpy(dtype=float)
    high = rows[f"{metric}_ci_high"].to_numpy(dtype=float)
    spread = np.vstack([value - low, high - value])
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(rows) + 1.5)))
    ax.errorbar(value, y, xerr=np.where(np.isnan(spread), 0, spread), fmt="o", capsize=3)
    if not overall.empty:
        ax.axvline(float(overall[metric].iloc[0]), color="grey", linestyle="--", label="overall")
        ax.legend(loc="lower right", fontsize=8)
    labels = [f"{r.column} = {r.subgroup} (n={r.n})" for r in rows.itertuples()]
    ax.set(yticks=y, yticklabels=labels, xlabel=metric, title=f"{metric} per subgroup")
    ax.set_ylim(-0.75, len(rows) - 0.25)
    fig.tight_layout()
    return fig
