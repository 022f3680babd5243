"""What the image check learnt, kept between runs: for each file (absolute path, size,
modification time) that decoded, its spatial dims and channel count, in a small SQLite file
(``datamodule.check_cache``, by default under ``paths.root_dir/.cache``).

A second run, every sweep trial and every DDP rank but one per node then decode only new
or changed files. A file whose size or modification time changed is decoded again; a file
that failed is never remembered, so a corrupt file is reported by name in every run. Ranks
with ``LOCAL_RANK`` > 0 decode nothing while their node's rank 0 checks: they wait for the
cache to cover their files (rank 0 fails the job if a file is bad) and decode only what is
still missing after ``wait`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

Stamp = tuple[int, int]  # (size, modification time in ns)
Found = tuple[int, int]  # (spatial dims, channels)

_SCHEMA = """CREATE TABLE IF NOT EXISTS checked (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, dims INTEGER, channels INTEGER)"""


def follower_rank() -> bool:
    """True in a DDP process that is not its node's first (Lightning's and torchrun's
    ``LOCAL_RANK``): the node's rank 0 checks the images for it."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0")) > 0
    except ValueError:
        return False


def stamps(paths: Iterable[str]) -> tuple[dict[str, Stamp], list[str]]:
    """(size, mtime) of each file, and the paths that do not exist."""
    found, missing = {}, []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            missing.append(path)
            continue
        found[path] = (stat.st_size, stat.st_mtime_ns)
    return found, missing


class CheckCache:
    """The check results in ``path`` (a SQLite file, made on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60)
        connection.execute(_SCHEMA)
        return connection

    def known(self, files: dict[str, Stamp]) -> dict[str, Found]:
        """The results for the files whose size and modification time are still those
        checked; an unreadable cache counts as empty (the files are decoded again)."""
        if not self.path.is_file():
            return {}
        try:
            with contextlib.closing(self._connect()) as connection:
                rows = connection.execute(
                    "SELECT path, size, mtime_ns, dims, channels FROM checked"
                ).fetchall()
        except sqlite3.Error as exc:
            log.warning(
                "image check cache %s unreadable (%s): checking every image", self.path, exc
            )
            return {}
        found = {}
        for path, size, mtime_ns, dims, channels in rows:
            if files.get(path) == (size, mtime_ns):
                found[path] = (dims, channels)
        return found

    def remember(self, results: dict[str, tuple[Stamp, Found]]) -> None:
        """Store the files that decoded (a failure to write only costs a decode next time)."""
        if not results:
            return
        rows = [(p, s, m, d, c) for p, ((s, m), (d, c)) in results.items()]
        try:
            with contextlib.closing(self._connect()) as connection, connection:
                connection.executemany("INSERT OR REPLACE INTO checked VALUES (?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            log.warning("image check cache %s not written (%s)", self.path, exc)

    def wait_for(self, files: dict[str, Stamp], wait: float) -> dict[str, Found]:
        """What the cache knows of ``files`` once it covers them all, or after ``wait``
        seconds (a follower rank waiting for its node's rank 0)."""
        deadline = time.monotonic() + wait
        while True:
            found = self.known(files)
            if len(found) == len(files) or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)


def stamped_values(path: str | Path, table: str, files: dict[str, Stamp], version: int = 0):
    """What ``table`` of the check cache holds for ``files`` (path → value), for the files
    whose size and modification time are still those stored, under ``version``: a per-file
    result that only changes with the file (a content hash, perceptual hashes). An absent or
    unreadable cache gives nothing (the values are computed again)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
            connection.execute(_value_schema(table))
            rows = connection.execute(
                f"SELECT path, size, mtime_ns, value FROM {table} WHERE version = ?", (version,)
            ).fetchall()
    except sqlite3.Error as exc:
        log.warning("%s in %s unreadable (%s): computing them again", table, path, exc)
        return {}
    return {p: value for p, size, mtime_ns, value in rows if files.get(p) == (size, mtime_ns)}


def remember_values(
    path: str | Path, table: str, files: dict[str, Stamp], values: dict, version: int = 0
) -> None:
    """Store ``values`` (path → value) of the ``files`` in ``table`` (a failure to write only
    costs computing them next time)."""
    rows = [(p, *files[p], version, v) for p, v in values.items() if p in files]
    if not rows:
        return
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection, connection:
            connection.execute(_value_schema(table))
            connection.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?)", rows)
    except sqlite3.Error as exc:
        log.warning("%s not written to %s (%s)", table, path, exc)


def _value_schema(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (path TEXT PRIMARY KEY, size INTEGER, "
        "mtime_ns INTEGER, version INTEGER, value BLOB)"
    )
