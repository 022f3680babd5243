"""``medclf-ensemble runs=[ID,...] [metalearner=logistic]``: a stacked ensemble of finished
runs, or (``members=[OVERRIDES,...] folds=K``) of cross-validation runs it trains first
(medclf.pipeline.ensemble). Writes the ensemble artifact, its test report and report.html,
and logs it as an MLflow run of its own.

Usage:
  medclf-ensemble runs=[CV_RUN_ID,CV_RUN_ID] metalearner=logistic
  medclf-ensemble sweep=SWEEP_ID top_k=3 metalearner=weighted_mean
  medclf-ensemble datamodule=folder datamodule.data_dir=DIR folds=5 \\
      'members=["backbone=resnet18","backbone=densenet121"]'   (composite, one command)
  medclf-predict ckpt_path=logs/ensembles/DATE/stacked_ensemble input=NEW_IMAGES

Keys (conf/ensemble.yaml): runs, sweep, top_k, members, folds, metalearner
(logistic | naive_bayes | svm | random_forest | gradient_boosting | knn | best |
weighted_mean), metalearner_params, output_dir; and every key of the training config
(threshold, eval.*, seed, logger.mlflow.*: the ensemble's; the rest: the members').
"""

from __future__ import annotations

import sys


def _task(argv: list[str]):
    from pathlib import Path

    from medclf.cli.steps import (
        compose_command,
        own_keys,
        split_argv,
        start_logging,
        train_in_process,
    )
    from medclf.pipeline.ensemble import build_ensemble, member_ids, train_members

    _, train_argv, hydra_argv = split_argv(argv, own_keys("ensemble"))
    cfg = compose_command("ensemble", [a for a in argv if a not in hydra_argv])
    output_dir = Path(cfg.paths.output_dir)
    start_logging(output_dir / "ensemble.log")
    entries = [str(e) for e in (cfg.get("members") or [])]
    ids = member_ids(cfg) if (cfg.get("runs") or cfg.get("sweep") or not entries) else []
    if entries:
        ids += train_members(cfg, entries, train_argv, output_dir, train_in_process)
    command = " ".join(["medclf-ensemble", *argv])
    return build_ensemble(cfg, ids, output_dir, command)


def main(argv: list[str] | None = None) -> int:
    from medclf.cli.steps import run_main

    return run_main("ensemble", __doc__, list(sys.argv[1:] if argv is None else argv), _task)


if __name__ == "__main__":
    sys.exit(main())
