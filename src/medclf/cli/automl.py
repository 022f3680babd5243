"""``medclf-automl datamodule=folder datamodule.data_dir=DIR budget=2h``: from a folder of
images to a tested stacked ensemble within a wall-time budget (medclf.pipeline.automl):
reads the data and picks image size, batch size, recipe and backbones (with reasons in the
log), runs a pruned Optuna search, trains the best trials as cross-validation runs, stacks
them, tests once and writes one report (automl.html). After Ctrl-C or a kill, the same
command continues.

Usage:
  medclf-automl datamodule=folder datamodule.data_dir=/data/cells budget=2h
  medclf-automl datamodule=csv datamodule.csv_path=labels.csv budget=30m automl.top_k=2
  medclf-automl ... hydra.sweeper.storage=postgresql://USER@HOST/optuna   (a team server)

Keys (conf/automl.yaml): budget, automl.name, automl.backbones, automl.max_trials,
automl.pruner, automl.top_k, automl.folds, automl.metalearner; every key of the training
config (applied to every step); hydra.sweeper.* (to the search).
"""

from __future__ import annotations

import sys


def _task(argv: list[str]):
    import time

    from omegaconf import open_dict

    from medclf.cli.steps import compose_command, own_keys, split_argv, start_logging
    from medclf.cli.steps import train_in_process as train
    from medclf.pipeline.automl import AutoML
    from medclf.pipeline.automl_state import automl_folder, folder_lock

    started = time.time()  # the heavy imports come after: they count
    _, train_argv, hydra_argv = split_argv(argv, own_keys("automl"))
    cfg = compose_command("automl", [a for a in argv if a not in hydra_argv], output_dir=False)
    folder = automl_folder(cfg, argv)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.output_dir = str(folder)
    with folder_lock(folder):
        start_logging(folder / "automl.log")
        return AutoML(cfg, train_argv, hydra_argv, argv, train, started).run()


def main(argv: list[str] | None = None) -> int:
    from medclf.cli.steps import run_main

    return run_main("automl", __doc__, list(sys.argv[1:] if argv is None else argv), _task)


if __name__ == "__main__":
    sys.exit(main())
