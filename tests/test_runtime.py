"""medclf.runtime: the collector paused for the start-up, frozen for the run, the start-up
clock, and no fork while another thread starts programs."""

from __future__ import annotations

import gc
import multiprocessing
import os
import select
import subprocess
import sys
import threading
import time
import weakref

import pytest

from medclf import runtime


class Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: only the collector frees it


def test_objects_of_the_start_up_are_frozen_for_the_run_and_given_back_after() -> None:
    before = Node()
    gone_before = weakref.ref(before)
    with runtime.startup_without_collection():
        assert not gc.isenabled()
        with runtime.long_lived_frozen():
            assert gc.isenabled()  # the run collects as usual ...
            assert gc.get_freeze_count() > 0
            del before
            during = Node()
            gone_during = weakref.ref(during)
            del during
            gc.collect()
            assert gone_during() is None  # ... what it makes itself
            assert gone_before() is not None  # but not what existed when it started
        assert not gc.isenabled()
        assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    gc.collect()
    assert gone_before() is None  # a finished run's objects are collected after all


def test_laps_add_up_to_the_start_up_and_the_next_run_starts_afresh(monkeypatch) -> None:
    clock = iter([100.0, 101.5, 104.0, 104.25, 200.0, 203.0])
    monkeypatch.setattr(time, "time", lambda: next(clock))
    monkeypatch.setattr(runtime, "_begun", False)
    monkeypatch.setattr(runtime, "process_start", lambda: 99.0)
    runtime.begin()  # the first command of the process: from the process's start
    runtime.lap("python and Hydra")  # 100.0
    runtime.lap("imports")  # 101.5
    runtime.lap("data")  # 104.0
    runtime.lap("data")  # 104.25: a phase timed twice adds up
    assert runtime.startup() == {
        "python and Hydra": 1.0,
        "imports": 1.5,
        "data": 2.75,
        "total": 5.25,
    }
    runtime.begin()  # the same command again in this process: from now (200.0)
    runtime.lap("python and Hydra")  # 203.0
    assert runtime.startup() == {"python and Hydra": 3.0, "total": 3.0}


def test_the_process_start_is_before_now() -> None:
    assert time.time() - 600 < runtime.process_start() <= time.time()


def test_the_process_start_is_when_the_process_was_started() -> None:
    """A child's own start (what the "python and Hydra" phase counts from) lies between its
    parent's call and the child's first line; psutil's put it up to a second earlier."""
    import subprocess
    import sys

    code = (
        "import time; t = time.time(); from medclf import runtime; "
        "print(runtime.process_start(), t)"
    )
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    started, first_line = map(float, out.stdout.split())
    assert before - 0.02 <= started <= first_line + 0.02


@pytest.mark.slow
def test_exit_does_not_walk_the_objects_and_still_runs_exit_handlers(tmp_path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(
        "import atexit, gc, os\n"
        "from medclf import runtime\n"
        "runtime.skip_collection_at_exit()\n"
        "atexit.register(lambda: print('handler ran, frozen', gc.get_freeze_count()))\n"
        "keep = [[i] for i in range(100_000)]\n"
        f"kept = open({str(tmp_path / 'written.txt')!r}, 'w')\n"
        "kept.write('written, never closed')\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:1] == ["handler ran, frozen 0"]  # the freeze runs last
    assert (tmp_path / "written.txt").read_text() == "written, never closed"  # not lost


def test_the_exit_freeze_flushes_open_files_first(tmp_path) -> None:
    kept = open(tmp_path / "kept.txt", "w")  # noqa: SIM115 (left open on purpose)
    kept.write("buffered")
    try:
        runtime._flush_and_freeze()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert (tmp_path / "kept.txt").read_text() == "buffered"
    kept.close()


def _hold_a_pipe(entered: threading.Event, seconds: float, ended: list) -> None:
    """In a no-fork block: a pipe as subprocess makes one, kept for ``seconds``; whether its
    end is read at once after (no forked child holds it)."""
    with runtime.no_fork_during():
        read_end, write_end = os.pipe()
        entered.set()
        time.sleep(seconds)
        os.close(write_end)
        ended.append(time.time())
    ended.append(bool(select.select([read_end], [], [], 0.5)[0]))
    os.close(read_end)


def test_a_fork_waits_for_another_threads_no_fork_block() -> None:
    """A DataLoader's worker forked while the MLflow thread starts a program would hold the
    program's pipe until the worker exits (a run hung so): the fork waits for the block."""
    fork = multiprocessing.get_context("fork")
    entered, ended = threading.Event(), []
    thread = threading.Thread(target=_hold_a_pipe, args=(entered, 0.5, ended))
    thread.start()
    entered.wait(5)
    child = fork.Process(target=time.sleep, args=(3,))  # a worker that outlives the block
    child.start()
    forked = time.time()
    thread.join(5)
    try:
        assert forked >= ended[0]  # it waited for the block's end ...
        assert ended[1] is True  # ... so the pipe's end was read at once
    finally:
        child.terminate()
        child.join()


def test_the_thread_in_the_block_forks_without_waiting_for_itself() -> None:
    fork = multiprocessing.get_context("fork")
    started = time.time()
    with runtime.no_fork_during():
        child = fork.Process(target=time.sleep, args=(0,))
        child.start()
        child.join(5)
    assert child.exitcode == 0
    assert time.time() - started < runtime.FORK_WAIT_S / 2
