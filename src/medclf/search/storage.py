"""The database of an Optuna study (``hydra.sweeper.storage``): opened and checked before any
trial, kept alive through a database restart, and shared by workers.

A *server* storage (PostgreSQL, MySQL) may hold one study for any number of workers
(medclf.search.shared); a SQLite file keeps the one-session rule (medclf.search.study).

* Opening it reports what a user can get wrong, naming ``hydra.sweeper.storage`` and the
  fix: a URL that does not parse, a missing driver, a server that cannot be reached, a
  refused password, a database that does not exist.
* A server that goes away for a while (a restart) does not stop the workers: stale pooled
  connections are replaced (``pool_pre_ping``) and every new connection is retried with
  back-off for ``hydra.sweeper.reconnect_timeout`` seconds before
  :class:`DatabaseUnavailable` says so.
* Workers take trials one at a time under an advisory lock of the database (PostgreSQL
  ``pg_advisory_lock``, MySQL ``GET_LOCK``), so that no more than ``n_trials`` are started.
* Running trials send heartbeats; a trial whose worker stopped sending them for
  ``grace_period`` seconds is failed and queued again with the same parameters (Optuna's
  ``RetryHeartbeatStaleTrialCallback``, up to ``max_retry`` times).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from medclf.errors import ConfigError, MedclfError

log = logging.getLogger("medclf.search")

KEY = "hydra.sweeper.storage"
SERVER = "medclf-server starts one and prints its URL"
# What to use instead of a missing driver; any SQLAlchemy driver works once installed.
DRIVERS = {
    "postgresql": "or use postgresql+psycopg://, whose driver (psycopg 3) medclf installs",
    "mysql": "MySQL's usual one is mysql+pymysql:// (pip install pymysql)",
}


class DatabaseUnavailable(MedclfError):
    """The study's database did not answer for ``reconnect_timeout`` seconds."""


def redact(url: str | None) -> str:
    """``url`` with its password replaced by ``***`` (for logs, files and MLflow)."""
    if not url:
        return str(url)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def is_server(url: str | None) -> bool:
    """Whether ``url`` names a database server (anything but SQLite and in-memory)."""
    return bool(url) and not str(url).startswith("sqlite")


def _driver_error(url: str, exc: BaseException) -> ConfigError:
    missing = getattr(exc, "name", None) or str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ModuleNotFoundError):
        missing = cause.name
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    hint = f"; {DRIVERS[dialect]}" if dialect in DRIVERS else ""
    return ConfigError(
        f"{KEY}={redact(url)}: its database driver is missing ({missing}): install it "
        f"(pip install {missing}){hint}."
    )


def _connection_error(url: str, exc: BaseException) -> ConfigError:
    """What a failed first connection means for the user, with the fix."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    text = str(getattr(exc, "orig", None) or exc)
    first = " ".join(text.split())[:300]
    lowered = text.lower()
    if "password" in lowered or "access denied" in lowered:
        why = (
            f"the server refused user {parsed.username!r} ({first}): use the URL that "
            "medclf-server printed (its password is in <dir>/password) or your database's "
            "own user and password"
        )
    elif "does not exist" in lowered or "unknown database" in lowered:
        why = (
            f"the server has no database {parsed.database!r} ({first}): create it, or use "
            f"the URL that medclf-server printed"
        )
    else:
        why = (
            f"cannot reach the database server at {parsed.host}:{parsed.port or 'default port'}"
            f" ({first}): start it ({SERVER}) or fix the host and port"
        )
    return ConfigError(f"{KEY}={redact(url)}: {why}.")


def _connect_args(dialect: str) -> dict[str, Any]:
    """A first connection that fails in seconds, not after the TCP timeout (minutes)."""
    return {"connect_timeout": 10} if dialect in ("postgresql", "mysql") else {}


class StudyDatabase:
    """The storage of one sweep: Optuna's RDBStorage opened and checked, with reconnects,
    the workers' lock and heartbeats. ``storage`` is what ``optuna.create_study`` takes."""

    def __init__(
        self,
        url: str,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        max_retry: int | None = None,
        reconnect_timeout: float = 600.0,
    ) -> None:
        import optuna
        import sqlalchemy
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        self.url = url
        self.reconnect_timeout = float(reconnect_timeout)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or (2 * heartbeat_interval if heartbeat_interval else 0)
        self.reconnected_at = -float("inf")
        try:
            parsed = make_url(url)
            parsed.get_dialect().import_dbapi()
        except ArgumentError:
            raise ConfigError(
                f"{KEY}={url!r} is not a database URL: use sqlite:///PATH.db or "
                "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE "
                f"({SERVER})."
            ) from None
        except NoSuchModuleError:
            raise ConfigError(
                f"{KEY}={redact(url)}: unknown kind of database {url.split(':', 1)[0]!r}: use "
                f"sqlite:///PATH.db, postgresql+psycopg://... or mysql+pymysql://... ({SERVER})."
            ) from None
        except ImportError as exc:
            raise _driver_error(url, exc) from None
        self.dialect = parsed.get_dialect().name
        engine_kwargs = {"pool_pre_ping": True, "connect_args": _connect_args(self.dialect)}
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback = None
                if heartbeat_interval:
                    callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry)
                self.storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=callback,
                )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            raise _connection_error(url, exc) from None
        except optuna.exceptions.StorageInternalError as exc:
            raise _connection_error(url, exc.__cause__ or exc) from None
        except ImportError as exc:
            raise _driver_error(url, exc) from None
        if is_server(url):
            self._retry_new_connections()

    def _retry_new_connections(self) -> None:
        """Every new connection (the first after a restart included) is retried with
        back-off while the server does not answer, for up to ``reconnect_timeout`` s."""
        from sqlalchemy import event

        @event.listens_for(self.storage.engine, "do_connect")
        def connect(dialect, connection_record, cargs, cparams):
            start = time.monotonic()
            delay, lost = 0.5, None
            while True:
                try:
                    connection = dialect.connect(*cargs, **cparams)
                except dialect.loaded_dbapi.OperationalError as exc:
                    waited = time.monotonic() - start
                    if waited >= self.reconnect_timeout:
                        raise DatabaseUnavailable(
                            f"the study's database {redact(self.url)} has not answered for "
                            f"{waited:.0f} s (hydra.sweeper.reconnect_timeout="
                            f"{self.reconnect_timeout:g}): start it again and run the same "
                            f"command to continue the study ({' '.join(str(exc).split())[:200]})"
                        ) from None
                    if lost is None:
                        lost = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        log.warning(
                            "lost the connection to the study's database %s (%s): reconnecting "
                            "for up to %g s",
                            redact(self.url),
                            lost,
                            self.reconnect_timeout,
                        )
                    time.sleep(min(delay, max(0.0, self.reconnect_timeout - waited)))
                    delay = min(2 * delay, 15.0)
                    continue
                if lost is not None:
                    self.reconnected_at = time.monotonic()
                    log.warning(
                        "reconnected to the study's database %s after %.1f s",
                        redact(self.url),
                        time.monotonic() - start,
                    )
                return connection

    def judges_heartbeats(self) -> bool:
        """Whether this worker may fail others' trials for stale heartbeats now: not within
        a grace period after its own reconnect (the others' heartbeats stopped with the
        database, not with their workers)."""
        return time.monotonic() - self.reconnected_at > self.grace_period

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the database's advisory lock named after study ``name`` (no-op for SQLite,
        whose one-session rule needs none); released when the block ends or the
        connection is lost."""
        if self.dialect not in ("postgresql", "mysql"):
            yield
            return
        from sqlalchemy import text

        digest = hashlib.sha1(f"medclf-optuna:{name}".encode()).digest()
        if self.dialect == "postgresql":
            key = int.from_bytes(digest[:8], "big", signed=True)
            take, give = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
        else:
            key = f"medclf-optuna-{digest.hex()[:40]}"
            take, give = "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"
        with self.storage.engine.connect() as connection:
            connection.execute(text(take), {"key": key})
            try:
                yield
            finally:
                try:
                    connection.execute(text(give), {"key": key})
                except Exception:  # the connection died: the server released the lock
                    connection.invalidate()

    @contextmanager
    def beating(self, trial_ids: Iterable[int]) -> Iterator[None]:
        """Send the trials' heartbeats every ``heartbeat_interval`` s while the block runs
        (a thread: the job trains in this one)."""
        ids = list(trial_ids)
        if not self.heartbeat_interval or not ids:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_interval):
                for trial_id in ids:
                    try:
                        self.storage.record_heartbeat(trial_id)
                    except Exception as exc:  # reported; the main thread stops on its own
                        log.warning("heartbeat of trial id %d not recorded: %s", trial_id, exc)

        thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
