"""``medclf-report [EXPERIMENT]`` (``make report``): the runs of an experiment in the
terminal, best test F1 first (medclf.tracking.runs); with ``--compare RUN RUN ...`` (or a
sweep's runs, ``--compare --sweep-id ID``) a statistical comparison instead, as
``medclf-compare`` makes it."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--compare" in argv:
        import logging

        from medclf.cli.compare import parser, run

        rest = [a for a in argv if a != "--compare"]
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return run(parser("medclf-report --compare").parse_args(rest), rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("experiment", nargs="?", default="medclf")
    parser.add_argument("--tracking-uri", default=None, help="default: ./mlruns/mlflow.db")
    parser.add_argument("--sweep-id", default=None, help="only the runs of this sweep")
    parser.add_argument("--metric", default="test/f1", help="sort by this metric")
    parser.add_argument(
        "--compare", action="store_true", help="compare runs statistically (medclf-compare)"
    )
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
