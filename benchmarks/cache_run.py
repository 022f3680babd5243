"""``python train.py`` with and without the decoded cache on full-size images: ``--backbone``
(resnet18) at 224 px on ``--images`` generated 1,024-px grey PNGs (two classes, a faint disc
for one; made on every core), ``--epochs`` epochs, the default augmentation and loader
workers. Prints each epoch's time (from the start of its training to the end of its
validation), its training images/s (the train split's images over the time from the
epoch's start to its last training step) and ``time/data_wait_fraction``, the set-up's
decoded-cache line (build time, images/s), and the whole command's wall time.

    python benchmarks/cache_run.py [--images 2000] [--epochs 2] [--backbone resnet18]
        [--tmp DIR] [KEY=VALUE ...]

Runs ``cache=none`` first, then ``cache=disk`` on an empty cache (which builds it in
set-up); the generated folder is deleted at the end. The issue's GPU check (resnet50, bf16,
channels_last, 16 workers, 20,000 images):

    python benchmarks/cache_run.py --images 20000 --backbone resnet50 \
        trainer.accelerator=gpu trainer.precision=bf16-mixed model.channels_last=true \
        datamodule.num_workers=16 datamodule.batch_size=256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    """In train.py: each training epoch's start and its validation's end, and the data wait
    fraction the run logged, written to ``path`` as JSON."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.record: dict = {"epochs": []}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.record["epochs"].append({"start": time.time(), "images": 0})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = self.record["epochs"][-1]
        epoch["images"] += len(batch["image"])
        epoch["last_step"] = time.time()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.record["epochs"]:
            self.record["epochs"][-1]["end"] = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        wait = trainer.callback_metrics.get("time/data_wait_fraction")
        if wait is not None and self.record["epochs"]:
            self.record["epochs"][-1]["data_wait_fraction"] = float(wait)
        Path(self.path).write_text(json.dumps(self.record))


def _write_image(root: Path, i: int, size: int) -> None:
    """Image ``i`` (its own random stream: the same whichever process makes it)."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng([0, i])
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2).astype(np.float32)
    label = "b" if i % 2 else "a"
    coarse = torch.from_numpy(rng.random((1, 1, size // 64, size // 64), dtype=np.float32))
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    pixels = 60 + 120 * field[0, 0].numpy() + rng.normal(0, 8, (size, size))
    pixels += 25 * disc if label == "b" else 0
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / label / f"{i}.png")


def make_folder(root: Path, n: int, size: int = 1024) -> Path:
    """``n`` PNGs in ``root/a`` and ``root/b``, made on every core."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(partial(_write_image, root, size=size), range(n), chunksize=16))
    return root


def run(data: Path, root: Path, cache: str, epochs: int, backbone: str, extra: list[str]) -> dict:
    record = root / f"epochs-{cache}.json"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        f"paths.root_dir={root}",
        f"hydra.run.dir={root / 'logs' / cache}",
        "datamodule=folder",
        f"datamodule.data_dir={data}",
        "datamodule.image_size=224",
        f"datamodule.cache={cache}",
        f"trainer.max_epochs={epochs}",
        f"backbone={backbone}",
        "callbacks.early_stopping=null",
        "callbacks.progress_bar.refresh_rate=0",
        "logger.mlflow.save_model=false",
        "+callbacks.epoch_timer._target_=cache_run.EpochTimer",
        f"+callbacks.epoch_timer.path={record}",
        *extra,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "benchmarks"), env.get("PYTHONPATH", "")])
    start = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"train.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(record.read_text())
    result["wall"] = wall
    log = done.stdout + done.stderr
    result["cache line"] = next((ln for ln in log.splitlines() if "decoded cache (" in ln), "")
    startup = json.loads((root / "logs" / cache / "startup.json").read_text())
    result["startup"] = startup["total"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="medclf-cache-run-", dir=args.tmp))
    try:
        start = time.time()
        data = make_folder(tmp / "data", args.images)
        print(f"generated {args.images} 1,024-px PNGs in {time.time() - start:.0f} s", flush=True)
        results = {
            cache: run(data, tmp, cache, args.epochs, args.backbone, args.overrides)
            for cache in ("none", "disk")
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{os.cpu_count()} cores; {args.backbone}, 224 px, {args.images} 1,024-px PNGs, "
        f"{args.epochs} epochs, augment=default, {' '.join(args.overrides)}; seconds, "
        "training images/s\n"
    )
    print(
        "| cache | start-up | "
        + " | ".join(f"epoch {i} | images/s {i} | wait {i}" for i in range(args.epochs))
        + " | wall |"
    )
    print("|---|---:|" + "---:|---:|---:|" * args.epochs + "---:|")
    for cache, result in results.items():
        cells = []
        for epoch in result["epochs"]:
            cells.append(f"{epoch['end'] - epoch['start']:.1f}")
            cells.append(f"{epoch['images'] / (epoch['last_step'] - epoch['start']):.0f}")
            cells.append(f"{100 * epoch.get('data_wait_fraction', float('nan')):.0f}%")
        print(
            f"| {cache} | {result['startup']:.1f} | "
            + " | ".join(cells)
            + f" | {result['wall']:.0f} |"
        )
    for cache, result in results.items():
        print(f"{cache}: {result['cache line'].split(' - ')[-1]}")


if __name__ == "__main__":
    main()
