"""Issue 29's benchmark: the single best model, a stacked ensemble of the same models and a
composite ensemble (k folds x the same architectures, stacked on out-of-fold predictions),
test metrics as mean ± sample standard deviation over seeds, and the wall time of each.

- single best: each architecture trained once (``medclf-train``); the one with the best
  ``val/f1`` is tested. Wall time: all of those trainings (what picking the best costs).
- stacked: the same runs stacked (``medclf-ensemble runs=[...]``; the metalearner learns from
  their validation predictions). Wall time: the trainings and the stacking.
- composite: each architecture as a k-fold cross-validation run, stacked on their
  out-of-fold predictions (``medclf-ensemble members=[...] folds=k``). Wall time: all.

The set is benchmarks/small_data.py's ``blobs2d`` (160/40/40 generated 32 px images, one or
two blobs in noise; the splits are fixed, the seeds vary the training)::

    python benchmarks/ensembles.py --seeds 0 1 2 --archs resnet18 mobilenetv2 --folds 3

Runs in this process into one MLflow store under ``--root``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

METRICS = ("test/accuracy", "test/f1", "test/auroc")


def _train(argv: list[str], timings: Path) -> float:
    """``medclf-train ARGV`` in this process (output kept in its run directory); seconds. A
    run already timed in ``timings`` (an interrupted benchmark started again) is not run."""
    import contextlib
    import io
    import json

    from medclf.cli.steps import train_in_process

    done = json.loads(timings.read_text()) if timings.is_file() else {}
    key = " ".join(argv)
    if key in done:
        return done[key]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = train_in_process(argv)
    if code:
        raise SystemExit(f"medclf-train {' '.join(argv)}: exit {code}")
    done[key] = time.perf_counter() - start
    timings.write_text(json.dumps(done, indent=1))
    return done[key]


def _stack(root: Path, ids: list[str], out: Path, metalearner: str) -> tuple[dict, float]:
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.pipeline.ensemble import build_ensemble

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "ensemble",
            [
                f"paths.root_dir={root}",
                "logger.mlflow.experiment_name=ensembles",
                "logger.mlflow.save_model=false",
                "eval.bootstrap=0",
                f"metalearner={metalearner}",
                f"output_dir={out}",
            ],
        )
    start = time.perf_counter()
    built = build_ensemble(cfg, ids, out, "benchmark")
    return {m: built.metrics[m] for m in METRICS}, time.perf_counter() - start


def _run(root: Path, output_dir: Path) -> tuple[str, dict[str, float], float]:
    """(run id, test metrics, best val/f1: NaN for a CV run) of the run in ``output_dir``."""
    import mlflow

    from medclf.tracking.runs import run_by_output_dir

    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    run_id = run_by_output_dir(uri, "ensembles", str(output_dir))
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    history = [m.value for m in client.get_metric_history(run_id, "val/f1")]
    best = max(history) if history else float("nan")  # a CV parent logs <metric>_mean
    return run_id, {m: run.data.metrics.get(m, float("nan")) for m in METRICS}, best


def main(argv: list[str] | None = None) -> None:
    from small_data import blobs2d

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenetv2"])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--metalearner", default="logistic")
    parser.add_argument("--root", type=Path, default=Path("results_ensembles"))
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every training")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = blobs2d(root / "blobs2d.npz")
    data = ["datamodule=npz", f"datamodule.path={path}", "datamodule.class_names=[one,two]"]
    common = [
        f"paths.root_dir={root}",
        *data,
        "logger.mlflow.experiment_name=ensembles",
        "logger.mlflow.save_model=false",
        "eval.bootstrap=0",
        *args.extra,
    ]
    rows = []
    for seed in args.seeds:
        singles, seconds, best = [], 0.0, None
        for arch in args.archs:
            out = root / f"seed{seed}" / f"single_{arch}"
            argv = [*common, f"seed={seed}", f"backbone={arch}", f"hydra.run.dir={out}"]
            seconds += _train(argv, root / "timings.json")
            run_id, metrics, val = _run(root, out)
            singles.append(run_id)
            if best is None or val > best[1]:
                best = (arch, val, metrics)
        rows.append({"seed": seed, "model": f"single best ({best[0]})", "s": seconds, **best[2]})
        metrics, stacking = _stack(
            root, singles, root / f"seed{seed}" / "stacked", args.metalearner
        )
        rows.append({"seed": seed, "model": "stacked", "s": seconds + stacking, **metrics})
        members, seconds = [], 0.0
        for arch in args.archs:
            out = root / f"seed{seed}" / f"cv_{arch}"
            argv = [*common, f"seed={seed}", f"backbone={arch}", f"cv.folds={args.folds}"]
            seconds += _train([*argv, f"hydra.run.dir={out}"], root / "timings.json")
            members.append(_run(root, out)[0])
        metrics, stacking = _stack(
            root, members, root / f"seed{seed}" / "composite", args.metalearner
        )
        rows.append({"seed": seed, "model": "composite", "s": seconds + stacking, **metrics})
        for row in rows[-3:]:
            shown = " ".join(f"{m.split('/')[1]} {row[m]:.3f}" for m in METRICS)
            print(f"seed {seed} {row['model']}: {shown} ({row['s']:.0f} s)", flush=True)
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(root / "results.csv", index=False)
    frame["kind"] = frame["model"].str.split(" [(]", regex=True).str[0]
    print(
        f"\nblobs2d, {', '.join(args.archs)}; composite {args.folds} folds; metalearner "
        f"{args.metalearner}; {len(args.seeds)} seeds (mean ± SD)\n"
    )
    print("| model | accuracy | macro F1 | AUROC | wall time (s) |")
    print("|---|---:|---:|---:|---:|")
    for kind, group in frame.groupby("kind", sort=False):
        cells = []
        for metric in (*METRICS, "s"):
            values = list(group[metric])
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            digits = 0 if metric == "s" else 3
            cells.append(f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}")
        print(f"| {kind} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
