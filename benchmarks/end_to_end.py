"""Wall time of ``python train.py`` against a plain PyTorch + timm script doing the same work
(benchmarks/plain_train.py, a stand-in for timm's train.py), in one run, phase by phase.

The work: a generated folder of ``--images`` grey 28 px PNGs in two classes (the size of
PneumoniaMNIST), resnet18 from scratch at ``--image-size`` px, batch ``--batch-size``,
``--epochs`` epochs with validation after each, ``--workers`` loader processes, one test
pass. train.py runs with ``augment=none`` (the plain script does not augment), no early
stopping, and a callback (PhaseTimer, below) that writes its phase times. Each round runs
the plain script, then train.py twice on one root: "first" creates the MLflow store and
the image check cache, "again" finds both (every later run, sweep trial or DDP rank).

    python benchmarks/end_to_end.py [--images 3166] [--epochs 3] [--rounds 1]

Phases (seconds, each from the end of the one before): start-up (command → data ready: for
train.py the start of fit, i.e. imports, config, data set-up and checks, model, MLflow
run), first step, epochs (the first step's end → the last validation's end), test (→ the
test pass's end), after (→ the process has exited: for train.py the report, plots, logging
the model). Prints a Markdown table and train.py's own start-up breakdown (its
``startup.json``: interpreter and Hydra, imports, config check, data, model, MLflow and
trainer); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]


class PhaseTimer(L.Callback):
    """In train.py: ``time.time()`` at the start of fit, the first step's end, each
    validation's end and the test pass's end, written to ``path`` as JSON."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.record: dict = {"epochs": []}

    def _write(self) -> None:
        Path(self.path).write_text(json.dumps(self.record))

    def on_fit_start(self, trainer, pl_module) -> None:
        self.record["data_ready"] = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.record.setdefault("first_step_end", time.time())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "first_step_end" in self.record:
            self.record["epochs"].append(time.time())
            self._write()

    def on_test_end(self, trainer, pl_module) -> None:
        self.record["test_end"] = time.time()
        self._write()


def make_folder(root: Path, n: int) -> Path:
    """``n`` 28 px grey PNGs, 27 % normal and 73 % pneumonia (PneumoniaMNIST's balance),
    the class a faint bright disc."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    disc = ((yy - 14) ** 2 + (xx - 14) ** 2 < 40).astype(np.float64)
    for i in range(n):
        label = "pneumonia" if rng.random() < 0.73 else "normal"
        (root / label).mkdir(parents=True, exist_ok=True)
        pixels = rng.normal(100, 30, (28, 28)) + (40 * disc if label == "pneumonia" else 0)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / label / f"{i}.png")
    return root


def _run(command: list[str], env: dict, log: Path) -> tuple[float, float]:
    start = time.time()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=out).returncode
    if code != 0:
        raise SystemExit(f"{command[1]} failed ({code}):\n{log.read_text()[-3000:]}")
    return start, time.time()


def phases(record: dict, start: float, end: float) -> dict[str, float]:
    return {
        "start-up": record["data_ready"] - start,
        "first step": record["first_step_end"] - record["data_ready"],
        "epochs": record["epochs"][-1] - record["first_step_end"],
        "test": record["test_end"] - record["epochs"][-1],
        "after": end - record["test_end"],
        "wall": end - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3166)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "benchmarks"), env.get("PYTHONPATH", "")])
    names = ["plain", "train.py first", "train.py again"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    startups: dict[str, list[dict[str, float]]] = {name: [] for name in names[1:]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_folder(tmp / "data", args.images)
        for round_ in range(args.rounds):
            record = tmp / f"plain{round_}.json"
            start, end = _run(
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "plain_train.py"),
                    str(data),
                    str(record),
                    f"--image-size={args.image_size}",
                    f"--batch-size={args.batch_size}",
                    f"--epochs={args.epochs}",
                    f"--workers={args.workers}",
                ],
                env,
                tmp / "plain.log",
            )
            results["plain"].append(phases(json.loads(record.read_text()), start, end))
            root = tmp / f"root{round_}"
            for name in names[1:]:
                record = tmp / f"medclf{round_}{name[-1]}.json"
                start, end = _run(
                    [
                        sys.executable,
                        str(REPO / "train.py"),
                        f"paths.root_dir={root}",
                        f"hydra.run.dir={root / 'logs' / name.replace(' ', '_')}",
                        "datamodule=folder",
                        f"datamodule.data_dir={data}",
                        f"datamodule.image_size={args.image_size}",
                        f"datamodule.batch_size={args.batch_size}",
                        f"datamodule.num_workers={args.workers}",
                        f"trainer.max_epochs={args.epochs}",
                        "augment=none",
                        "callbacks.early_stopping=null",
                        "callbacks.progress_bar.refresh_rate=0",
                        "+callbacks.phase_timer._target_=end_to_end.PhaseTimer",
                        f"+callbacks.phase_timer.path={record}",
                    ],
                    env,
                    tmp / "medclf.log",
                )
                results[name].append(phases(json.loads(record.read_text()), start, end))
                startup = root / "logs" / name.replace(" ", "_") / "startup.json"
                startups[name].append(json.loads(startup.read_text()))
    mean = {name: _mean(rows) for name, rows in results.items()}
    print(
        f"{os.cpu_count()} cores; {args.images} PNGs, resnet18, {args.image_size} px, batch "
        f"{args.batch_size}, {args.epochs} epochs, {args.workers} workers; mean of "
        f"{args.rounds} round(s); seconds"
    )
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in mean["plain"]:
        print(f"| {key} | " + " | ".join(f"{mean[n][key]:.1f}" for n in names) + " |")
    for name in names[1:]:
        ratio = mean[name]["wall"] / mean["plain"]["wall"]
        print(f"wall-time ratio {name} / plain: {ratio:.2f}")
    print("\ntrain.py's start-up (startup.json), seconds")
    breakdown = {name: _mean(rows) for name, rows in startups.items()}
    print("| phase | " + " | ".join(names[1:]) + " |")
    print("|---|" + "---:|" * len(breakdown))
    for key in breakdown[names[1]]:
        print(f"| {key} | " + " | ".join(f"{breakdown[n][key]:.1f}" for n in breakdown) + " |")


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    numeric = [key for key, value in rows[0].items() if isinstance(value, (int, float))]
    return {key: sum(row[key] for row in rows) / len(rows) for key in numeric}


if __name__ == "__main__":
    main()
