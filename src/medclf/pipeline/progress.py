"""The training progress bar: Lightning's rich bar, reading the logged metrics less often.

Lightning's ``RichProgressBar`` redraws from a background thread ``refresh_rate`` times a
second, but reads the logged metrics (the loss shown beside the bar) after every training
batch. Reading a metric that lives on a GPU copies it to the host, which waits for every
queued kernel: the host can no longer prepare the next batch while the GPU runs the current
one. ``ProgressBar`` reads them at most every ``metrics_interval`` seconds during training
(and, as before, at the end of each epoch and of validation), so the shown loss is at most
that old. The test pass shows no bar unless ``show_test`` (``verbose=true``): after training,
the console ends with the run's summary. The bar shows the logged metrics only, not
Lightning's ``v_num`` (the last 4 characters of the MLflow run id), which would make the first
step wait for the MLflow store (medclf.tracking.logger opens it beside the first steps); the
run is named in the log and the summary.
"""

from __future__ import annotations

import time
from typing import Any

from medclf.compat import rich_progress_bar_class


class ProgressBar(rich_progress_bar_class()):
    def __init__(
        self, *args: Any, metrics_interval: float = 1.0, show_test: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.show_test = bool(show_test)
        if metrics_interval < 0:
            raise ValueError(f"metrics_interval must be >= 0 seconds, got {metrics_interval}")
        self.metrics_interval = metrics_interval
        self._in_train_batch = False
        self._metrics_read_at = float("-inf")

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._in_train_batch = True
        try:
            super().on_train_batch_end(*args, **kwargs)
        finally:
            self._in_train_batch = False

    def on_test_start(self, *args: Any, **kwargs: Any) -> None:
        if self.show_test:
            super().on_test_start(*args, **kwargs)

    def on_test_batch_start(self, *args: Any, **kwargs: Any) -> None:
        if self.show_test:
            super().on_test_batch_start(*args, **kwargs)

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        if self.show_test:
            super().on_test_batch_end(*args, **kwargs)

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        return dict(trainer.progress_bar_metrics)

    def read_metrics_now(self, trainer: Any) -> bool:
        now = time.monotonic()
        if self._in_train_batch and now - self._metrics_read_at < self.metrics_interval:
            return False
        self._metrics_read_at = now
        return True
