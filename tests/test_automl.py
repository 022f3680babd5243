"""medclf-automl: the budget's grammar, the settings it picks from the data (with reasons,
the command line's keys kept), and a smoke run with a 2-minute budget on tiny data that is
killed (SIGKILL) in its cross-validation step and continued by the same command: it ends on
time with its report, an ensemble artifact and the command of each step, without running the
finished search trial again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, class_image

from helpers import FAST, REPO, process_env, run_command, search_runs, seed_store
from medclf.errors import ConfigError
from medclf.pipeline.automl_data import DataSummary, plan
from medclf.pipeline.automl_state import parse_budget

BUDGET = 120.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("600", 600)]
)
def test_budget_grammar(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["2 hours", "h", "0", "-5m"])
def test_a_budget_it_cannot_read_names_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="budget="):
        parse_budget(text)


def test_a_budget_too_short_for_its_steps_is_refused(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from medclf.pipeline.automl import AutoML

    node = {"top_k": 1, "folds": 2, "max_trials": 1}
    cfg = OmegaConf.create(
        {"budget": "45s", "paths": {"output_dir": str(tmp_path)}, "automl": node}
    )
    with pytest.raises(ConfigError, match="at least budget=60s"):
        AutoML(cfg, [], [], [], lambda argv: 0, time.time())
    cfg.budget = "60s"
    assert AutoML(cfg, [], [], [], lambda argv: 0, time.time()).total == 60.0


def _summary(**changes) -> DataSummary:
    values = dict(
        source="folder:cells",
        samples=400,
        splits={"train": 280, "val": 60, "test": 60},
        classes={"a": 300, "b": 60, "c": 40},
        task="multiclass",
        spatial_dims=2,
        channels=1,
        groups=None,
        size=[50, 70],
        bit_depth="16-bit",
    )
    return DataSummary(**{**values, **changes})


def test_choices_follow_the_data_and_keep_the_command_line() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({})
    found = plan(_summary(), cfg, ["datamodule.batch_size=4"])
    picked = {c.key: c for c in found.choices}
    assert found.backbones == ["resnet18", "mobilenetv2", "efficientnetb0"]  # small data
    assert (
        picked["recipe"].value == "small_data" and "280 training images" in picked["recipe"].reason
    )
    assert picked["datamodule.image_size"].value == 56  # 50 px rounded up to a multiple of 8
    assert picked["loss.class_weights"].value == "balanced"  # 300:40 > 3:1
    assert "7.5:1" in picked["loss.class_weights"].reason
    assert not picked["datamodule.batch_size"].applied  # the command line's 4 is kept
    assert "datamodule.batch_size=16" not in found.overrides()
    assert "eval.aggregate" not in picked
    grouped = plan(_summary(groups=35, classes={"a": 200, "b": 200}, size=[512, 512]), cfg, [])
    picked = {c.key: c for c in grouped.choices}
    assert (
        picked["eval.aggregate"].value == "mean" and "35 groups" in picked["eval.aggregate"].reason
    )
    assert picked["datamodule.image_size"].value == 224  # at most the backbones' native size
    assert "loss.class_weights" not in picked
    volumes = plan(_summary(spatial_dims=3, size=[32, 64, 64]), cfg, ["backbone.name=tiny3d"])
    assert volumes.backbones == ["tiny3d"]  # set on the command line: not searched
    assert "datamodule.image_size" not in {c.key for c in volumes.choices}


def _images(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    data = root / "images"
    for label, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(class_image(label, rng)).save(data / name / f"{name}_{i:02d}.png")
    return data


@pytest.mark.slow
@pytest.mark.xdist_group("automl_run")
def test_a_killed_automl_continues_and_ends_on_time_with_its_report(tmp_path: Path) -> None:
    from medclf.cli.automl import main

    data = _images(tmp_path)
    seed_store(tmp_path)
    argv = [
        f"paths.root_dir={tmp_path}",
        "datamodule=folder",
        f"datamodule.data_dir={data}",
        "backbone.name=tiny",
        "imports=[tiny_backbone]",
        *FAST,
        "eval.bootstrap=100",
        "logger.mlflow.save_model=false",
        "budget=2m",
        "automl.max_trials=1",
        "automl.top_k=1",
        "automl.folds=2",
    ]
    start = time.time()
    first = subprocess.Popen(
        [sys.executable, "-m", "medclf.cli.automl", *argv],
        cwd=REPO,
        env=process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:  # kill it once its cross-validation step has an MLflow run
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("logs/automl/*/member_*/fold_0/mlflow_run.json")):
            assert first.poll() is None, "the AutoML ended before it could be killed"
            assert time.monotonic() < deadline, "the cross-validation step never started"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    killed_after = time.time() - start
    (folder,) = tmp_path.glob("logs/automl/*")
    before = json.loads((folder / "automl_state.json").read_text())
    assert before["search_done"] and before["members"][0]["run_id"] is None

    again = time.time()
    second = run_command(lambda: sys.exit(main()), ["medclf-automl", *argv])  # the same command
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    wall = killed_after + time.time() - again

    state = json.loads((folder / "automl_state.json").read_text())
    assert state["sessions"] == 2
    steps = [s["step"] for s in state["steps"]]
    assert steps.count("search trial 1") == 1  # the finished trial was kept, not run again
    assert steps[-1] == "stack" and any(s.startswith("member trial") for s in steps)
    assert state["spent_s"] <= 1.1 * BUDGET and wall <= 1.1 * BUDGET, (state["spent_s"], wall)
    assert state["spent_s"] >= killed_after - 5  # the killed session's time counted
    page = (folder / "automl.html").read_text()
    for section in ("data", "leaderboard", "ensemble", "budget", "reproduce"):
        assert f'id="{section}"' in page
    assert "medclf-train -m hparams_search=optuna" in page and "cv.folds=2" in page
    assert "medclf-ensemble" in page and "median image 24x24 px" in page
    artifact = Path(state["ensemble"]["folder"])
    spec = json.loads((artifact / "ensemble.json").read_text())
    assert spec["models"][0]["run_id"] == state["members"][0]["run_id"]
    runs = search_runs(tmp_path)
    member_dir = str(folder / f"member_{state['members'][0]['trial']}")
    attempts = runs[runs["tags.output_dir"].fillna("").str.startswith(member_dir)]
    assert "KILLED" in set(attempts["status"])  # the killed attempt was closed
    ensemble = runs[runs["run_id"] == state["ensemble"]["run_id"]].iloc[0]
    assert ensemble["status"] == "FINISHED" and ensemble["tags.automl_dir"] == str(folder)
