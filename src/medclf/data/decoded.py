"""The decoded cache's store: each image decoded once into the training input (read, DICOM
rescale and window, resized to the input size; before channel conversion and augmentation),
kept in files that later epochs, runs, sweep trials, CV folds and DDP ranks memory-map.

A store is one folder per key (:func:`cache_key`: the input size, the DICOM window, the
resize method and the format), under ``datamodule.cache_dir``::

    <cache_dir>/<key>/index.sqlite   path, size, mtime (the file's stamp) → where its array is
    <cache_dir>/<key>/shard-*.bin    the arrays, back to back (64-byte aligned)

A shard is written under a temporary name and renamed when complete, and only then listed
in the index, so a build killed half-way leaves nothing that is read. Every entry carries
the CRC-32 of its bytes: at set-up an entry whose shard is missing, too short (truncated) or
whose bytes fail the check is dropped and its file decoded again, never read as data.
The index also keeps each shard's stamp (size, inode, modification and status-change times)
from when all its entries were known good: when it was written, or checked since. A shard
with that stamp still is trusted without reading it; any write to it changes the stamp (the
status-change time cannot be set back), and then its entries are checked again. A later
set-up thus reads none of a multi-gigabyte cache.
:class:`DecodedArrays` reads entries as read-only arrays, from shards or from one buffer in
RAM (``datamodule.cache=memory``, shared by the loader workers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import sqlite3
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what a store holds for a file changes (the decoding, the layout)
ALIGN = 64
_SCHEMA = """CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, size INTEGER,
    mtime_ns INTEGER, shard TEXT, offset INTEGER, nbytes INTEGER, dtype TEXT, shape TEXT,
    crc INTEGER);
CREATE TABLE IF NOT EXISTS verified (shard TEXT PRIMARY KEY, stamp TEXT)"""


def cache_key(image_size: Any, volume_size: Sequence[int], dicom_window: Any) -> str:
    """The store's folder name: a hash of every setting that changes a decoded array."""
    from medclf.data.transforms import RESIZE, image_hw

    settings = {
        "format": FORMAT,
        "image": list(image_hw(image_size)),
        "volume": [int(v) for v in volume_size],
        "window": dicom_window if isinstance(dicom_window, str | None) else list(dicom_window),
        "resize": RESIZE,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Entry(NamedTuple):
    """Where one file's decoded array lies: ``shard`` (a file name in the store, or an index
    into :class:`DecodedArrays`' buffers), byte ``offset`` and ``nbytes``, dtype, shape, and
    the CRC-32 of its bytes; ``size`` and ``mtime_ns`` are the file's stamp when decoded."""

    path: str
    size: int
    mtime_ns: int
    shard: str | int
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    crc: int


def shard_stamp(path: Path) -> tuple[int, str] | None:
    """A shard's size and its stamp (size, inode, modification and status-change times in
    ns), or None if it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, f"{st.st_size}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def array_bytes(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array)).cast("B")


class DecodedArrays:
    """Row ``i`` → its decoded array (read-only, memory-mapped or in the RAM buffer). Sources
    are shard files (opened in each process on first use, so the object pickles small to
    spawned loader workers) or uint8 torch tensors (shared memory where possible)."""

    def __init__(self, entries: list[Entry], shards: dict[str, Path], buffers: list | None = None):
        self.entries = entries
        self.shards = shards
        self.buffers = buffers or []
        self._maps: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def _source(self, shard: str | int):
        if isinstance(shard, int):
            return self.buffers[shard].numpy()
        found = self._maps.get(shard)
        if found is None:
            with open(self.shards[shard], "rb") as file:
                found = self._maps[shard] = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        return found

    def __getitem__(self, i: int) -> np.ndarray:
        entry = self.entries[i]
        source = self._source(entry.shard)
        array = np.frombuffer(source, np.uint8, entry.nbytes, entry.offset)
        array = array.view(np.dtype(entry.dtype)).reshape(entry.shape)
        array.flags.writeable = False
        return array

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries)

    def dtypes(self) -> list[str]:
        return sorted({np.dtype(entry.dtype).name for entry in self.entries})


class ShardWriter:
    """Appends arrays to a new shard under a temporary name (:meth:`DiskStore.commit` renames
    it and lists its entries)."""

    def __init__(self, folder: Path) -> None:
        self.name = f"shard-{uuid.uuid4().hex}.bin"
        self.temporary = folder / f"{self.name}.tmp"
        self.file = open(self.temporary, "wb")  # noqa: SIM115  (closed by commit/discard)
        self.entries: list[Entry] = []
        self.offset = 0

    def add(self, path: str, stamp: tuple[int, int], array: np.ndarray) -> Entry:
        data = array_bytes(array)
        pad = -self.offset % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        self.file.write(data)
        entry = Entry(
            path,
            stamp[0],
            stamp[1],
            self.name,
            self.offset,
            data.nbytes,
            array.dtype.str,
            tuple(array.shape),
            zlib.crc32(data),
        )
        self.offset += data.nbytes
        self.entries.append(entry)
        return entry

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            self.temporary.unlink()


class DiskStore:
    """One store folder (made on first use): its index, shards and build lock."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        self.index = self.folder / "index.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.index, timeout=120)
        connection.executescript(_SCHEMA)
        return connection

    def entries(self) -> dict[str, Entry]:
        """Every listed entry; an unreadable index is removed (everything is decoded again)."""
        if not self.index.is_file():
            return {}
        try:
            with contextlib.closing(self._connect()) as connection:
                rows = connection.execute("SELECT * FROM entries").fetchall()
        except sqlite3.Error as exc:
            log.warning("decoded cache index %s unreadable (%s): rebuilding it", self.index, exc)
            self.index.unlink(missing_ok=True)
            return {}
        shapes: dict[str, tuple[int, ...]] = {}  # most entries share a few shapes
        for row in rows:
            if row[7] not in shapes:
                shapes[row[7]] = tuple(json.loads(row[7]))
        return {row[0]: Entry(*row[:7], shapes[row[7]], row[8]) for row in rows}

    def _verified(self) -> dict[str, str]:
        """Each shard's stamp from when all its entries were known good."""
        if not self.index.is_file():
            return {}
        try:
            with contextlib.closing(self._connect()) as connection:
                return dict(connection.execute("SELECT shard, stamp FROM verified").fetchall())
        except sqlite3.Error:
            return {}

    def intact(
        self, entries: list[Entry], listed: Sequence[Entry] = ()
    ) -> tuple[list[Entry], list[Entry], dict[str, str]]:
        """(intact, broken, verified): an entry is broken when its shard is missing or too
        short, or its bytes fail the CRC (checked on every core), which is read only in a
        shard whose stamp changed since it was last known good. ``verified``: the stamps of
        the shards checked now whose every entry in ``listed`` (the whole index) was checked,
        for :meth:`forget` to record once the broken entries are gone."""
        stamps = {name: shard_stamp(self.folder / name) for name in {e.shard for e in entries}}
        sizes = {name: stamp[0] if stamp else -1 for name, stamp in stamps.items()}
        known_good = self._verified()
        trusted = {n for n, stamp in stamps.items() if stamp and known_good.get(n) == stamp[1]}
        fits = [e for e in entries if e.offset + e.nbytes <= sizes[e.shard]]
        check = [e for e in fits if e.shard not in trusted]
        reader = DecodedArrays(check, {name: self.folder / name for name in sizes})

        def crc_matches(i: int) -> bool:
            return zlib.crc32(reader[i]) == check[i].crc

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            good = list(pool.map(crc_matches, range(len(check)), chunksize=64))
        intact = [e for e in fits if e.shard in trusted]
        intact += [entry for entry, ok in zip(check, good, strict=True) if ok]
        kept = {entry.path for entry in intact}
        examined = {e.path for e in entries if e.shard not in trusted}
        unexamined = {e.shard for e in listed if e.path not in examined}
        verified = {
            name: stamp[1]
            for name, stamp in stamps.items()
            if stamp and name not in trusted and name not in unexamined
        }
        return intact, [entry for entry in entries if entry.path not in kept], verified

    def forget(self, paths: Sequence[str], verified: dict[str, str] | None = None) -> None:
        """Drop the entries of ``paths``; record the ``verified`` shard stamps (from
        :meth:`intact`) in the same transaction."""
        if not paths and not verified:
            return
        with contextlib.closing(self._connect()) as connection, connection:
            connection.executemany("DELETE FROM entries WHERE path = ?", [(p,) for p in paths])
            connection.executemany(
                "INSERT OR REPLACE INTO verified VALUES (?, ?)", list((verified or {}).items())
            )

    def writer(self) -> ShardWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return ShardWriter(self.folder)

    def commit(self, writer: ShardWriter) -> None:
        """Make the shard final (flushed, renamed), then list its entries in the index."""
        writer.file.close()
        if not writer.entries:
            writer.temporary.unlink(missing_ok=True)
            return
        os.replace(writer.temporary, self.folder / writer.name)
        rows = [(*e[:7], json.dumps(e.shape), e.crc) for e in writer.entries]
        stamp = shard_stamp(self.folder / writer.name)
        with contextlib.closing(self._connect()) as connection, connection:
            connection.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?)", rows
            )
            if stamp is not None:  # its bytes are those whose CRCs were just computed
                connection.execute(
                    "INSERT OR REPLACE INTO verified VALUES (?, ?)", (writer.name, stamp[1])
                )

    def tidy(self) -> None:
        """Drop the entries of files deleted or changed since, and the shard files no entry
        uses any more (temporary ones left by a killed build included); with more bytes dead
        than alive, copy the live entries into one new shard. Call it holding :meth:`lock`."""
        from medclf.data.checkcache import stamps

        entries = self.entries()
        found, _ = stamps(entries)
        stale = [p for p, e in entries.items() if found.get(p) != (e.size, e.mtime_ns)]
        self.forget(stale)
        live = {p: e for p, e in entries.items() if p not in stale}
        used = {e.shard for e in live.values()}
        shards = {p.name: p.stat().st_size for p in self.folder.glob("shard-*.bin")}
        for path in self.folder.glob("shard-*.bin.tmp"):
            path.unlink(missing_ok=True)
        for name in set(shards) - used:
            (self.folder / name).unlink(missing_ok=True)
        with contextlib.closing(self._connect()) as connection, connection:
            names = connection.execute("SELECT shard FROM verified").fetchall()
            gone = [(name,) for (name,) in names if name not in used]
            connection.executemany("DELETE FROM verified WHERE shard = ?", gone)
        alive = sum(e.nbytes for e in live.values())
        total = sum(size for name, size in shards.items() if name in used)
        if total > 2 * alive and total - alive > 64 * 2**20:
            reader = DecodedArrays(list(live.values()), {n: self.folder / n for n in used})
            writer = self.writer()
            for i, entry in enumerate(reader.entries):
                writer.add(entry.path, (entry.size, entry.mtime_ns), reader[i])
            self.commit(writer)
            for name in used:
                (self.folder / name).unlink(missing_ok=True)
            mb = (total / 2**20, alive / 2**20)
            log.info("decoded cache %s compacted: %.0f MB → %.0f MB", self.folder, *mb)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The build lock (one builder per store at a time; readers never take it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; two builders only duplicate work
            yield
            return
        with open(self.folder / "build.lock", "a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def reader(self, entries: list[Entry]) -> DecodedArrays:
        names = {entry.shard for entry in entries}
        return DecodedArrays(entries, {name: self.folder / name for name in names})


def memory_arrays(arrays: list[np.ndarray]) -> DecodedArrays:
    """The arrays copied into one uint8 buffer (a torch tensor in shared memory, which spawned
    loader workers map instead of copying; forked workers share its pages either way)."""
    import torch

    offsets, total = [], 0
    for array in arrays:
        total += -total % ALIGN
        offsets.append(total)
        total += array.nbytes
    buffer = torch.empty(max(total, 1), dtype=torch.uint8)
    try:
        buffer.share_memory_()
    except RuntimeError as exc:  # e.g. a small /dev/shm in a container
        log.warning("decoded cache kept in private memory (%s): forked workers share it", exc)
    flat = buffer.numpy()
    entries = []
    for i, (array, offset) in enumerate(zip(arrays, offsets, strict=True)):
        data = array_bytes(array)
        flat[offset : offset + data.nbytes] = np.frombuffer(data, np.uint8)
        shape = tuple(array.shape)
        entries.append(Entry(str(i), 0, 0, 0, offset, data.nbytes, array.dtype.str, shape, 0))
    return DecodedArrays(entries, {}, [buffer])
