"""``medclf-server`` (``make server``): the team's back end for searches on many GPUs and
nodes, and what to paste into their commands.

::

    worker 1 (GPU 0) ─┐                 ┌─ PostgreSQL (<dir>/data) ── databases optuna, mlflow
    worker 2 (GPU 1) ─┼─ Optuna study ──┤
    node 2, SLURM…   ─┘   MLflow runs ──┴─ MLflow server ── artifacts (<dir>/artifacts)

* PostgreSQL: a cluster in ``dir`` (medclf.tracking.postgres), created on first use; or an
  existing server (PostgreSQL or MySQL) named by ``database=URL``, of which only the MLflow
  server is started here (Optuna's study then lives in its database ``optuna_database``).
* MLflow: ``mlflow server`` on that database, proxying artifacts to ``artifacts`` (a
  folder by default, or any URI MLflow accepts).
* Printed: ``logger.mlflow.tracking_uri=...`` and ``hydra.sweeper.storage=...``.
* Ctrl-C (or SIGTERM) stops both; the next start reuses the data.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from medclf.errors import ConfigError
from medclf.tracking.server import runs_url, wait_healthy
from medclf.tracking.store import ensure_experiment

WILDCARD = ("0.0.0.0", "::", "*")


def public_host(host: str) -> str:
    """The host other machines use: this machine's name when listening on every address."""
    return socket.getfqdn() if host in WILDCARD else host


def database_on(url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``url``, created if missing."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    target = make_url(url).set(database=name)
    try:
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                query = sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name")
                if connection.execute(query, {"name": name}).first() is None:
                    connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
            else:
                connection.execute(sqlalchemy.text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
        engine.dispose()
    except ImportError as exc:
        raise ConfigError(
            f"database={make_url(url).render_as_string()}: its driver is missing ({exc}); "
            "install it (pip install psycopg[binary] for postgresql+psycopg://)."
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"database={make_url(url).render_as_string()}: cannot reach it or create the "
            f"database {name!r} beside it ({' '.join(str(exc).split())[:300]}): check the URL, "
            f"or create {name!r} yourself (optuna_database=NAME names another)."
        ) from None
    return target.render_as_string(hide_password=False)


def mlflow_command(
    backend: str, artifacts: str, host: str, port: int, workers: int, allowed: list[str]
) -> list[str]:
    """MLflow's own tracking server over ``backend``, proxying the artifacts."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allowed:
        command += ["--allowed-hosts", ",".join(allowed)]
    return command


def _artifacts(directory: Path, artifacts: str | None) -> str:
    if artifacts and "://" in artifacts:
        return artifacts
    folder = Path(artifacts) if artifacts else directory / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder.resolve())


def _stop(process: subprocess.Popen) -> None:
    """Stop the MLflow server and its workers (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def serve_team(
    directory: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    db_port: int = 5432,
    database: str | None = None,
    optuna_database: str = "optuna",
    artifacts: str | None = None,
    experiment: str = "medclf",
    mlflow_workers: int = 2,
    allowed_hosts: list[str] | None = None,
) -> int:
    """Start PostgreSQL (unless ``database`` names one) and MLflow on it, print the
    overrides to paste, serve until Ctrl-C or SIGTERM, then stop both. Returns the exit
    status."""
    from medclf.tracking.postgres import Cluster

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    shown = public_host(host)
    cluster = None
    if database is None:
        cluster = Cluster(directory, host, db_port)
        cluster.start()
        backend, storage = cluster.url("mlflow"), cluster.url("optuna", shown)
        where = f"PostgreSQL {cluster.version} in {cluster.data} ({host}:{db_port})"
    else:
        backend, storage = database, database_on(database, optuna_database)
        where = f"the database server of {database.split('@')[-1]}"
    # SIGINT and SIGTERM stop both servers, also when this process started with SIGINT
    # ignored (a script's background job): Python leaves an ignored SIGINT ignored
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, signal.default_int_handler) for number in stops}
    process = None
    try:
        allowed = list(allowed_hosts or [])
        if host not in ("127.0.0.1", "localhost") and shown not in allowed:
            allowed += [shown, socket.gethostname(), "localhost", "127.0.0.1"]
            allowed += [f"{name}:{port}" for name in list(allowed)]
        folder = _artifacts(directory, artifacts)
        command = mlflow_command(backend, folder, host, port, mlflow_workers, allowed)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        process = subprocess.Popen(command, env=env, start_new_session=True)
        local = "127.0.0.1" if host in WILDCARD else host
        if not wait_healthy(port, process, timeout=120, host=local):
            print(f"error: the MLflow server did not start on {host}:{port}", file=sys.stderr)
            return 1
        tracking = f"http://{shown}:{port}"
        experiment_id = ensure_experiment(f"http://{local}:{port}", experiment)
        print(
            f"\nmedclf-server: {where}, MLflow on it at {tracking} (artifacts: {folder})\n"
            "Paste into your commands:\n"
            f"  logger.mlflow.tracking_uri={tracking}\n"
            f"  hydra.sweeper.storage={storage}\n"
            f"Dashboard: {runs_url(port, experiment_id, shown)}\n"
            f"Ctrl-C stops both; the next start reuses {directory}.\n",
            flush=True,
        )
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if process is not None:
            _stop(process)
        if cluster is not None:
            cluster.stop()
