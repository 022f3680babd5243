"""The process a command runs in: the garbage collector, the start-up clock, and work done
beside the critical path.

Importing torch, Lightning, torchmetrics and MLflow creates millions of objects that live
until the process ends, and Python's full (generation 2) collections walk all of them: in
a one-epoch run on 2 cores, 10 of them during the start-up took 2.7 s, and the collections
while the interpreter shuts down another 3 s. So ``medclf-train`` pauses the collector from
its start (:func:`startup_without_collection`) until training starts, where
:func:`long_lived_frozen` moves everything that exists then out of its reach
(``gc.freeze``) and turns it back on; afterwards it gives those objects back
(``gc.unfreeze``), so that a sweep's or cross-validation's finished runs are collected.
:func:`skip_collection_at_exit` spares the last collections at exit. Objects are still
released when their last reference goes; only reference cycles wait.

:func:`in_background` runs work whose result nothing waits for (a figure, an artifact
upload) in one worker thread, in order, while the run goes on; :func:`wait_background`
waits for it (and raises its first error) before the run is recorded as ended.

:func:`no_fork_during` keeps other threads from forking (a DataLoader starting its workers)
while a thread runs code that starts programs: a child forked meanwhile would inherit the
pipes of that program and hold them open, and the thread would wait for their end until the
child exits (opening MLflow runs ``uname`` and ``git``; a run hung so, for good).

:func:`lap` times the start-up of a run (interpreter and Hydra, imports, config check,
data, model, MLflow): from the process's start for a command's first run, from
:func:`begin` for a command run again in the same process, and from the job's first lap
for the later jobs of a multirun.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_start: float | None = None
_begun = False
_exit_registered = False
_phases: dict[str, float] = {}
_worker: ThreadPoolExecutor | None = None
_background: list[Future] = []
_fork_gate = threading.Condition()
_no_fork: dict[int, int] = {}  # thread ident -> depth of no_fork_during blocks
_gate_installed = False
FORK_WAIT_S = 120.0

log = logging.getLogger(__name__)


def in_background(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Run ``function`` in this process's background thread (one task at a time, in the
    order given); :func:`wait_background` waits for it."""
    global _worker
    if _worker is None:
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medclf-background")
    future = _worker.submit(function, *args, **kwargs)
    _background.append(future)
    return future


def wait_background(raise_errors: bool = True) -> None:
    """Until every task given to :func:`in_background` is done; the first error is raised
    (with ``raise_errors``)."""
    pending = list(_background)
    _background.clear()
    errors = []
    for future in pending:
        try:
            future.result()
        except BaseException as exc:  # wait for the others before raising
            errors.append(exc)
    if errors and raise_errors:
        raise errors[0]


@contextlib.contextmanager
def no_fork_during() -> Iterator[None]:
    """While this thread runs the block, a fork in another thread (``os.fork``: the workers
    of a DataLoader, a ``multiprocessing`` process) waits until it ends, for at most
    :data:`FORK_WAIT_S` seconds. Programs started by ``subprocess`` are not held back: they
    replace themselves at once and keep no pipe but their own."""
    _install_fork_gate()
    me = threading.get_ident()
    with _fork_gate:
        _no_fork[me] = _no_fork.get(me, 0) + 1
    try:
        yield
    finally:
        with _fork_gate:
            _no_fork[me] -= 1
            if not _no_fork[me]:
                del _no_fork[me]
            _fork_gate.notify_all()


def _install_fork_gate() -> None:
    """Registered once, when first needed: the hooks registered last run first before a
    fork, so the forking thread waits here before the standard library's hooks take their
    locks (logging's, which the waited-for thread may need)."""
    global _gate_installed
    if not _gate_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_child
        )
        _gate_installed = True


def _before_fork() -> None:
    _fork_gate.acquire()  # held through the fork: no block starts meanwhile
    me = threading.get_ident()
    if not _fork_gate.wait_for(lambda: not set(_no_fork) - {me}, timeout=FORK_WAIT_S):
        log.warning(
            "a process is forked while another thread still starts programs (waited %.0f s): "
            "if the run stops here, set datamodule.num_workers=0 and report it",
            FORK_WAIT_S,
        )


def _after_fork() -> None:
    _fork_gate.release()


def _after_fork_child() -> None:
    global _fork_gate
    _fork_gate = threading.Condition()  # the child has only the forking thread
    _no_fork.clear()


def process_start() -> float:
    """When this process started (``time.time()`` scale), or now where that is unknown.

    On Linux: its start in clock ticks since boot (``/proc/self/stat``) against the boot
    clock now, to 10 ms. psutil's ``create_time`` adds that tick count to the boot time,
    which ``/proc/stat`` gives in whole seconds: it made processes up to a second older
    (0.8 s on the development machine, all of it in the "python and Hydra" phase)."""
    import os

    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - max(age, 0.0)
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        pass
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # no psutil, or a platform without process times
        return time.time()


def begin() -> None:
    """A command starts: its start-up is timed from the process's start the first time,
    from now when the command runs again in this process."""
    global _start, _begun
    _start = time.time() if _begun else process_start()
    _begun = True
    _phases.clear()


def lap(phase: str) -> None:
    """End ``phase`` of the start-up now (the time since the previous lap is added to it)."""
    global _start
    now = time.time()
    _phases[phase] = _phases.get(phase, 0.0) + max(0.0, now - (now if _start is None else _start))
    _start = now


def startup() -> dict[str, float]:
    """The start-up phases timed so far (seconds, in order) and their ``total``; the next
    lap starts a new start-up (the next run in this process)."""
    global _start
    phases = {name: round(seconds, 3) for name, seconds in _phases.items()}
    phases["total"] = round(sum(_phases.values()), 3)
    _phases.clear()
    _start = None
    return phases


@contextlib.contextmanager
def startup_without_collection() -> Iterator[None]:
    """No cyclic garbage collection in the block except inside :func:`long_lived_frozen`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Collect as usual in the block, but leave the objects that exist now out of it."""
    gc.freeze()
    enabled = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        if not enabled:
            gc.disable()


def skip_collection_at_exit() -> None:
    """Once the exit handlers have run, flush every open file and freeze every object: the
    interpreter's last collections then have nothing to walk (the memory is the operating
    system's anyway). What is still referenced then is not finalised, as Python does not
    promise at exit either; open files are flushed first, so nothing written is lost."""
    global _exit_registered
    if not _exit_registered:
        atexit.register(_flush_and_freeze)  # registered first: runs after the other handlers
        _exit_registered = True


def _flush_and_freeze() -> None:
    import io

    gc.disable()
    # the concrete buffered classes, not the io.IOBase ABC: its isinstance is 100x slower
    buffered = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)
    for obj in gc.get_objects():
        if issubclass(type(obj), buffered):  # type(): no object's own __class__ is asked
            with contextlib.suppress(Exception):
                if not obj.closed:
                    obj.flush()
    gc.freeze()
