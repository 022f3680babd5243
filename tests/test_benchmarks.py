"""The throughput benchmark runs (tiny settings) and prints its table; no timing is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow


def test_throughput_smoke_prints_the_table() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "| measurement | images/s | at the median step | note |" in lines
    number = r"\| (\d+\.\d) \|"
    rows = [line for line in lines if re.match(r"\| \([abc]\) ", line)]
    assert [row[:5] for row in rows] == ["| (a)", "| (b)", "| (c)"]
    assert all(re.search(number, row) for row in rows), rows
    assert "(b)/(a) = " in rows[1] and "per worker" in rows[2]
    assert re.search(r"command to first training step \d+\.\d s", result.stdout)
