"""The Hydra Sweeper class; the work is done by medclf.search.study.OptunaSearch (imported
lazily)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Run an Optuna study, one Hydra job per trial, resumable from its storage."""

    def __init__(self, **kwargs: Any) -> None:
        from medclf.search.study import OptunaSearch

        self.search = OptunaSearch(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        """Run the search; a user's error (a bad storage, a search space that is not the
        study's...) is one line and exit status 2, as for the other commands."""
        from medclf.errors import MedclfError

        try:
            return self.search.sweep(arguments)
        except MedclfError as exc:
            logging.getLogger("medclf.search").error("%s", exc)
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
