"""``medclf-eval ckpt_path=… datamodule=…`` (in a checkout also ``python eval.py``): the test
report of a checkpoint on labelled data (medclf.pipeline.evaluate)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from medclf.cli import check_choices, exit_on_user_error
from medclf.config import CONF_DIR
from medclf.runtime import skip_collection_at_exit


def _task(cfg: DictConfig) -> dict[str, float]:
    from medclf.pipeline.evaluate import evaluate

    return evaluate(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(_task, cfg, "eval")


def main() -> None:
    skip_collection_at_exit()
    check_choices(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
