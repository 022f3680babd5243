"""MLflow: the run, params and artifacts (the store and its experiment: medclf.tracking.store).

Lightning's MLFlowLogger terminates the run in ``finalize`` after ``fit``; here the run stays
open through testing and artifact upload, and :meth:`MLflowRunLogger.end_run` sets its final
status (FINISHED, FAILED or KILLED) exactly once, from the pipeline. Metrics are sent by the
run's MLflow thread, so that no training step waits for the store. With
``open_in_background`` that thread also opens the store (imports MLflow, makes the
experiment and the run) once training has started (:class:`OpenStoreWhenTrainingStarts`):
nothing before the first step waits for it. No process is forked while it opens
(:func:`medclf.runtime.no_fork_during`): opening starts programs (``uname``, ``git``).
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import MLFlowLogger

from medclf import runtime
from medclf.compat import mlflow_run_started
from medclf.tracking import names
from medclf.tracking.store import ensure_experiment, reachable_uri, run_exists, sqlite_path

log = logging.getLogger(__name__)


class MLflowRunLogger(MLFlowLogger):
    """MLFlowLogger whose run is ended by the caller, with the experiment made up front.

    A tracking server that does not answer at start stops the run before training, naming
    the URI, or, with ``offline_fallback``, logs to ``offline_uri`` (the local store) and
    says so. Metrics that cannot be sent later (the server went away) are kept in memory and
    appended to ``spool_path`` (JSON lines), sent again with the next metrics and at the
    end; what is still unsent then is reported with the file's path.

    With ``open_in_background`` (a training run) the run's MLflow thread opens the store and
    makes the run, from :meth:`start_opening` on, while the caller goes on; what is logged
    meanwhile is sent in order once it is open, and whatever needs the store (the run id,
    the client) starts the opening if it has not started, and waits for it."""

    def __init__(
        self,
        experiment_name: str = "medclf",
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        save_model: bool = True,
        offline_fallback: bool = False,
        offline_uri: str | None = None,
        spool_path: str | None = None,
        open_in_background: bool = False,
        **kwargs: Any,
    ) -> None:
        # a server that does not answer stops the run here, before training (one request)
        tracking_uri = reachable_uri(tracking_uri or "", offline_fallback, offline_uri)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.spool_path = Path(spool_path) if spool_path else None
        self.save_model = save_model
        self._pending: list[tuple[dict[str, float], int | None]] = []
        self._sender: ThreadPoolExecutor | None = None
        self._sender_ident: int | None = None
        self._sent: list[Future] = []
        self._opening: Future | None = None
        self._go: threading.Event | None = None
        db = sqlite_path(tracking_uri or "")
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        args = (experiment_name, artifact_location, run_name, dict(tags or {}), kwargs)
        if open_in_background:
            self._go = threading.Event()
            self._opening = self._thread().submit(self._open_when_started, *args)
        else:
            self._open(*args)

    def start_opening(self) -> None:
        """Let the MLflow thread open the store now (with ``open_in_background``)."""
        go = self.__dict__.get("_go")
        if go is not None:
            go.set()

    def _open_when_started(self, *args: Any) -> None:
        """The first task of the MLflow thread: waits for :meth:`start_opening` (or for the
        interpreter's exit, when the run never started), then opens with no process forked
        meanwhile."""
        while not self._go.wait(0.5):
            if not threading.main_thread().is_alive():
                return
        with runtime.no_fork_during():
            self._open(*args, make_run=True)

    def _open(
        self, experiment_name, artifact_location, run_name, tags, kwargs, make_run=False
    ) -> None:
        """The experiment (made if new) and Lightning's logger state; with ``make_run``, the
        run too. The state is built on a plain MLFlowLogger and then taken over in one step,
        so that a caller never finds it half made (:meth:`__getattr__` waits until then)."""
        # a tracking server keeps the artifacts where it was told to (medclf-server proxies
        # them to its folder): a client-side folder would be unreachable from other nodes
        tracking_uri = self.tracking_uri
        server = tracking_uri.startswith(("http://", "https://"))
        ensure_experiment(tracking_uri, experiment_name, None if server else artifact_location)
        run_id = kwargs.pop("run_id", None)
        if run_id is not None and not run_exists(tracking_uri, run_id):
            log.warning(
                "the checkpoint's MLflow run %s is not in %s: logging to a new run",
                run_id,
                tracking_uri,
            )
            run_id = None
        state = MLFlowLogger(
            experiment_name=experiment_name,
            tracking_uri=tracking_uri,
            run_name=run_name,
            tags=tags,
            run_id=run_id,
            **kwargs,
        )
        if make_run:
            _ = state.run_id  # made now, in this thread, not by the first caller that asks
        self.__dict__.update(state.__dict__)

    def __getattr__(self, name: str) -> Any:
        """MLFlowLogger's own state (``_run_id``, ``_mlflow_client``, ...) exists once the
        store is open: until then a caller waits for it (the MLflow thread itself does not)."""
        opening = self.__dict__.get("_opening")
        if (
            opening is None
            or not name.startswith("_")
            or name.startswith("__")
            or threading.get_ident() == self.__dict__.get("_sender_ident")  # _in_thread()
        ):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.start_opening()
        opening.result()  # its error, if it failed
        return object.__getattribute__(self, name)

    @property
    def experiment(self) -> Any:
        """The MLflow client (MLFlowLogger's). Before the store is open, a stand-in that waits
        for it when used: Lightning asks for the client when fit sets up, only to make it."""
        if self._opening is None or self._opening.done() or self._in_thread():
            return MLFlowLogger.experiment.fget(self)
        return _ClientOnceOpen(self)

    def _in_thread(self) -> bool:
        return threading.get_ident() == self._sender_ident

    @property
    def opened(self) -> bool:
        """Whether the store is open (always, unless it opens in the background)."""
        return self._opening is None or (self._opening.done() and not self._opening.exception())

    @property
    def save_dir(self) -> str | None:
        """As MLFlowLogger's (a ``file:`` store's folder, else None), without waiting for the
        store: Lightning asks for it when fit starts."""
        prefix = "file:"
        return self.tracking_uri[len(prefix) :] if self.tracking_uri.startswith(prefix) else None

    def later(self, function, *args: Any) -> Future:
        """``function(*args)`` in the run's MLflow thread, after the store opened and after
        what was logged before; its error is raised by the next :meth:`log_metrics` or
        :meth:`flush`."""
        future = self._thread().submit(function, *args)
        self._sent.append(future)
        return future

    def _thread(self) -> ThreadPoolExecutor:
        if self._sender is None:
            self._sender = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="mlflow", initializer=self._name_thread
            )
        return self._sender

    def _name_thread(self) -> None:
        self._sender_ident = threading.get_ident()

    def _raise_failed(self) -> None:
        """The error of the store's opening or of a :meth:`later` call that has ended."""
        if self._opening is not None and self._opening.done():
            self._opening.result()
        pending, done = [], []
        for future in self._sent:  # one look each: a future that ends meanwhile stays pending
            (done if future.done() else pending).append(future)
        self._sent = pending
        for future in done:
            future.result()

    def finalize(self, status: str = "success") -> None:
        """Keep the run open after fit (:func:`end_run` closes it once all is logged); the
        metrics logged so far are sent."""
        self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Sent by a background thread, in order: a training step never waits for the
        store (a SQLite commit, or a server's answer). :meth:`flush` waits for them."""
        self._raise_failed()
        record = ({k: float(v) for k, v in metrics.items()}, step)
        if self._opening is None:
            _ = self.run_id  # the run exists before the thread writes to it
        self._sent.append(self._thread().submit(self._send, record))

    def log_hyperparams(self, params: Any) -> None:
        """As MLFlowLogger's; before the store is open (Lightning logs the data module's
        hyperparameters when fit starts), in the MLflow thread after it opens."""
        self._raise_failed()
        if self.opened or self._in_thread():
            MLFlowLogger.log_hyperparams(self, params)
        elif params:
            self.later(MLFlowLogger.log_hyperparams, self, params)

    def _send(self, record: tuple[dict[str, float], int | None]) -> None:
        if self._opening is not None and self._opening.exception() is not None:
            return  # nowhere to send them: the opening's error is raised to the caller
        try:
            self._send_pending()
            MLFlowLogger.log_metrics(self, *record)
        except Exception as exc:  # the server is down: keep the metrics, train on
            self._keep(record, exc)

    def flush(self) -> None:
        """Until the store is open and everything logged so far was sent (metrics that could
        not be, kept); raises the first error."""
        self.start_opening()
        sent, self._sent = self._sent, []
        wait(sent)
        if self._opening is not None:
            self._opening.result()
        for future in sent:
            future.result()

    def __getstate__(self) -> dict:
        self.flush()
        threads = {"_sender": None, "_sender_ident": None, "_sent": [], "_opening": None}
        threads["_go"] = None
        return {**self.__dict__, **threads}

    def _send_pending(self) -> None:
        while self._pending:
            metrics, step = self._pending[0]
            MLFlowLogger.log_metrics(self, metrics, step)
            self._pending.pop(0)

    def _keep(self, record: tuple[dict[str, float], int | None], exc: Exception) -> None:
        import json

        if not self._pending:
            log.warning(
                "MLflow at %s did not take metrics (%s: %s); training goes on, the metrics "
                "are kept%s and sent when it answers again",
                self.tracking_uri,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
                f" (also in {self.spool_path})" if self.spool_path else "",
            )
        self._pending.append(record)
        if self.spool_path:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spool_path, "a") as spool:
                spool.write(json.dumps({"step": record[1], "metrics": record[0]}) + "\n")

    def resume_run(self, checkpoint: str | Path, epoch: int) -> None:
        """Continue this (killed, failed or finished) run: status RUNNING again, tagged with
        where it resumed from. Its params stay those of its start (MLflow params are
        immutable)."""
        client = self.experiment
        client.update_run(self.run_id, status="RUNNING")
        tags = client.get_run(self.run_id).data.tags
        count = int(tags.get(names.RESUME_COUNT, "0")) + 1
        self.set_tags(
            {
                names.RESUME_COUNT: count,
                names.RESUMED_FROM: checkpoint,
                names.RESUMED_AT_EPOCH: epoch,
            }
        )
        log.info("MLflow: resuming run %s (resume %d)", self.run_id, count)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.experiment.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set the run's tags (names from medclf.tracking.names), values as strings."""
        for key, value in tags.items():
            self.experiment.set_tag(self.run_id, key, str(value))

    def run_tags(self) -> dict[str, str]:
        """The run's tags as MLflow holds them now."""
        return dict(self.experiment.get_run(self.run_id).data.tags)

    def find_run(self, tag: str, value: str) -> str | None:
        """The id of a run of this experiment whose ``tag`` equals ``value`` (None if none)."""
        quoted = str(value).replace("'", "\\'")
        found = self.experiment.search_runs(
            [self.experiment_id], filter_string=f"tags.{tag} = '{quoted}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def end_run(self, status: str) -> None:
        """Send what is still pending, then set the run's terminal status: FINISHED, FAILED
        or KILLED."""
        self.start_opening()  # a run that stopped before training is recorded too
        if self._opening is not None and self._opening.exception() is not None:
            return  # no run was made; the caller has had the error
        if not (mlflow_run_started(self) and self.run_id):
            return
        try:
            self.flush()
        except Exception as exc:  # a later() call failed; the run still gets its status
            log.error("MLflow run %s: %s: %s", self.run_id, type(exc).__name__, exc)
        try:
            self._send_pending()
            self.experiment.set_terminated(self.run_id, status)
        except Exception as exc:
            log.error(
                "MLflow at %s is unreachable (%s): %d metric record(s) were not sent%s, and "
                "run %s keeps its status; set it to %s once the server is back",
                self.tracking_uri,
                type(exc).__name__,
                len(self._pending),
                f" (they are in {self.spool_path})" if self.spool_path else "",
                self.run_id,
                status,
            )


class _ClientOnceOpen:
    """The MLflow client of a logger whose store is still opening: any use waits for it."""

    def __init__(self, logger: MLflowRunLogger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        self._logger.start_opening()
        self._logger._opening.result()  # its error, if it failed
        return getattr(self._logger.experiment, name)


def mlflow_key(name: str) -> str:
    """A param or metric name MLflow accepts (letters, digits, ``_ - . /`` and spaces); any
    other character (from class names or column values) becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values (MLflow params are strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit(directory: str | Path) -> str | None:
    """The commit of the repository holding ``directory``, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class OpenStoreWhenTrainingStarts(Callback):
    """Starts the background opening of these loggers' store at the first training batch:
    the train loader's workers are forked by then, and nothing forks again before the next
    loader starts (which waits for the opening: :func:`medclf.runtime.no_fork_during`)."""

    def __init__(self, loggers: list) -> None:
        self.loggers = loggers

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        for logger in self.loggers:
            logger.start_opening()


def mlflow_loggers(loggers) -> list[MLflowRunLogger]:
    """The MLflow loggers among a trainer's loggers."""
    return [lg for lg in loggers if isinstance(lg, MLflowRunLogger)]
