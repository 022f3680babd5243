"""The data audit's time at size: ``medclf-audit`` (in this process) on N generated 64 px
greyscale PNGs in class folders (datamodule=folder; the class is a bright quadrant, as in
the tests, so a model learns it), split into its phases as the audit
writes them to ``audit.json``: data checks, scan and hashes, cross-validation (the
out-of-fold probabilities), label errors, features (the fold model on every image),
near-duplicates, overview and page.

    python benchmarks/audit.py --sizes 1000 10000 50000 [--epochs 1] [--folds 3]
        [--backbone resnet18]

The generated data and the run's store are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import class_image  # noqa: E402

from helpers import run_train  # noqa: E402


def write_folder(root: Path, n: int, classes: int = 3) -> Path:
    """``root/c<k>/i<n>.png``: ``n`` noisy 64 px images whose class is a bright quadrant."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = class_image(i % classes, rng, size=64)
        Image.fromarray(image).save(root / f"c{i % classes}" / f"i{i}.png")
    return root


def audit(root: Path, data: Path, args) -> dict:
    overrides = [
        "audit_only=true",
        "datamodule=folder",
        f"datamodule.data_dir={data}",
        "datamodule.image_size=64",
        "datamodule.batch_size=64",
        f"backbone={args.backbone}",
        f"trainer.max_epochs={args.epochs}",
        f"audit.folds={args.folds}",
        "eval.bootstrap=0",
        "ood.method=null",
    ]
    result = run_train(root, *overrides)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    (summary,) = root.glob("logs/runs/*/audit.json")
    return json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The data audit's time at size, by phase.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args(argv)
    phases = (
        "data checks",
        "scan and hashes",
        "cross-validation",
        "label errors",
        "features",
        "near-duplicates",
        "overview and page",
    )
    print(f"backbone {args.backbone}, {args.folds} folds x {args.epochs} epoch(s), 64 px")
    print("| images | " + " | ".join(phases) + " | total s | label issues | pairs |")
    print("|---:|" + "---:|" * (len(phases) + 3))
    for n in args.sizes:
        scratch = Path(tempfile.mkdtemp(prefix="medclf-audit-bench-"))
        try:
            data = write_folder(scratch / "data", n)
            found = audit(scratch / "root", data, args)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        seconds = found["seconds"]
        cells = [f"{seconds.get(p, float('nan')):.1f}" for p in phases]
        total = sum(seconds.values())
        print(
            f"| {n:,} | " + " | ".join(cells) + f" | {total:.1f} | {found['label_issues']} | "
            f"{found['near_duplicates']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
