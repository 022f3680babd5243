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


def test_small_data_results_smoke_prints_the_table(tmp_path, capsys, monkeypatch) -> None:
    """benchmarks/small_data.py (docs/results.md) on one generated set, one seed, 1 epoch."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import small_data

    runs = ["--sets", "blobs2d", "--seeds", "0", "--root", str(tmp_path)]
    extra = ["backbone.name=tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    small_data.main([*runs, "--extra", *extra])
    lines = capsys.readouterr().out.splitlines()
    assert "| set | setting | accuracy | macro F1 | AUROC | s/run |" in lines
    rows = [line for line in lines if line.startswith("| blobs2d |")]
    assert [row.split(" | ")[1] for row in rows] == ["default", "small_data"]
    assert all(re.search(r"\| 0\.\d{3} ± 0\.000 \|", row) for row in rows), rows
    assert (tmp_path / "results.csv").is_file()
