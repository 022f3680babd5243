"""``medclf-report [EXPERIMENT]`` (``make report``): compare an experiment's runs in the
terminal, best test F1 first (medclf.tracking.runs)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default="medclf")
    parser.add_argument("--tracking-uri", default=None, help="default: ./mlruns/mlflow.db")
    parser.add_argument("--sweep-id", default=None, help="only the runs of this sweep")
    parser.add_argument("--metric", default="test/f1", help="sort by this metric")
    args = parser.parse_args(argv)
    from medclf.tracking.runs import print_table, runs_table  # mlflow: not for --help
    from medclf.tracking.server import default_root, default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(default_root())
    table = runs_table(uri, args.experiment, args.sweep_id, args.metric)
    if table.empty:
        print(f"no runs in experiment {args.experiment!r} at {uri}")
        return 0
    print_table(table, f"{args.experiment}: {len(table)} runs, best {args.metric} first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
