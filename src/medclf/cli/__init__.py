"""The commands: thin Hydra (or argparse) mains over medclf.pipeline, medclf.inference and
medclf.tracking. Nothing imports this package; importing a command stays cheap (Hydra and
OmegaConf only), so ``--help`` never imports torch, timm or mlflow."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from medclf.errors import MedclfError


def exit_on_user_error(task: Callable[[DictConfig], Any], cfg: DictConfig, name: str) -> Any:
    """``task(cfg)`` for a command's Hydra main: a medclf error is logged and printed as one
    line and the process exits 2 (no traceback); inside a multirun it is raised, so that the
    sweeper records the job as failed and applies its failure policy."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from medclf import console

    console.quiet(verbose=bool(cfg.get("verbose", False)))  # other libraries' noise: medclf.console
    try:
        return task(cfg)
    except MedclfError as exc:
        logging.getLogger(f"medclf.{name}").error("%s", exc)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check_choices(argv: list[str]) -> None:
    """Answer an unknown ``GROUP=OPTION`` with the closest options, before Hydra starts."""
    from medclf.config import check_group_choices

    try:
        check_group_choices(argv)
    except MedclfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
