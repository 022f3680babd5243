"""``medclf-train`` (in a checkout also ``python train.py``): compose the config, check it,
train, test the best checkpoint, track (medclf.pipeline.task)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from medclf import runtime
from medclf.cli import check_choices, exit_on_user_error
from medclf.config import CONF_DIR


def _task(cfg: DictConfig) -> float | None:
    from medclf.pipeline.task import train_task

    return train_task(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return exit_on_user_error(_task, cfg, "train")


def main() -> None:
    """Console entry point: check group choices, then hand over to Hydra."""
    runtime.begin()
    runtime.skip_collection_at_exit()
    # check_only is a key of train.yaml; Hydra refuses "+key=" for a key that exists
    sys.argv = [a.replace("+check_only=", "check_only=", 1) for a in sys.argv]
    sys.argv = [a.replace("+audit_only=", "audit_only=", 1) for a in sys.argv]
    check_choices(sys.argv[1:])
    if "--help" in sys.argv or "-h" in sys.argv:
        from medclf.compat import share_hydra_group_listing

        share_hydra_group_listing()
    with runtime.startup_without_collection():
        _hydra_main()


if __name__ == "__main__":  # python -m medclf.cli.train: how DDP children of a multirun start
    main()
