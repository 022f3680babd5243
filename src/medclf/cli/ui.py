"""``medclf-ui`` (``make ui``): the MLflow dashboard over the default store on 127.0.0.1,
opened on the experiment's runs table (medclf.tracking.server)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--root", type=Path, default=None, help="project root (holds mlruns/)")
    parser.add_argument("--tracking-uri", default=None, help="default: the root's SQLite store")
    parser.add_argument("--experiment", default="medclf", help="experiment to link to")
    args = parser.parse_args(argv)
    from medclf.tracking.server import default_root, serve  # mlflow: not for --help

    return serve(args.root or default_root(), args.tracking_uri, args.experiment, args.port)


if __name__ == "__main__":
    raise SystemExit(main())
