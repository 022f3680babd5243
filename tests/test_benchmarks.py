"""The throughput benchmark runs (tiny settings) and prints its table; no timing is checked.
Its (b) is ``python train.py`` in a process of its own, as a user runs it (the suite's one
demo run as a process)."""

from __future__ import annotations

import re
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow


def test_throughput_smoke_prints_the_table(capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import throughput

    monkeypatch.setattr(sys, "argv", ["throughput.py", "--smoke"])
    throughput.main(["--smoke"])
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    assert "| measurement | images/s | at the median step | note |" in lines
    number = r"\| (\d+\.\d) \|"
    rows = [line for line in lines if re.match(r"\| \([abc]\) ", line)]
    assert [row[:5] for row in rows] == ["| (a)", "| (b)", "| (c)"]
    assert all(re.search(number, row) for row in rows), rows
    assert "(b)/(a) = " in rows[1] and "per worker" in rows[2]
    assert re.search(r"command to first training step \d+\.\d s", stdout)
