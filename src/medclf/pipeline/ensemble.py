"""``medclf-ensemble runs=[ID,...]``: a stacked ensemble of finished runs (AUCMEDI's
stacking and composite modes).

The members (medclf.pipeline.members) are cross-validation runs (their folds averaged; the
metalearner learns from their out-of-fold predictions) or training runs (the metalearner
learns from their validation predictions). Nothing the metalearner sees is a test sample or
a prediction of a model on its own training data. The ensemble is one artifact
(medclf.inference.stacking) in its run directory, tested on the members' test split with the
full test report (medclf.pipeline.ensemble_report) and logged as an MLflow run of its own
with the members' test data inputs, so medclf-compare compares it with them.

``members=[OVERRIDES,...]`` (composite): each entry is trained first as a ``folds``-fold
cross-validation run (``medclf-train cv.folds=K <the command's overrides> <entry>``), then
they are stacked on their out-of-fold predictions.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError

log = logging.getLogger("medclf.ensemble")


@dataclass
class Built:
    """What building an ensemble left: its artifact folder, MLflow run, test metrics and
    probabilities, and its report."""

    folder: Path
    run_id: str | None
    metrics: dict[str, float]
    probs: np.ndarray
    report: Path
    comparison: Any  # the ensemble against each member (a DataFrame)
    members: list[Any]


def choose_threshold(value: Any, task: str, targets, probs, class_names) -> Any:
    """The ensemble's threshold: a number as given, or a rule (youden, f1, ...) applied to
    the metalearner's cross-validated predictions of its own rows (never the test split);
    multiclass: argmax, no threshold."""
    from medclf.evaluation.thresholds import ThresholdRule, choose_thresholds, threshold_for_task

    if task == "multiclass":
        return 0.5
    rule = threshold_for_task(value if value is not None else 0.5, task)
    if not isinstance(rule, ThresholdRule):
        return float(rule)
    chosen = choose_thresholds(rule, targets, probs, task, class_names)
    return [float(v) for v in chosen] if task == "multilabel" else float(chosen[0])


def tracking_uri(cfg: DictConfig) -> str:
    """The store the member runs are in (the MLflow logger's)."""
    uri = OmegaConf.select(cfg, "logger.mlflow.tracking_uri")
    if not uri:
        raise ConfigError(
            "an ensemble reads its members from MLflow, and no MLflow logger is configured: "
            "use logger=mlflow."
        )
    return str(uri)


def member_ids(cfg: DictConfig) -> list[str]:
    """``runs``, or the ``top_k`` best runs of sweep ``sweep``."""
    runs = [str(r) for r in (OmegaConf.select(cfg, "runs") or [])]
    sweep = OmegaConf.select(cfg, "sweep")
    if sweep:
        from medclf.tracking.ensembles import sweep_best_runs

        k = int(OmegaConf.select(cfg, "top_k") or 3)
        experiment = str(OmegaConf.select(cfg, "logger.mlflow.experiment_name") or "medclf")
        found = sweep_best_runs(tracking_uri(cfg), experiment, str(sweep), k)
        if not found:
            raise ConfigError(f"sweep={sweep}: no finished run with a score in that sweep.")
        log.info("sweep %s: its %d best runs: %s", sweep, len(found), ", ".join(found))
        runs += found
    if len(runs) < 1:
        raise ConfigError(
            "nothing to stack: give runs=[RUN_ID,...] (cross-validation or training runs), "
            "sweep=ID top_k=K, or members=[OVERRIDES,...] to train them first."
        )
    return runs


def build_ensemble(
    cfg: DictConfig, run_ids: list[str], output_dir: Path, command: str, tags: dict | None = None
) -> Built:
    """Stack the runs ``run_ids`` as ``cfg`` says (``metalearner``, ``metalearner_params``,
    ``threshold``, ``eval``, ``seed``); the artifact and report go to ``output_dir``."""
    from medclf.inference.metalearners import check_name, cross_validated, features, fit_metalearner
    from medclf.inference.stacking import Member, StackedEnsemble, save_ensemble
    from medclf.pipeline.ensemble_report import log_run, write_report
    from medclf.pipeline.members import load_members, stacking_rows
    from medclf.tracking import names

    name = check_name(str(cfg.get("metalearner") or "logistic"))
    params = cfg.get("metalearner_params") or {}
    params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else params
    output_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        members = load_members(uri, run_ids, Path(scratch))
        rows = stacking_rows(members)
        sources = sorted({m.source for m in members})
        meta = fit_metalearner(
            name,
            features(rows.held_out),
            rows.targets,
            rows.samples,
            rows.task,
            rows.class_names,
            len(members),
            params,
            int(cfg.get("seed", 0)),
        )
        validated = cross_validated(meta)
        threshold = choose_threshold(
            cfg.get("threshold"), rows.task, rows.targets, validated, rows.class_names
        )
        ensemble = StackedEnsemble(
            [
                Member(
                    m.name, m.run.run_id, m.checkpoints, "cv" if m.run.cross_validation else "run"
                )
                for m in members
            ],
            meta,
            threshold,
            {
                "fitted_on": f"{' and '.join(sources)} predictions of {len(rows.samples)} samples",
                "command": command,
            },
        )
        folder = save_ensemble(ensemble, output_dir / names.ENSEMBLE_DIR)
        log.info(
            "stacked %d member(s) with %s, fitted on the %s predictions of %d samples; artifact %s",
            len(members),
            name,
            " and ".join(sources),
            len(rows.samples),
            folder,
        )
        probs = ensemble.combine(rows.test_probs)
        report = write_report(cfg, ensemble, members, rows, probs, validated, output_dir, command)
        run_id = log_run(cfg, ensemble, members, report, output_dir, command, tags or {})
    return Built(folder, run_id, report.metrics, probs, report.html, report.comparison, members)


def train_member(cfg: DictConfig, argv: list[str], run_dir: Path, train) -> str:
    """Train one cross-validation run, ``medclf-train ARGV hydra.run.dir=RUN_DIR`` (``train``
    runs it and returns its exit status); returns its MLflow run id."""
    from medclf.tracking.runs import run_by_output_dir

    argv = [*argv, f"hydra.run.dir={run_dir}"]
    status = train(argv)
    if status != 0:
        raise ConfigError(
            f"medclf-train {' '.join(argv)} did not finish (exit status {status}); see its log "
            f"in {run_dir}."
        )
    found = run_by_output_dir(tracking_uri(cfg), _experiment(cfg), str(run_dir))
    if found is None:
        raise ConfigError(f"no MLflow run found for {run_dir}: is logger=mlflow set?")
    return found


def train_members(
    cfg: DictConfig, entries: list[str], base: list[str], output_dir: Path, train
) -> list[str]:
    """Composite: train each entry of ``members`` as a ``folds``-fold cross-validation run
    with the command's training overrides ``base`` (``train``: runs ``medclf-train`` with an
    argument list, returns its exit status; the folds log no MLflow model of their own);
    returns their MLflow run ids."""
    folds = int(cfg.get("folds") or 5)
    if folds < 2:
        raise ConfigError(f"folds={folds}: a composite ensemble needs at least 2 folds.")
    ids = []
    for i, entry in enumerate(entries):
        # a member's folds are parts of the ensemble: the ensemble's run holds the model
        argv = [*base, *str(entry).split(), f"cv.folds={folds}", "logger.mlflow.save_model=false"]
        log.info("member %d of %d: medclf-train %s", i + 1, len(entries), " ".join(argv))
        ids.append(train_member(cfg, argv, output_dir / f"member_{i}", train))
    return ids


def _experiment(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "logger.mlflow.experiment_name") or "medclf")
