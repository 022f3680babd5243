"""Filling the decoded cache (medclf.data.decoded) while the image check decodes every image
(medclf.data.inspection), so that each file is decoded once: the check's threads fit each
image to the input size (:meth:`CacheFill.prepare`), the store keeps it.

``datamodule.cache``: ``disk`` keeps the store on disk (it must fit: otherwise an error
before training names the folder and the size); ``memory`` keeps the decoded set in one RAM
buffer, decoded again each run; ``auto`` takes disk when it fits, else memory when it fits
in half the free RAM, else none, and says so; ``none`` decodes every image every epoch.

DDP: a node's rank 0 (``LOCAL_RANK`` 0) builds a disk store holding its lock, the node's
other ranks wait for the store to cover their files and then read it; they decode only what
is still missing once the build has made no progress for ``wait`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medclf.data.checkcache import Stamp, follower_rank
from medclf.data.decoded import ALIGN, DecodedArrays, DiskStore, Entry, memory_arrays
from medclf.data.transforms import fit_input
from medclf.errors import DataError

log = logging.getLogger(__name__)

MODES = ("auto", "disk", "memory", "none")
SHARD_BYTES = 512 * 2**20  # a shard is committed (listed, readable by waiting ranks) at this
SHARD_ENTRIES = 1024  # size or entry count
_DECLINED = "declined.json"  # rank 0's auto choice when it was not disk, for the other ranks


def cache_mode(value: Any) -> str:
    """``datamodule.cache`` as one of :data:`MODES`; the deprecated booleans read as memory
    (true) and none (false), with a warning naming the new values."""
    if isinstance(value, bool):
        mode = "memory" if value else "none"
        log.warning(
            "datamodule.cache=%s is deprecated: use auto (the default: decoded once, on disk "
            "when it fits), disk, memory or none; %s is read as %s.",
            str(value).lower(),
            str(value).lower(),
            mode,
        )
        return mode
    return str(value)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def disk_free(folder: Path) -> tuple[int, int]:
    """(free bytes, total bytes) of the disk holding ``folder`` (or its nearest parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    return usage.free, usage.total


def ram_free() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


class CacheFill:
    """The decoded cache of one data set, filled during the image check: a context manager
    around :func:`medclf.data.inspection.inspect_images` (pass it as ``fill``); afterwards
    :meth:`arrays` gives each split's :class:`DecodedArrays` and :attr:`stats` what it did."""

    def __init__(
        self,
        mode: str,
        folder: str | Path | None,
        image_size: Any,
        volume_size: Any,
        follower: bool | None = None,
        wait: float = 600.0,
    ) -> None:
        self.requested = mode
        self.mode = None if mode == "auto" else mode
        self.store = DiskStore(folder) if mode in ("auto", "disk") and folder else None
        if mode == "disk" and self.store is None:
            self.mode = "memory"
        self.image_size, self.volume_size = image_size, volume_size
        self.follower = follower_rank() if follower is None else follower
        self.wait = wait
        self.entries: dict[str, Entry] = {}
        self.fresh: dict[str, np.ndarray] = {}  # decoded now, for RAM
        self.buffers: list = []
        self.writer = None
        self.todo = 0
        self.known_count = 0
        self.stale = 0
        self.started = self.decode_start = time.monotonic()
        self.stats: dict[str, Any] = {}
        self._lock = contextlib.ExitStack()
        self._decided = False
        self.write_failed = False

    def __enter__(self) -> CacheFill:
        if self.store is not None and not self.follower:
            self._lock.enter_context(self.store.lock())
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Commit what was decoded (also when the check found bad files: those are never
        stored, the rest need not be decoded again), unless writing failed."""
        try:
            if self.writer is not None:
                if kind is None or (issubclass(kind, DataError) and not self.write_failed):
                    self._commit()
                else:
                    self.writer.discard()
            if kind is None:
                self._finish()
        finally:
            self._lock.close()

    # --- what inspect_images calls -----------------------------------------------------

    def known(self, files: dict[str, Stamp]) -> dict[str, tuple[int, int]]:
        """(dims, channels) of the files whose decoded arrays the store holds intact (a rank
        other than its node's first waits for rank 0 to store them); broken entries are
        dropped, so those files are decoded again."""
        if self.store is None:
            return {}
        listed = self._wait_for(files) if self.follower else self.store.entries()
        matching = [e for p, e in listed.items() if files.get(p) == (e.size, e.mtime_ns)]
        intact, broken, verified = self.store.intact(matching, list(listed.values()))
        if broken:
            log.warning(
                "decoded cache %s: %d entries truncated or corrupt (e.g. %s): decoding those "
                "files again",
                self.store.folder,
                len(broken),
                broken[0].path,
            )
        if not self.follower:  # the broken dropped, the shards checked now trusted from now on
            self.store.forget([e.path for e in broken], verified)
        self.entries = {e.path: e for e in intact}
        self.known_count = len(intact)
        self.stale = len(broken) + len(listed) - len(matching)  # broken, deleted, changed
        return {e.path: (len(e.shape) - 1, e.shape[-1]) for e in intact}

    def begin(self, todo: int) -> None:
        """``todo`` files are about to be decoded."""
        self.todo = todo
        self.decode_start = time.monotonic()

    def prepare(self, raw: np.ndarray) -> np.ndarray | None:
        """In the check's threads: the decoded image fitted to the input size."""
        if self.mode == "none":
            return None
        return fit_input(raw, self.image_size, self.volume_size)

    def add(self, path: str, stamp: Stamp | None, array: np.ndarray | None) -> None:
        """Keep one decoded, fitted image (the first decides ``auto`` and checks the space)."""
        if array is None:
            return
        if not self._decided:
            self._decide(array)
            self._decided = True
        if self.mode == "memory":
            self.fresh[path] = array
        elif self.mode == "disk":
            try:
                if self.writer is None:
                    self.writer = self.store.writer()
                self.writer.add(path, stamp or (0, 0), array)
                if self.writer.offset > SHARD_BYTES or len(self.writer.entries) >= SHARD_ENTRIES:
                    self._commit()
            except OSError as exc:
                self.write_failed = True
                if exc.errno != errno.ENOSPC:
                    raise
                free, _ = disk_free(self.store.folder)
                raise DataError(self._no_space(self._needed(array), free)) from None

    def arrays(self, paths: list[str]) -> DecodedArrays | None:
        """The decoded arrays of ``paths`` in order (None without a cache)."""
        if self.mode in (None, "none") or not paths:
            return None
        entries = [self.entries[path] for path in paths]
        names = {e.shard for e in entries if isinstance(e.shard, str)}
        return DecodedArrays(entries, {n: self.store.folder / n for n in names}, self.buffers)

    # --- inside ------------------------------------------------------------------------

    def _needed(self, array: np.ndarray) -> int:
        return self.todo * (array.nbytes + ALIGN)

    def _no_space(self, needed: int, free: int) -> str:
        return (
            f"not enough disk space for the decoded cache: {self.todo} images need about "
            f"{_size(needed)} in {self.store.folder}, which has {_size(free)} free. Free space "
            "there, set datamodule.cache_dir to a larger disk, or train without it: "
            "datamodule.cache=none (decode every image every epoch) or datamodule.cache=memory "
            "(if the set fits in RAM)."
        )

    def _decide(self, first: np.ndarray) -> None:
        needed = self._needed(first)
        if self.mode in (None, "disk") and self.store is not None:
            free, total = disk_free(self.store.folder)
            reserve = min(2**30, total // 20)  # never fill a disk to the last byte
            if needed <= free - reserve:
                if self.mode is None:
                    log.info(
                        "datamodule.cache=auto: on disk (about %s of %s free in %s)",
                        _size(needed),
                        _size(free),
                        self.store.folder,
                    )
                self.mode = "disk"
                (self.store.folder / _DECLINED).unlink(missing_ok=True)
                return
            if self.mode == "disk":
                self.write_failed = True
                raise DataError(self._no_space(needed, free))
        ram_needed = (self.todo + self.known_count) * (first.nbytes + ALIGN)
        available = ram_free()
        fits = ram_needed <= available // 2
        if self.mode == "memory" and not fits:
            raise DataError(
                f"not enough memory for datamodule.cache=memory: {self.todo} images need about "
                f"{_size(ram_needed)}, and {_size(available)} are available. Use "
                "datamodule.cache=disk (or auto) or datamodule.cache=none."
            )
        if self.mode is None:
            self.mode = "memory" if fits else "none"
            log.warning(
                "datamodule.cache=auto: %s (the cache needs about %s; %s)",
                "in memory" if fits else "no cache: every image is decoded every epoch",
                _size(needed),
                "too little disk space" if self.store is not None else "no datamodule.cache_dir",
            )
            if self.store is not None:
                marker = self.store.folder / _DECLINED
                marker.write_text(json.dumps({"mode": self.mode, "time": time.time()}))
        if self.entries and self.mode == "memory":  # stored before: read them into RAM too
            reader = DecodedArrays(list(self.entries.values()), self._shards())
            self.fresh.update({e.path: reader[i] for i, e in enumerate(reader.entries)})
            self.entries = {}

    def _shards(self) -> dict:
        return {e.shard: self.store.folder / e.shard for e in self.entries.values()}

    def _commit(self) -> None:
        self.store.commit(self.writer)
        self.entries.update({e.path: e for e in self.writer.entries})
        self.writer = None

    def _wait_for(self, files: dict[str, Stamp]) -> dict[str, Entry]:
        """The store's entries once they cover ``files``, or when rank 0 has added none for
        ``wait`` seconds, or chose not to use the disk (its ``declined.json``)."""
        covered, progress = -1, time.monotonic()
        while True:
            entries = self.store.entries()
            count = sum(files.get(p) == (e.size, e.mtime_ns) for p, e in entries.items())
            if count == len(files):
                return entries
            declined = self._declined()
            if declined is not None:
                self.mode = declined
                return {}
            now = time.monotonic()
            if count > covered:
                covered, progress = count, now
            if now - progress >= self.wait:
                return entries
            time.sleep(0.5)

    def _declined(self) -> str | None:
        try:
            marker = json.loads((self.store.folder / _DECLINED).read_text())
        except (OSError, ValueError):
            return None
        return marker["mode"] if marker.get("time", 0) >= time.time() - self.wait else None

    def _finish(self) -> None:
        seconds = time.monotonic() - self.decode_start
        if self.mode is None:  # auto, and nothing was decoded: what is stored is all
            self.mode = "disk" if self.store is not None and self.entries else "none"
        if self.fresh:
            paths = list(self.fresh)
            memory = memory_arrays([self.fresh[p] for p in paths])
            self.buffers = memory.buffers
            for path, entry in zip(paths, memory.entries, strict=True):
                self.entries[path] = entry._replace(path=path)
            self.fresh = {}
        if self.mode == "disk" and not self.follower and (self.todo or self.stale):
            self.store.tidy()  # something changed or was deleted: drop what is stale, compact
        decoded = 0 if self.mode in (None, "none") else self.todo
        self.stats = {
            "mode": self.mode or "none",
            "folder": str(self.store.folder) if self.mode == "disk" else None,
            "images": len(self.entries),
            "known": self.known_count,
            "decoded": decoded,
            "build_s": round(seconds, 3),
            "images_per_s": round(decoded / seconds, 1) if decoded and seconds > 0 else None,
            "bytes": sum(e.nbytes for e in self.entries.values()),
            "dtypes": sorted({np.dtype(d).name for d in {e.dtype for e in self.entries.values()}}),
        }


def describe(stats: dict[str, Any]) -> str | None:
    """One line on what the decoded cache did (None without one)."""
    mode = stats.get("mode", "none")
    if mode == "none":
        return None
    where = f" in {stats['folder']}" if stats.get("folder") else ""
    line = f"decoded cache ({mode}{where}): {stats.get('images', 0)} images"
    if stats.get("decoded"):
        rate = stats.get("images_per_s")
        line += f", {stats['decoded']} decoded in {stats['build_s']:.1f} s ({rate:.0f} images/s)"
    if stats.get("dtypes"):
        line += f", stored as {'/'.join(stats['dtypes'])}"
    if stats.get("bytes"):
        line += f", {_size(stats['bytes'])}"
    return line


def log_cache(stats: dict[str, Any]) -> None:
    line = describe(stats)
    if line is not None:
        log.info("%s", line)


def array_cache(
    arrays: np.ndarray, splits: dict[str, list], image_size: Any, volume_size: Any
) -> tuple[dict[str, DecodedArrays], dict[str, Any]]:
    """An in-memory data set's rows (each split's ``paths``) fitted to the input size in one
    RAM buffer (``datamodule.cache=memory``): each split's arrays, and the stats."""
    from medclf.data.io import storage_form

    start = time.monotonic()
    rows = [p for paths in splits.values() for p in paths]
    fitted = [fit_input(storage_form(np.asarray(arrays[p])), image_size, volume_size) for p in rows]
    decoded = memory_arrays(fitted)
    seconds = time.monotonic() - start
    stats = {
        "mode": "memory",
        "folder": None,
        "images": len(rows),
        "known": 0,
        "decoded": len(rows),
        "build_s": round(seconds, 3),
        "images_per_s": round(len(rows) / max(seconds, 1e-3), 1),
        "bytes": decoded.nbytes,
        "dtypes": decoded.dtypes(),
    }
    parts, first = {}, 0
    for split, paths in splits.items():
        entries = decoded.entries[first : first + len(paths)]
        parts[split] = DecodedArrays(entries, {}, decoded.buffers)
        first += len(paths)
    return parts, stats


def compact_input(splits, channels: int) -> bool:
    """Whether every split's decoded images are uint8 with 1 or ``channels`` channels (so
    their batches can travel as uint8: medclf.data.transforms.ImageTransform ``compact``)."""
    found = [entry for decoded in splits if decoded is not None for entry in decoded.entries]
    return bool(found) and all(
        np.dtype(e.dtype) == np.uint8 and e.shape[-1] in (1, channels) for e in found
    )
