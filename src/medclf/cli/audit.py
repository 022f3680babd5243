"""``medclf-audit [overrides]``: ``medclf-train audit_only=true`` — the data audit
(medclf.pipeline.audit): near-duplicates within and across splits, likely label errors from
out-of-fold probabilities, and an overview, in audit.html and an MLflow run."""

from __future__ import annotations

import sys

from medclf.cli.train import main as train_main


def main() -> None:
    sys.argv.append("audit_only=true")
    train_main()


if __name__ == "__main__":
    main()
