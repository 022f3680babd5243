"""``medclf-predict ckpt_path=… input=DIR_OR_CSV`` (in a checkout also ``python predict.py``):
class probabilities and predictions for new images (medclf.inference.predict)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from medclf.cli import exit_on_user_error
from medclf.config import CONF_DIR
from medclf.runtime import skip_collection_at_exit


def _task(cfg: DictConfig):
    from medclf.inference.predict import predict

    return predict(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(_task, cfg, "predict")


def main() -> None:
    skip_collection_at_exit()
    _hydra_main()


if __name__ == "__main__":
    main()
