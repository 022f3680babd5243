"""The "Small data" table of docs/results.md: test metrics of the default training against
other settings (``recipe=small_data``, or single tricks) on small data sets, mean and spread
over seeds.

Sets (each trains from scratch; nothing is downloaded):
- ``digits``: the default run, ``medclf-train`` as it is (sklearn's 8 px digits at 32 px,
  1,797 images in 10 classes, resnet18, 8 epochs).
- ``blobs2d``: generated, 160 training, 40 validation and 40 test images of 32 px in noise
  with one or two bright blobs of radius 3-5 px (the class is the count), resnet18, the
  default 8 epochs.
- ``balls3d``: issue 18's set, 160/40/40 volumes of 28³ with a small or a large ball in
  noise, 3d_resnet18, batch 32, 3 epochs.

Settings are ``name`` (``default``, ``small_data``) or ``name=override,override``::

    python benchmarks/small_data.py --sets blobs2d --seeds 0 1 2 \\
        --settings default small_data ema=model.ema_decay=0.999 mixup=augment.mixup=0.2

Runs in this process, one after the other, into one MLflow store under ``--root``; writes
``results.csv`` there and prints a Markdown table (mean ± sample standard deviation).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

METRICS = ("test/accuracy", "test/f1", "test/auroc")
NAMED = {"default": (), "small_data": ("recipe=small_data",)}


def bright_spheres(path: Path, seed: int, size: int, dims: int, noise: tuple, radii) -> Path:
    """160/40/40 images (``dims`` 2) or volumes (3) of ``size`` px in normal ``noise`` (mean,
    sd), labels 0/1 alternating, each with bright discs or balls of ``radii(label, rng)``
    (drawn lazily, one centre after each radius)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.mgrid[(slice(size),) * dims], axis=-1).astype(np.float32)
    arrays = {}
    for split, n in (("train", 160), ("val", 40), ("test", 40)):
        labels = np.arange(n) % 2
        images = rng.normal(*noise, (n, *(size,) * dims)).astype(np.float32)
        for i, label in enumerate(labels):
            for radius in radii(label, rng):
                centre = rng.uniform(radius + 1, size - 1 - radius - 1, dims)
                images[i][((grid - centre) ** 2).sum(-1) < radius**2] += 120
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None]
    np.savez(path, **arrays)
    return path


def blobs2d(path: Path, seed: int = 0) -> Path:
    """One (class ``one``) or two (``two``) bright blobs of radius 3-5 px in noise, 32 px."""

    def blobs(label, rng):
        return (rng.uniform(3, 5) for _ in range(label + 1))

    return bright_spheres(path, seed, 32, 2, (70, 25), blobs)


def balls3d(path: Path, seed: int = 0) -> Path:
    """Issue 18's volumes: a radius-3 (``small``) or radius-8 (``large``) ball, 28³."""
    return bright_spheres(path, seed, 28, 3, (60, 20), lambda label, rng: (8 if label else 3,))


def set_overrides(name: str, root: Path) -> tuple[str, ...]:
    if name == "digits":
        return ()
    if name == "blobs2d":
        path = blobs2d(root / "blobs2d.npz")
        return ("datamodule=npz", f"datamodule.path={path}", "datamodule.class_names=[one,two]")
    if name == "balls3d":
        path = balls3d(root / "balls3d.npz")
        return (
            "datamodule=npz",
            f"datamodule.path={path}",
            "datamodule.class_names=[small,large]",
            "datamodule.volume_size=[28,28,28]",
            "datamodule.batch_size=32",
            "backbone=3d_resnet18",
            "trainer.max_epochs=3",
        )
    raise SystemExit(f"unknown set {name!r}: use digits, blobs2d or balls3d")


def setting_overrides(spec: str) -> tuple[str, tuple[str, ...]]:
    if spec in NAMED:
        return spec, NAMED[spec]
    name, _, rest = spec.partition("=")
    if not rest:
        raise SystemExit(f"setting {spec!r}: use default, small_data or name=key=value,...")
    return name, tuple(rest.split(","))


def train(root: Path, overrides: list[str]) -> tuple[int, str]:
    """``medclf-train`` in this process; (exit status, its output's tail)."""
    from hydra.core.global_hydra import GlobalHydra

    from medclf.cli.train import main

    GlobalHydra.instance().clear()
    out = io.StringIO()
    saved = sys.argv
    sys.argv = ["medclf-train", f"paths.root_dir={root}", *overrides]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = saved
    return code, out.getvalue()[-3000:]


def test_metrics(root: Path, run_name: str) -> dict[str, float]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    runs = mlflow.search_runs(
        experiment_names=["results"],
        filter_string=f"attributes.run_name = '{run_name}'",
        order_by=["attributes.start_time DESC"],
    )
    row = runs.iloc[0]
    return {m: float(row.get(f"metrics.{m}", float("nan"))) for m in METRICS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["digits", "blobs2d", "balls3d"])
    parser.add_argument("--settings", nargs="+", default=["default", "small_data"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=Path("results_benchmark"))
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for set_name in args.sets:
        data = set_overrides(set_name, root)
        for spec in args.settings:
            name, extra = setting_overrides(spec)
            for seed in args.seeds:
                run_name = f"{set_name}-{name}-seed{seed}"
                start = time.perf_counter()
                code, tail = train(
                    root,
                    [
                        *data,
                        *extra,
                        f"seed={seed}",
                        "logger.mlflow.experiment_name=results",
                        f"logger.mlflow.run_name={run_name}",
                        "logger.mlflow.save_model=false",
                        "eval.bootstrap=0",
                        *args.extra,
                    ],
                )
                seconds = time.perf_counter() - start
                if code:
                    print(f"{run_name}: exit {code}\n{tail}", flush=True)
                    continue
                metrics = test_metrics(root, run_name)
                row = {"set": set_name, "setting": name, "seed": seed, "s": seconds}
                rows.append({**row, **metrics})
                shown = " ".join(f"{m.split('/')[1]} {v:.3f}" for m, v in metrics.items())
                print(f"{run_name}: {shown} ({seconds:.0f} s)", flush=True)
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(root / "results.csv", index=False)
    print("\n| set | setting | accuracy | macro F1 | AUROC | s/run |")
    print("|---|---|---:|---:|---:|---:|")
    for (set_name, name), group in frame.groupby(["set", "setting"], sort=False):
        cells = []
        for metric in METRICS:
            values = list(group[metric])
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        print(f"| {set_name} | {name} | {' | '.join(cells)} | {group['s'].mean():.0f} |")


if __name__ == "__main__":
    main()
