"""Benchmark of the default run: wall time and test accuracy of ``python train.py``.

Runs the command as a user would (fresh MLflow store in a temporary root, offline), N
times, and prints one row per run plus the mean. Not a test: timings depend on the machine.

    .venv/bin/python benchmarks/default_train.py [--repeats 1] [OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    import mlflow
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cuda {torch.cuda.is_available()}"
    )
    print(f"command: python train.py {' '.join(args.overrides)}")
    rows = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as root:
            env = dict(os.environ, HF_HUB_OFFLINE="1", MEDCLF_ROOT=root)
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "train.py", *args.overrides],
                cwd=REPO,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - start
            mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
            run = mlflow.search_runs(experiment_names=["medclf"]).iloc[0]
            client = mlflow.MlflowClient()
            epochs = len(client.get_metric_history(run["run_id"], "val/f1"))
            rows.append((wall, run["metrics.test/accuracy"], run["metrics.test/f1"], epochs))
            print(
                f"run {i + 1}: wall {wall:6.1f} s  epochs {epochs}  "
                f"test/accuracy {rows[-1][1]:.4f}  test/f1 {rows[-1][2]:.4f}",
                flush=True,
            )
    n = len(rows)
    print(
        f"mean of {n}: wall {sum(r[0] for r in rows) / n:6.1f} s  "
        f"test/accuracy {sum(r[1] for r in rows) / n:.4f}"
    )


if __name__ == "__main__":
    main()
