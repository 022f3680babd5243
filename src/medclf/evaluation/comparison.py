"""Runs tested on the same test split, compared like a statistician: each run's difference
to a baseline with paired intervals and tests (medclf.evaluation.paired), Holm-corrected; a
forest plot; the decision curves of every run side by side; one page in the run report's
style (``compare.html``).

Input: each run's ``test_predictions.csv`` (medclf.inference.table's format) and, for
patient-level resampling, its ``splits.csv``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medclf.errors import DataError
from medclf.inference.table import PROB_PREFIX


@dataclass
class Compared:
    """One run's test predictions, aligned with the others'."""

    name: str
    probs: np.ndarray
    chosen: np.ndarray


@dataclass
class TestSet:
    """What the runs were tested on: targets in class order, class names, task, groups."""

    samples: list[str]
    targets: np.ndarray
    class_names: list[str]
    task: str
    groups: np.ndarray | None


def _indicator(column: pd.Series, class_names: Sequence[str]) -> np.ndarray:
    sets = [set(str(v).split(";")) if isinstance(v, str) and v else set() for v in column]
    return np.array([[c in s for c in class_names] for s in sets], dtype=bool)


def read_predictions(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A predictions table sorted by sample, and its class names (the prob_ columns)."""
    text = {"sample": str, "label": str, "prediction": str, "set": str, "unsure": str}
    frame = pd.read_csv(path, keep_default_na=False, dtype=text)
    names = [c[len(PROB_PREFIX) :] for c in frame.columns if c.startswith(PROB_PREFIX)]
    if "label" not in frame.columns or not names:
        raise DataError(f"{path}: not a test predictions table (sample, label, prob_<class>).")
    return frame.sort_values("sample").reset_index(drop=True), names


def test_set(frame: pd.DataFrame, class_names: list[str], task: str | None, splits=None):
    """The targets of a predictions table; ``task`` from the run's tag, or (older runs) a
    multi-label one where a label joins several names."""
    multilabel = task == "multilabel" or frame["label"].str.contains(";").any()
    if multilabel:
        targets = _indicator(frame["label"], class_names).astype(np.float32)
        task = "multilabel"
    else:
        position = {name: k for k, name in enumerate(class_names)}
        targets = frame["label"].map(position).to_numpy()
        task = task or "multiclass"
    groups = None
    if splits is not None and "group" in splits.columns:
        known = splits.drop_duplicates("sample").set_index("sample")["group"]
        values = frame["sample"].map(known)
        if values.notna().all() and values.astype(str).str.len().gt(0).all():
            groups = values.astype(str).to_numpy()
    return TestSet(list(frame["sample"]), targets, class_names, task, groups)


def aligned(frames: dict[str, pd.DataFrame], test: TestSet) -> list[Compared]:
    """Each run's probabilities and decisions (its ``prediction`` column) in the test set's
    sample order; runs that predicted other samples or classes are a DataError."""
    runs = []
    for name, frame in frames.items():
        if list(frame["sample"]) != test.samples:
            raise DataError(
                f"run {name} predicted other test samples than the first run; compare runs "
                "tested on the same split."
            )
        columns = [f"{PROB_PREFIX}{c}" for c in test.class_names]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"run {name} has no probabilities {missing}: other classes.")
        probs = frame[columns].to_numpy(dtype=np.float64)
        chosen = _indicator(frame["prediction"], test.class_names)
        runs.append(Compared(name, probs, chosen))
    return runs


def compare(test: TestSet, runs: list[Compared], baseline: str, n_resamples: int, seed: int):
    """The paired comparison table (medclf.evaluation.paired.compare_models)."""
    from medclf.evaluation.paired import compare_models

    return compare_models(
        test.targets,
        {run.name: (run.probs, run.chosen) for run in runs},
        test.task,
        test.class_names,
        baseline=baseline,
        groups=test.groups,
        n_resamples=n_resamples,
        seed=seed,
    )


def decision_curves(test: TestSet, runs: list[Compared]) -> pd.DataFrame | None:
    """The runs' net benefit curves in one table (one column per run), for binary and
    multi-label outputs; None for a softmax over several classes."""
    from medclf.evaluation.decision import decision_curve

    if test.task not in ("binary", "multilabel") and len(test.class_names) != 2:
        return None
    task = "binary" if test.task != "multilabel" else "multilabel"
    merged = None
    for run in runs:
        table = decision_curve(test.targets, run.probs, task, test.class_names, model=run.name)
        merged = (
            table
            if merged is None
            else merged.merge(table[["threshold", "label", run.name]], on=["threshold", "label"])
        )
    return merged


SECTIONS = {
    "runs": "Runs",
    "differences": "Differences to the baseline",
    "forest": "Forest plot",
    "decision": "Decision curves",
    "method": "Method",
    "reproduce": "Reproduce",
}


def page(
    title: str,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    figures: dict[str, Path],
    command: str,
    n_resamples: int,
    grouped: bool,
) -> str:
    """The comparison as one self-contained HTML page in the run report's style."""
    from medclf.evaluation.report_page import escape, html_figure, html_page, html_table

    shown = table.copy()
    shown["significant"] = np.where(shown["p_holm"] < 0.05, "yes (Holm p < 0.05)", "")
    unit = "patients" if grouped else "images"
    method = (
        f"<p>Each run against the baseline on the same test samples. Differences are B − A "
        f"with 95 % paired percentile bootstrap intervals ({n_resamples} resamples of {unit}: "
        "the same resample scores both runs). AUROC: DeLong's test for correlated ROC curves "
        "(per class one-vs-rest, per label for multi-label); accuracy: the exact McNemar test "
        "on the images one run got right and the other wrong. p-values are corrected with "
        "Holm's method over every test on this page. DeLong and McNemar count images as "
        "independent; with several images per patient, trust the bootstrap interval.</p>"
    )
    decision = html_figure(figures.get("decision_curve"), "decision_curve") or (
        '<p class="na">not computed: a softmax over several classes has no single treat '
        "decision (binary or multi-label runs only).</p>"
    )
    sections = {
        "runs": (SECTIONS["runs"], html_table(runs, numeric=False)),
        "differences": (SECTIONS["differences"], html_table(shown)),
        "forest": (SECTIONS["forest"], html_figure(figures.get("comparison"), "comparison")),
        "decision": (SECTIONS["decision"], decision),
        "method": (SECTIONS["method"], method),
        "reproduce": (SECTIONS["reproduce"], f"<pre><code>{escape(command)}</code></pre>"),
    }
    return html_page(title, "", sections)
