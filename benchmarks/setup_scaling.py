"""Data set-up time as the data grows: ``FolderDataModule.setup()`` (read the table, split,
the leakage check, the image check) on generated folders of 64 px PNGs, without the check
cache (every run decodes every image), then with it: first run, second run.

    python benchmarks/setup_scaling.py [--sizes 1000 10000 50000]

Prints a Markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def make_folder(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = ("normal", "pneumonia")[i % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        Image.fromarray(pixels).save(root / label / f"img{i:06d}.png", compress_level=1)
    return root


def set_up(folder: Path, cache: Path | None) -> float:
    from medclf.data.datamodule import FolderDataModule

    start = time.perf_counter()
    FolderDataModule(data_dir=folder, image_size=64, check_cache=cache, duplicates="ignore").setup()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # imports and first-call costs, not timed
        set_up(make_folder(Path(tmp), 100), None)
    print(f"{os.cpu_count()} cores; seconds for FolderDataModule.setup()")
    print("| images | no cache | cache: first run | cache: second run | second run |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = make_folder(Path(tmp) / "data", n)
            cache = Path(tmp) / "check.sqlite"
            plain = set_up(folder, None)
            first = set_up(folder, cache)
            second = set_up(folder, cache)
            print(
                f"| {n:,} | {plain:.2f} | {first:.2f} | {second:.2f} | "
                f"{first / second:.0f}× faster |"
            )


if __name__ == "__main__":
    main()
