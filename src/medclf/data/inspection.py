"""What the images are, read from the files before any training: readable, 2D or 3D, and
how many channels the model gets. Every problem names a file."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from medclf.data.checkcache import CheckCache, follower_rank, stamps
from medclf.data.io import read_raw
from medclf.errors import DataError, Problems

if TYPE_CHECKING:
    from medclf.data.cachefill import CacheFill

log = logging.getLogger(__name__)


class DecodeProgress:
    """Images decoded so far, images/s and the time left: a rich bar on a terminal, else a
    log line every ``every`` seconds (only for ``total`` above ``least``)."""

    def __init__(self, total: int, least: int = 200, every: float = 15.0) -> None:
        self.total, self.done, self.every = total, 0, every
        self.start = self.shown = time.monotonic()
        self.bar = None
        if total < least:
            self.total = 0
        elif sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            rate = TextColumn("{task.fields[rate]:.0f} images/s")
            columns = (TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), rate)
            self.bar = Progress(*columns, TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task("decode", total=total, rate=0.0)
            self.bar.start()

    def advance(self) -> None:
        self.done += 1
        if not self.total:
            return
        now = time.monotonic()
        rate = self.done / max(now - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=rate)
        elif now - self.shown >= self.every:
            self.shown = now
            left = (self.total - self.done) / rate
            log.info(
                "decoding images: %d of %d, %.0f images/s, %.0f s left",
                self.done,
                self.total,
                rate,
                left,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def inspect_images(
    paths: Iterable[str],
    arrays: np.ndarray | None,
    fill: CacheFill | None = None,
    *,
    every: bool = True,
    channels: int | str = "auto",
    spatial_dims: int | str = "auto",
    dicom_window: Any = None,
    check_cache: CheckCache | None = None,
    follower: bool | None = None,
    wait: float = 600.0,
    counts: dict[str, int] | None = None,
) -> tuple[int, int]:
    """(channels, spatial dims) of the data. Decodes every image once (the first 16 when
    ``every`` is false and nothing is cached), on every core, with a progress bar; with
    ``fill`` (the decoded cache), each decoded image is fitted to the input size and kept
    there, and the images it holds intact are not decoded. ``check_cache`` remembers what
    decoded, so the files it covers unchanged are not decoded again, and a ``follower`` rank
    (default: LOCAL_RANK > 0) waits up to ``wait`` s for its node's rank 0 to check them
    (medclf.data.checkcache). ``arrays``: an in-memory data set, read from its shape.
    ``counts`` (if given) receives how many images there were, how many the caches knew and
    how many were decoded."""
    errors: list[str] = []
    if arrays is not None:
        shapes = {(arrays.ndim - 2, int(arrays.shape[-1])): "the in-memory arrays"}
    else:
        paths = list(dict.fromkeys(paths))
        if not every and fill is None:
            paths = paths[:16]
        shapes = {}
        files: dict[str, tuple[int, int]] = {}
        known: dict[str, tuple[int, int]] = {}
        if check_cache is not None or fill is not None:
            files, _ = stamps(paths)  # a missing file is decoded below: its error names it
        if fill is not None:
            known = fill.known(files)
        elif check_cache is not None:
            wait_first = follower_rank() if follower is None else follower
            known = check_cache.wait_for(files, wait) if wait_first else check_cache.known(files)
        for path in paths:
            if path in known:
                shapes.setdefault(known[path], path)
        todo = [path for path in paths if path not in known]
        if counts is not None:
            counts.update(images=len(paths), known=len(known), decoded=len(todo))
        if known:
            log.info(
                "image check: %d of %d images known unchanged, %d decoded",
                len(known),
                len(paths),
                len(todo),
            )
        if fill is not None:
            fill.begin(len(todo))

        def decode(path: str) -> tuple[tuple[int, int], np.ndarray | None] | str:
            try:
                raw = read_raw(path, dicom_window=dicom_window)
                kept = fill.prepare(raw) if fill is not None else None
            except DataError as exc:
                return str(exc)
            return (raw.ndim - 1, int(raw.shape[-1])), kept

        learnt = {}
        progress = DecodeProgress(len(todo))
        pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1))
        try:
            for path, result in zip(todo, pool.map(decode, todo), strict=True):
                progress.advance()
                if isinstance(result, str):
                    errors.append(result)
                    continue
                found, kept = result
                shapes.setdefault(found, path)
                if path in files:
                    learnt[path] = (files[path], found)
                if fill is not None:
                    fill.add(path, files.get(path), kept)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error: stop decoding now
            progress.close()
        if check_cache is not None:
            check_cache.remember(learnt)
    problems = Problems()
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        problems.add(f"{len(errors)} unreadable image(s):\n    " + "\n    ".join(errors[:5]) + more)
    dims = {d: path for (d, _), path in shapes.items()}
    if len(dims) > 1:
        problems.add(
            f"the data mixes 2D images (e.g. {dims[2]}) and 3D volumes (e.g. {dims[3]}); "
            "keep one kind per data set (datamodule.spatial_dims selects which)."
        )
    problems.raise_any()
    (found_dims,) = dims
    if spatial_dims not in ("auto", found_dims):
        raise DataError(
            f"datamodule.spatial_dims={spatial_dims} but the data is "
            f"{found_dims}D; set datamodule.spatial_dims={found_dims} (or auto)."
        )
    return model_channels({c: path for (_, c), path in shapes.items()}, channels), found_dims


def model_channels(found: dict[int, str], requested: int | str = "auto") -> int:
    """The channel count the model gets, given each count found with an example file."""
    if requested != "auto":
        wanted = int(requested)
        for count, path in sorted(found.items()):
            if count != wanted and count != 1 and not (count == 3 and wanted == 1):
                raise DataError(
                    f"{path} has {count} channels, which cannot be converted to "
                    f"datamodule.channels={wanted} (only 1 → N and 3 → 1 convert)."
                )
        return wanted
    if set(found) <= {1, 3} or len(found) == 1:
        return max(found)
    listed = ", ".join(f"{c} (e.g. {p})" for c, p in sorted(found.items()))
    raise DataError(
        f"images have different channel counts: {listed}; set datamodule.channels to the "
        "count the model should see (1 and 3 convert, other counts must match)."
    )
