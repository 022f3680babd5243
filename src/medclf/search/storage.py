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


def _refusal(url: str, exc: BaseException) -> ConfigError | None:
    """The user's error behind a failed first connection (a refused password, a missing
    database), None when the server just did not answer."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    lowered = text.lower()
    if "password" in lowered or "access denied" in lowered:
        why = (
            f"the server refused user {parsed.username!r} ({text}): use the URL that "
            "medclf-server printed (its password is in <dir>/password) or your database's "
            "own user and password"
        )
    elif "does not exist" in lowered or "unknown database" in lowered:
        why = (
            f"the server has no database {parsed.database!r} ({text}): create it, or use "
            "the URL that medclf-server printed"
        )
    else:
        return None
    return ConfigError(f"{KEY}={redact(url)}: {why}.")


def _unreachable(url: str, exc: BaseException) -> ConfigError:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    return ConfigError(
        f"{KEY}={redact(url)}: cannot reach the database server at {parsed.host}:"
        f"{parsed.port or 'its default port'} ({text}): start it ({SERVER}) or fix the host "
        "and port."
    )


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost or refused connection: worth retrying
    once the server is back (Optuna wraps SQLAlchemy's errors in StorageInternalError)."""
    import sqlalchemy

    seen = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if type(seen).__name__ in ("OperationalError", "InterfaceError"):  # the driver's own
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _connect_args(dialect: str) -> dict[str, Any]:
    """A first connection that fails in seconds, not after the TCP timeout (minutes)."""
    return {"connect_timeout": 10} if dialect in ("postgresql", "mysql") else {}


class StudyDatabase:
    """The storage of one sweep: Optuna's RDBStorage (``rdb``) opened and checked, with
    reconnects, the workers' lock and heartbeats. ``storage`` is what ``optuna.create_study``
    takes: on a server, the RDBStorage behind a proxy that retries each call whose
    connection was lost (medclf.compat.retrying_optuna_storage). ``wait``: a database that
    does not answer at first is waited for like a lost one (a trial's job, whose sweeper
    reached it already), not reported."""

    def __init__(
        self,
        url: str,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        max_retry: int | None = None,
        reconnect_timeout: float = 600.0,
        wait: bool = False,
    ) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        from medclf.compat import retrying_optuna_storage

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
        settings = (heartbeat_interval, grace_period, max_retry)
        if wait and is_server(url):
            self.rdb = self.retrying(lambda: self._open(*settings, wait=True), "connect")
        else:
            self.rdb = self._open(*settings)
        self.storage = self.rdb
        if is_server(url):
            self._retry_new_connections()
            self.storage = retrying_optuna_storage(self.rdb, self.retrying)

    def _open(self, heartbeat_interval, grace_period, max_retry, wait: bool = False):
        """Optuna's RDBStorage (its tables created if missing); a failed connection is a
        ConfigError naming the fix (``wait``: a server that did not answer raises the
        SQLAlchemy error, which :meth:`retrying` retries)."""
        import optuna
        import sqlalchemy

        engine_kwargs = {"pool_pre_ping": True, "connect_args": _connect_args(self.dialect)}
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback = None
                if heartbeat_interval:
                    callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry)
                return optuna.storages.RDBStorage(
                    self.url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=callback,
                )
        except ImportError as exc:
            raise _driver_error(self.url, exc) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            refused = _refusal(self.url, exc.__cause__ or exc)
            if refused is not None:
                raise refused from None
            if wait and connection_lost(exc):
                raise
            raise _unreachable(self.url, exc) from None

    def unavailable(self, waited: float, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"the study's database {redact(self.url)} has not answered for {waited:.1f} s "
            f"(hydra.sweeper.reconnect_timeout={self.reconnect_timeout:g}): start it again "
            f"and run the same command to continue the study "
            f"({' '.join(str(exc).split())[:200]})"
        )

    def retrying(self, call, what: str):
        """``call()``, repeated with back-off (0.5 s doubling to 2 s) while its connection is
        lost, for up to ``reconnect_timeout`` s; then :class:`DatabaseUnavailable`."""
        start = time.monotonic()
        delay, lost = 0.5, False
        while True:
            try:
                result = call()
            except Exception as exc:
                if isinstance(exc, MedclfError) or not connection_lost(exc):
                    raise
                waited = time.monotonic() - start
                if waited >= self.reconnect_timeout:
                    raise self.unavailable(waited, exc) from None
                if not lost:
                    lost = True
                    log.warning(
                        "lost the connection to the study's database %s (%s): reconnecting "
                        "for up to %g s",
                        redact(self.url),
                        " ".join(str(getattr(exc, "orig", None) or exc).split())[:200],
                        self.reconnect_timeout,
                    )
                time.sleep(min(delay, max(0.0, self.reconnect_timeout - waited)))
                delay = min(2 * delay, 2.0)
                continue
            if lost:
                self.reconnected_at = time.monotonic()
                log.warning(
                    "reconnected to the study's database %s after %.1f s (%s)",
                    redact(self.url),
                    time.monotonic() - start,
                    what,
                )
            return result

    def _retry_new_connections(self) -> None:
        """Every new connection (the first after a restart included) is retried while the
        server does not answer: a call waits for the database instead of failing."""
        from sqlalchemy import event

        @event.listens_for(self.rdb.engine, "do_connect")
        def connect(dialect, connection_record, cargs, cparams):
            return self.retrying(lambda: dialect.connect(*cargs, **cparams), "connect")

    def close(self) -> None:
        """Close the pooled connections (a job's connection, once its trial is over)."""
        self.rdb.engine.dispose()

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

        def locked():
            connection = self.rdb.engine.connect()
            try:
                connection.execute(text(take), {"key": key})
            except Exception:
                connection.close()
                raise
            return connection

        connection = self.retrying(locked, "lock")
        try:
            yield
        finally:
            try:
                connection.execute(text(give), {"key": key})
            except Exception:  # the connection died: the server released the lock
                connection.invalidate()
            connection.close()

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
