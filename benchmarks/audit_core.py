"""The near-duplicate search at scale: seconds to hash and to find the pairs of N distinct
generated 64 px greyscale images (tests/audit/audit_synthetic.py), held in memory as a
SampleTable's ``arrays`` are, so no file is decoded.

- scan: ``medclf.audit.images.scan_images`` (per image: stats, histogram, the ten pHashes of
  the full view and the 3 × 3 crop views), on the machine's cores;
- pairs: ``medclf.audit.hashing.hamming_pairs`` at the default MAX_HAMMING (6 bits);
- candidates: pairs found among these distinct images (the hash's false candidates, which
  the feature confirmation has to reject; without features they are reported as pairs);
- peak RSS of the process so far.

    python benchmarks/audit_core.py --sizes 1000 10000 50000 [--no-crop-views]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audit"))

from audit_synthetic import structured_images  # noqa: E402

from medclf.audit.duplicates import MAX_HAMMING  # noqa: E402
from medclf.audit.hashing import hamming_pairs  # noqa: E402
from medclf.audit.images import scan_images  # noqa: E402


def measure(n: int, crop_views: bool, seed: int = 0) -> dict[str, float]:
    arrays = np.stack(structured_images(n, seed=seed, low=64, high=64))[..., None]
    start = time.perf_counter()
    scan = scan_images(range(n), arrays, crop_views=crop_views)
    hashed = time.perf_counter()
    a, _, _ = hamming_pairs(scan.hashes, MAX_HAMMING)
    searched = time.perf_counter()
    return {
        "n": n,
        "scan": hashed - start,
        "pairs": searched - hashed,
        "candidates": len(a),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--no-crop-views", action="store_true", help="one hash per image")
    args = parser.parse_args(argv)
    views = "full view only" if args.no_crop_views else "full + 9 crop views"
    print(f"| images | scan s | pair search s | total s | candidates | peak RSS MiB | ({views})")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        row = measure(n, crop_views=not args.no_crop_views)
        total = row["scan"] + row["pairs"]
        print(
            f"| {n:,} | {row['scan']:.1f} | {row['pairs']:.1f} | {total:.1f} | "
            f"{row['candidates']} | {row['rss_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
