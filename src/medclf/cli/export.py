"""``medclf-export ckpt_path=PATH [format=onnx|torchscript]``: a checkpoint as a
self-describing ONNX or TorchScript model (medclf.inference.export)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from medclf.cli import exit_on_user_error
from medclf.config import CONF_DIR


def _task(cfg: DictConfig):
    from medclf.inference.export import run

    return run(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(_task, cfg, "export")


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
