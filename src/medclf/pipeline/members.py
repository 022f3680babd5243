"""The members of a stacked ensemble and the rows its metalearner may see.

A member is an MLflow run: a cross-validation run (its fold models, averaged; its
out-of-fold predictions, ``oof_predictions.csv``: each sample predicted by the fold model
that never trained on it) or one training run (its best checkpoint; its validation split's
predictions, made here from its run directory's config and checkpoint). Test predictions
come from the runs' own test reports (a cross-validation run's folds averaged).

:func:`stacking_rows` puts them side by side: the metalearner's rows are the samples every
member held out (never a test sample: checked), the test rows the test split all members
share (the same samples, or a DataError).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medclf.errors import ConfigError, DataError
from medclf.evaluation.comparison import TestSet, read_predictions, test_set
from medclf.inference.table import prob_columns
from medclf.tracking.ensembles import MemberRun
from medclf.tracking.names import CONFIG_FILE

log = logging.getLogger("medclf.ensemble")


@dataclass
class MemberData:
    """One member's held-out and test predictions (sorted by sample) and checkpoints."""

    run: MemberRun
    checkpoints: list[str]
    held_out: pd.DataFrame
    test: pd.DataFrame
    class_names: list[str]
    source: str  # "out-of-fold" or "validation"

    @property
    def name(self) -> str:
        return self.run.name


@dataclass
class StackingRows:
    """The metalearner's rows and the test rows, each member's probabilities side by side."""

    samples: np.ndarray
    held_out: list[np.ndarray]  # per member (N, K)
    targets: np.ndarray
    test: TestSet
    test_probs: list[np.ndarray]  # per member (T, K)
    class_names: list[str]
    task: str


def _mean_of_folds(paths: list[Path], run: MemberRun) -> pd.DataFrame:
    """A cross-validation run's test predictions: its folds' probabilities averaged."""
    frames = [read_predictions(p)[0] for p in paths]
    first = frames[0]
    columns = [c for c in first.columns if c.startswith("prob_")]
    for frame in frames[1:]:
        if list(frame["sample"]) != list(first["sample"]):
            raise DataError(f"run {run.run_id}: its folds were tested on different samples.")
    mean = np.mean([f[columns].to_numpy(dtype=np.float64) for f in frames], axis=0)
    out = first[["sample", "label"]].copy()
    out[columns] = mean
    return out


def _validation(run: MemberRun, checkpoint: str) -> pd.DataFrame:
    """A training run's validation predictions, made from its run directory's config (the
    data as it was split) and its checkpoint."""
    import torch
    from omegaconf import OmegaConf

    from medclf.inference.table import predictions_frame
    from medclf.models.checkpoint import load_module
    from medclf.models.registry import import_plugins
    from medclf.pipeline.build import make_datamodule

    config = Path(run.output_dir or "") / CONFIG_FILE
    if not config.is_file():
        raise DataError(
            f"run {run.run_id} ({run.name}): its run directory {run.output_dir} holds no "
            "config.yaml, so its validation predictions cannot be made; stack cross-validation "
            "runs (cv.folds=K), whose out-of-fold predictions are logged."
        )
    cfg = OmegaConf.load(config)
    import_plugins(OmegaConf.select(cfg, "imports"))
    datamodule = make_datamodule(cfg)
    module = load_module(checkpoint)
    probs = []
    with torch.no_grad():
        for batch in datamodule.full_loader("val"):
            probs.append(module.predict_proba(batch["image"], batch.get("metadata")).numpy())
    frame = predictions_frame(
        datamodule.split_frame("val")["sample"],
        np.concatenate(probs),
        module.class_names,
        module.task,
        module.threshold,
        targets=datamodule.split_targets("val"),
    )
    return frame.drop(columns=["prediction"]).sort_values("sample").reset_index(drop=True)


def load_members(tracking_uri: str, run_ids: list[str], folder: Path) -> list[MemberData]:
    """The members ``run_ids`` with their predictions (downloaded into ``folder``)."""
    from medclf.inference.predict import run_checkpoints
    from medclf.tracking.ensembles import member_run

    if not run_ids:
        raise ConfigError("runs=[]: give the MLflow run ids to stack, runs=[ID,ID,...].")
    members = []
    for i, run_id in enumerate(dict.fromkeys(str(r) for r in run_ids)):
        run = member_run(tracking_uri, run_id, folder / f"member_{i}")
        if not run.tests:
            raise DataError(
                f"run {run_id} ({run.name}) logged no test predictions (not tested, pruned or "
                "failed); stack finished, tested runs."
            )
        test = _mean_of_folds(run.tests, run)
        if run.cross_validation:
            if run.oof is None:
                raise DataError(
                    f"run {run_id} ({run.name}) is a cross-validation run without "
                    "oof_predictions.csv (made before medclf wrote them); train it again."
                )
            held_out, source = read_predictions(run.oof)[0], "out-of-fold"
            checkpoints = run.fold_checkpoints
        else:
            checkpoints = run_checkpoints(run_id, tracking_uri)
            held_out, source = _validation(run, checkpoints[0]), "validation"
        names = [c[len("prob_") :] for c in test.columns if c.startswith("prob_")]
        missing = [p for p in checkpoints if not Path(p).is_file()]
        if missing:
            raise DataError(f"run {run_id} ({run.name}): checkpoint(s) {missing} are not here.")
        members.append(MemberData(run, checkpoints, held_out, test, names, source))
    return members


def stacking_rows(members: list[MemberData]) -> StackingRows:
    """The rows every member held out (the metalearner's) and the shared test rows; members
    of other classes or test sets, and a held-out sample that is a test sample, are refused."""
    first = members[0]
    task = first.run.task or "multiclass"
    for member in members[1:]:
        if member.class_names != first.class_names:
            raise DataError(
                f"members {first.name} and {member.name} have other classes "
                f"({first.class_names} and {member.class_names}); stack runs of the same data."
            )
        if list(member.test["sample"]) != list(first.test["sample"]):
            raise DataError(
                f"members {first.name} and {member.name} were tested on different samples; "
                "stack runs of the same data, splits and seed."
            )
    names = first.class_names
    columns = prob_columns(names)
    tested = set(first.test["sample"])
    shared = set.intersection(*(set(m.held_out["sample"]) for m in members))
    leaked = sorted(shared & tested)
    if leaked:
        raise DataError(
            f"{len(leaked)} held-out sample(s) of the members are test samples (e.g. "
            f"{leaked[0]}): the members were split differently. Stack runs of the same splits."
        )
    dropped = {
        m.name: len(m.held_out) - len(shared) for m in members if len(m.held_out) > len(shared)
    }
    if dropped:
        log.info(
            "stacking on the %d samples every member held out (%s left out)",
            len(shared),
            ", ".join(f"{k}: {v}" for k, v in dropped.items()),
        )
    samples = np.array(sorted(shared), dtype=object)
    held, labels = [], None
    for member in members:
        frame = member.held_out.drop_duplicates("sample").set_index("sample").loc[samples]
        held.append(frame[columns].to_numpy(dtype=np.float64))
        labels = frame.reset_index()[["sample", "label"]] if labels is None else labels
    targets = test_set(labels, names, task).targets
    splits = pd.read_csv(first.run.splits, dtype=str) if first.run.splits else None
    test = test_set(first.test, names, task, splits)
    probs = [m.test[columns].to_numpy(dtype=np.float64) for m in members]
    return StackingRows(samples, held, targets, test, probs, names, test.task)
