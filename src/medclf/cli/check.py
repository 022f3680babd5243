"""``medclf-check-data [overrides]``: ``medclf-train check_only=true`` — every check training
runs before its first step, all problems reported at once, nothing trained
(medclf.pipeline.checks)."""

from __future__ import annotations

import sys

from medclf.cli.train import main as train_main


def main() -> None:
    sys.argv.append("check_only=true")
    train_main()


if __name__ == "__main__":
    main()
