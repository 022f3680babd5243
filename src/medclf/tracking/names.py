"""Every name medclf writes into MLflow and reads back: run tags, param prefixes, artifact
folders and files, and the figures of the test report. A writer and its reader import the
same constant; no other module spells these strings (tests/test_tracking_names.py checks)."""

from __future__ import annotations

# --- run tags -----------------------------------------------------------------------------
# MLflow's own tag keys
NOTE = "mlflow.note.content"  # the run's description (the report's markdown summary)
PARENT_RUN = "mlflow.parentRunId"  # a CV fold's parent run
GIT_COMMIT = "mlflow.source.git.commit"
RUN_NAME = "mlflow.runName"
EXPERIMENT_KIND = "mlflow.experimentKind"  # an experiment tag: which runs view MLflow opens
DATASET_CONTEXT = "mlflow.data.context"  # a dataset input's role (train, val, test)

# what ran and where
OVERRIDES = "overrides"  # the command line's Hydra overrides
OUTPUT_DIR = "output_dir"  # the run directory (checkpoints, report.html); predict.py reads it
MODEL_URI = "model_uri"  # the logged MLflow model

# resuming
RESUME_COUNT = "resume_count"
RESUMED_FROM = "resumed_from_checkpoint"
RESUMED_AT_EPOCH = "resumed_at_epoch"

# cross-validation
CV_FOLDS = "cv_folds"  # on the parent run: the number of folds
CV_FOLD = "cv_fold"  # on a fold's run: its index
FOLD_CHECKPOINTS = "fold_checkpoints"  # on the parent run: ';'-joined best checkpoints

# multiruns (medclf.tracking.sweeps)
SWEEP_ID = "sweep_id"
SWEEP_DIR = "sweep_dir"
SWEEP_JOB = "sweep_job"

# Optuna searches (medclf.search)
OPTUNA_STUDY = "optuna_study"
OPTUNA_TRIAL = "optuna_trial"
OPTUNA_STATE = "optuna_state"  # COMPLETE, PRUNED or FAIL
OPTUNA_PRUNED_EPOCH = "optuna_pruned_epoch"
OPTUNA_BEST = "optuna_best"  # "true" on the study's best trial's run
OPTUNA_RETRIED_AS = "optuna_retried_as"  # on a dead worker's run: the trial that repeats it
OPTUNA_RETRY_OF = "optuna_retry_of"  # on a retry's run: the trial whose worker died

# what the run's model is (multiclass, binary, multilabel): the comparison reads it
TASK = "task"

# medclf-compare
COMPARED_RUNS = "compared_runs"  # ';'-joined run ids
BASELINE_RUN = "baseline_run"
COMPARE_DIR = "compare"  # the comparison's artifacts
COMPARISON_FILE = "comparison.csv"
COMPARISON_PAGE = "compare.html"

# stacked ensembles (medclf-ensemble, medclf-automl)
ENSEMBLE_MEMBERS = "ensemble_members"  # ';'-joined member run ids
ENSEMBLE_METALEARNER = "ensemble_metalearner"
AUTOML_DIR = "automl_dir"  # on an AutoML's ensemble run: the AutoML's folder

# medclf-audit
AUDIT = "audit"  # on an audit's run: the data it audited (its name, folder:xray)
AUDIT_CV_RUN = "audit_cv_run"  # the cross-validation run whose out-of-fold probabilities it read
AUDIT_DIR = "audit"  # the audit's artifacts
AUDIT_PAGE = "audit.html"
AUDIT_SUMMARY_FILE = "audit.json"  # counts found and seconds per phase
DUPLICATES_FILE = "duplicates.csv"
LABEL_ISSUES_FILE = "label_issues.csv"
OVERVIEW_FILE = "overview.csv"

# eval.py
EVAL_CHECKPOINT = "eval_checkpoint"
EVAL_SPLIT = "eval_split"
TRAINED_IN_RUN = "trained_in_run"

# --- params -------------------------------------------------------------------------------
DATA_PARAM = "data"  # data.<split>.samples, data.<split>.groups, data.<split>.class.<name>
FITTED_PARAM = "fitted"  # fitted.temperature, fitted.threshold: chosen on validation
STACKING_PARAM = "stacking"  # a stacked ensemble: stacking.metalearner, stacking.models

# --- artifacts ----------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"  # the resolved config, in the run directory and the run
SPLITS_FILE = "splits.csv"  # sample, split, group, label
REPORT_FILE = "report.html"
CV_TABLE_FILE = "cv_folds.csv"
VAL_PREDICTIONS_FILE = "val_predictions.csv"  # a CV fold's predictions of its held-out fold
OOF_FILE = "oof_predictions.csv"  # on a CV parent run: every fold's, one row per sample
UNSENT_FILE = "mlflow_unsent.jsonl"  # metrics the server did not take (run directory only)
STARTUP_FILE = "startup.json"  # the start-up's phases (run directory only)
MLFLOW_RUN_FILE = "mlflow_run.json"  # the run's MLflow run, once made (run directory only)

ENSEMBLE_DIR = "stacked_ensemble"  # the ensemble artifact: spec, metalearner, members
ENSEMBLE_FILE = "ensemble.json"  # the ensemble's spec (members, metalearner, classes)
METALEARNER_FILE = "metalearner.npz"  # what the metalearner was fitted on, and its outputs
MEMBERS_DIR = "member_checkpoints"  # inside the ensemble artifact
ENSEMBLE_COMPARISON_FILE = "members_comparison.csv"  # the ensemble against each member
AUTOML_REPORT = "automl.html"
AUTOML_STATE = "automl_state.json"
LEADERBOARD_FILE = "leaderboard.csv"
CHECKPOINTS_DIR = "checkpoints"  # the best checkpoint, in the run directory and the run
TEST_DIR = "test"  # the test report's files
PLOTS_DIR = "plots"  # training curves
EVAL_DIR = "eval"  # eval.py's config in an existing run

TEST_PREDICTIONS_FILE = "test_predictions.csv"
PER_CLASS_FILE = "per_class_report.csv"
METRICS_FILE = "metrics.csv"  # metric, value, ci_low, ci_high, interval (its method)
SUBGROUPS_FILE = "subgroups.csv"
PATIENT_PREDICTIONS_FILE = "patient_predictions.csv"
HISTORY_FILE = "history.csv"
DECISION_CURVE_FILE = "decision_curve.csv"
CONFORMAL_FILE = "conformal_sets.csv"

# The report's figures: file stem (``<stem>.png``) → caption. Every figure the test report or
# the training curves save is named here; report.html shows them by these names.
FIGURES: dict[str, str] = {
    "confusion_matrix": "Confusion matrix",
    "roc_curves": "ROC curves",
    "pr_curves": "Precision-recall curves",
    "per_class_metrics": "Per-class metrics",
    "reliability": "Reliability diagram",
    "subgroups_forest": "Subgroup forest plot",
    "decision_curve": "Decision curve (net benefit)",
    "comparison": "Differences to the baseline (paired, 95 % intervals)",
    "training_curves": "Training curves",
}


def figure_file(stem: str) -> str:
    """``<stem>.png`` for a figure of :data:`FIGURES` (a KeyError names an unknown one)."""
    FIGURES[stem]
    return f"{stem}.png"


def param(prefix: str, *parts: str) -> str:
    """A param name under one of the prefixes above: ``param(DATA_PARAM, "train", "samples")``
    → ``data.train.samples``."""
    return ".".join((prefix, *parts))
