"""How the labelling server's work grows with the folder: opening it (finding the images,
reading labels.csv), the page's state, one change (the whole file rewritten atomically
under the lock) and drawing an image, for generated folders of 1k and 10k PNGs (add 50000
with --sizes). Prints a Markdown table; nothing is asserted.

    python benchmarks/labelling.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _folder(root: Path, n: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    tile = [Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)) for _ in range(8)]
    for i in range(n):
        sub = root / f"batch{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        tile[i % 8].save(sub / f"img{i:06d}.png", compress_level=1)
    return root


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n: int) -> dict[str, float]:
    from medclf.labelling.app import open_session

    with tempfile.TemporaryDirectory() as tmp:
        root = _folder(Path(tmp) / "images", n)
        session = open_session(root, ["normal", "abnormal"])
        images = session.store.images
        for k, image in enumerate(images[: n // 2]):  # half labelled, as in mid-work
            session.store.labels[image] = (("normal", "abnormal")[k % 2],)
        session.store._write()
        opened = _best(lambda: open_session(root, ["normal", "abnormal"]), 1)
        state = _best(lambda: json.dumps(session.state()))
        size = len(json.dumps(session.state()))
        change = _best(lambda: session.change("label", {"image": images[-1], "labels": ["normal"]}))
        undo = _best(lambda: session.change("undo", {}), 1)
        draw = _best(lambda: session.reader.png(root / images[7]))
        return {
            "images": n,
            "open (s)": opened,
            "state (ms)": 1000 * state,
            "state (MB)": size / 1e6,
            "one change (ms)": 1000 * change,
            "undo (ms)": 1000 * undo,
            "draw 64 px PNG (ms)": 1000 * draw,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args(argv)
    rows = [measure(n) for n in args.sizes]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = [f"{row[k]:.0f}" if k == "images" else f"{row[k]:.2f}" for k in keys]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
