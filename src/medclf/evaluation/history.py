"""Training curves: loss and F1 (train and validation) per epoch, kept across a resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback

from medclf.runtime import in_background
from medclf.tracking import names
from medclf.tracking.logger import mlflow_loggers


class TrainingCurves(Callback):
    """Record loss and F1 (train and validation) per epoch; after fitting, write
    ``plots/training_curves.png`` and ``plots/history.csv`` in the run directory and log
    them to MLflow."""

    KEYS = ("train/loss_epoch", "train/f1", "val/loss", "val/f1")

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir) / names.PLOTS_DIR
        self.history: list[dict[str, float]] = []
        self._ended_epoch: int | None = None
        self._val_row: dict[str, float] | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs this hook before the module's own ``on_train_epoch_end``, where the
        # train metrics are computed: read the epoch's values at the next hook
        self._ended_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # what a checkpoint taken now knows of this epoch
            self._val_row = self._row(trainer, trainer.current_epoch, self.KEYS[2:])

    def _record(self, trainer: L.Trainer) -> None:
        if self._ended_epoch is None:
            return
        row = self._row(trainer, self._ended_epoch, self.KEYS)
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        self._ended_epoch = None

    @staticmethod
    def _row(trainer: L.Trainer, epoch: int, keys) -> dict[str, float]:
        metrics = trainer.callback_metrics
        row = {"epoch": epoch}
        for key in keys:
            if key in metrics:
                row[key.replace("_epoch", "")] = float(metrics[key])
        return row

    def state_dict(self) -> dict:
        """The rows so far (plain numbers), with the validation values of the epoch being
        checkpointed: a resumed run's curves start where the checkpoint's left off."""
        pending = self._val_row
        done = {r["epoch"] for r in self.history}
        extra = [pending] if pending and pending["epoch"] not in done else []
        return {"history": [dict(r) for r in self.history + extra]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        from medclf.evaluation.plots import save_figure, training_curves_figure

        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = [
            self.output_dir / names.HISTORY_FILE,
            self.output_dir / names.figure_file("training_curves"),
        ]
        pd.DataFrame(self.history).to_csv(files[0], index=False)
        unfrozen_at = getattr(pl_module, "freeze_epochs", 0) or None
        history, loggers = [dict(row) for row in self.history], mlflow_loggers(trainer.loggers)

        def plot_and_log() -> None:  # beside the test pass (medclf.runtime.in_background)
            save_figure(training_curves_figure(history, unfrozen_at), files[1])
            for logger in loggers:
                for path in files:
                    logger.log_artifact(path, names.PLOTS_DIR)

        in_background(plot_and_log)
