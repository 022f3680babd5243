"""``medclf-ui`` (``make ui``): the MLflow dashboard over the default store, opened on our
runs table.

MLflow 3 opens an experiment on its GenAI "Overview" page unless the experiment is tagged
``mlflow.experimentKind=custom_model_development``; this tags it and prints the direct link
``http://127.0.0.1:PORT/#/experiments/<id>/runs``. The server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from medclf.tracking.store import ensure_experiment

HOST = "127.0.0.1"


def default_root() -> Path:
    """The project root as conf/paths/default.yaml defines it: $MEDCLF_ROOT or the cwd."""
    return Path(os.environ.get("MEDCLF_ROOT") or os.getcwd()).resolve()


def default_tracking_uri(root: Path) -> str:
    """The default store of conf/logger/mlflow.yaml under ``root``."""
    return f"sqlite:///{root}/mlruns/mlflow.db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def runs_url(port: int, experiment_id: str, host: str = HOST) -> str:
    """The experiment's training-runs table on a dashboard (local by default)."""
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs"


def run_url(server: str, experiment_id: str, run_id: str) -> str:
    """One run's page on a dashboard served at ``server`` (``http://host:port``)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def wait_healthy(
    port: int, process: subprocess.Popen, timeout: float = 60.0, host: str = HOST
) -> bool:
    """Poll the server's /health endpoint until it answers (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def serve(root: Path, tracking_uri: str | None, experiment: str, port: int) -> int:
    """Serve the MLflow dashboard over ``tracking_uri`` (default: ``root``'s SQLite store) on
    127.0.0.1 until stopped; prints the experiment's runs link. Returns the exit status."""
    root = root.resolve()
    uri = tracking_uri or default_tracking_uri(root)
    artifacts = root / "mlruns" / "artifacts"
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    experiment_id = ensure_experiment(uri, experiment, str(artifacts))
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts.as_uri(),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    process = subprocess.Popen(command, env=env)
    try:
        if not wait_healthy(port, process):
            print(f"error: the MLflow server did not start on {HOST}:{port}", file=sys.stderr)
            process.terminate()
            return 1
        print(
            f"\nMLflow dashboard ({uri}):\n  {runs_url(port, experiment_id)}\n"
            f"tracking URI: http://{HOST}:{port}  (logger.mlflow.tracking_uri=...)\n",
            flush=True,
        )
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=10)
        return 0
