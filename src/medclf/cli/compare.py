"""``medclf-compare RUN [RUN ...]``: compare runs tested on the same test split, each with a
baseline, with paired bootstrap intervals, DeLong's and McNemar's tests and Holm's
correction; writes compare.html and logs the comparison as an MLflow run of its own."""

from __future__ import annotations

import argparse
import sys


def parser(prog: str = "medclf-compare") -> argparse.ArgumentParser:
    text = __doc__.split("\n\n")[0].replace("\n", " ").strip()
    found = argparse.ArgumentParser(prog=prog, description=text)
    add_arguments(found)
    return found


def add_arguments(found: argparse.ArgumentParser, runs_required: bool = False) -> None:
    found.add_argument(
        "runs",
        nargs="*" if not runs_required else "+",
        help="MLflow run ids or run names (a name: its newest finished run) to compare",
    )
    found.add_argument("--sweep-id", default=None, help="compare the finished runs of a sweep")
    found.add_argument(
        "--experiment", default="medclf", help="the experiment of the sweep and of run names"
    )
    found.add_argument("--baseline", default=None, help="run id or name (default: the best)")
    found.add_argument("--tracking-uri", default=None, help="default: ./mlruns/mlflow.db")
    found.add_argument("--output", default=None, help="folder for compare.html (default: logs/)")
    found.add_argument("--bootstrap", type=int, default=1000, help="paired resamples")
    found.add_argument("--seed", type=int, default=0, help="seeds the resamples")


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run a parsed comparison command (also ``medclf-report --compare``)."""
    from datetime import datetime
    from pathlib import Path

    from medclf.errors import MedclfError
    from medclf.pipeline.compare import compare_runs
    from medclf.tracking.names import COMPARISON_PAGE
    from medclf.tracking.runs import run_ids, sweep_run_ids
    from medclf.tracking.server import default_root, default_tracking_uri

    root = default_root()
    uri = args.tracking_uri or default_tracking_uri(root)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    output = Path(args.output) if args.output else Path(root) / "logs" / "compare" / stamp
    try:
        ids = run_ids(uri, args.experiment, list(args.runs))
        if args.sweep_id:
            ids += sweep_run_ids(uri, args.experiment, args.sweep_id)
        compare_runs(
            ids,
            uri,
            output,
            args.baseline,
            args.bootstrap,
            args.seed,
            " ".join(["medclf-compare", *argv]),
        )
    except MedclfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"comparison: {output / COMPARISON_PAGE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import logging

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(parser().parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
