"""A PostgreSQL cluster in a folder, the database of the team server (medclf-server).

``<dir>/data`` is created with ``initdb`` on first use, for the user ``medclf`` with a
generated password kept in ``<dir>/password`` (mode 0600); the server listens on the given
host and port only over TCP (no Unix socket) and holds two databases, ``mlflow`` and
``optuna`` (their migrations would collide in one). ``pg_ctl`` starts and stops it, so a
cluster outlives nothing it should not: the next start reuses the data. As root, ``initdb``
and ``postgres`` run as the ``postgres`` user (``runuser``), because they refuse root.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from medclf.errors import ConfigError

USER = "medclf"
DATABASES = ("mlflow", "optuna")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bin_dir() -> Path:
    """The folder of PostgreSQL's server programs: ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin`` (Debian) or ``initdb`` on PATH."""
    found = []
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        found.append(done.stdout.strip())
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0)
    )
    found += reversed(versions)
    if shutil.which("initdb"):
        found.append(str(Path(shutil.which("initdb")).resolve().parent))
    for folder in found:
        if folder and (Path(folder) / "initdb").is_file():
            return Path(folder)
    raise ConfigError(
        "database=null: PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
        "apt-get install -y postgresql (make setup does it), or pass the URL of an existing "
        "database server as database=postgresql+psycopg://USER:PASSWORD@HOST:PORT/mlflow."
    )


def _as_root() -> bool:
    return os.geteuid() == 0


class Cluster:
    """The cluster of ``directory`` listening on ``host:port``."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.directory = Path(directory).resolve()
        self.data = self.directory / "data"
        self.password_file = self.directory / "password"
        self.log_file = self.directory / "postgres.log"
        self.host = host
        self.port = int(port)
        self.bin = bin_dir()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if _as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True)

    def _give_to_postgres(self, path: Path) -> None:
        if _as_root():
            shutil.chown(path, "postgres", "postgres")

    @property
    def version(self) -> str:
        return (self.data / "PG_VERSION").read_text().strip()

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str, host: str | None = None) -> str:
        """The SQLAlchemy URL of ``database`` (psycopg 3), reached at ``host`` (default:
        where this machine reaches the server)."""
        if host is None:
            host = self.host if self.host not in ("0.0.0.0", "::", "*") else "127.0.0.1"
        return f"postgresql+psycopg://{USER}:{self.password()}@{host}:{self.port}/{database}"

    def create(self) -> None:
        """``initdb`` the data folder with a new password (the first start)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        self.data.mkdir(mode=0o700)
        self._give_to_postgres(self.data)
        if (
            _as_root()
            and subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-w", str(self.data)]
            ).returncode
        ):
            shutil.rmtree(self.data)
            raise ConfigError(
                f"dir={self.directory}: PostgreSQL runs as the user postgres (initdb refuses "
                "root), who cannot reach this folder (a parent folder is private): choose a "
                "dir= it can reach (e.g. under /srv), or allow it through (chmod o+x on the "
                "parent folders)."
            )
        secret = self.directory / ".initdb-password"
        secret.write_text(self.password())
        secret.chmod(0o600)
        self._give_to_postgres(secret)
        try:
            done = self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={secret}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            )
        finally:
            secret.unlink()
        if done.returncode:
            shutil.rmtree(self.data, ignore_errors=True)
            raise RuntimeError(f"initdb failed in {self.data}:\n{done.stdout}{done.stderr}")

    def running(self) -> bool:
        return (
            self.data.is_dir()
            and self._run("pg_ctl", "status", "-D", str(self.data)).returncode == 0
        )

    def _allow_remote(self) -> None:
        """Listening beyond this machine: password logins from any address."""
        hba = self.data / "pg_hba.conf"
        lines = ["host all all 0.0.0.0/0 scram-sha-256", "host all all ::/0 scram-sha-256"]
        text = hba.read_text()
        missing = [line for line in lines if line not in text]
        if missing:
            with open(hba, "a") as handle:
                handle.write(
                    "\n# medclf-server: host=" + self.host + "\n" + "\n".join(missing) + "\n"
                )

    def start(self) -> bool:
        """Create the cluster if needed, start it (unless it runs already: returns False
        then) and make sure its databases exist."""
        if not (self.data / "PG_VERSION").exists():
            self.create()
        if self.host not in LOOPBACK:
            self._allow_remote()
        started = False
        if not self.running():
            if not self.log_file.exists():
                self.log_file.touch()
            self._give_to_postgres(self.log_file)
            options = f"-c listen_addresses={self.host} -p {self.port} -k ''"
            done = self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data),
                "-l",
                str(self.log_file),
                "-o",
                options,
            )
            if done.returncode:
                raise ConfigError(self._start_failure(done.stdout + done.stderr))
            started = True
        self.create_databases()
        return started

    def _start_failure(self, output: str) -> str:
        log = self.log_file.read_text().splitlines()[-5:] if self.log_file.exists() else []
        text = "\n".join(log) + output
        if "could not bind" in text or "already in use" in text:
            return (
                f"db_port={self.port}: PostgreSQL cannot listen on {self.host}:{self.port} (in "
                "use, maybe by another PostgreSQL): choose another, e.g. db_port="
                f"{self.port + 1}."
            )
        return f"dir={self.directory}: PostgreSQL did not start:\n" + text.strip()

    def create_databases(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres").replace("+psycopg", ""), autocommit=True) as db:
            present = {row[0] for row in db.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in present:
                    db.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
