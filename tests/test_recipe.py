"""recipe=small_data: the settings it sets reach a run (what they gain: docs/results.md,
benchmarks/small_data.py)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from helpers import FAST, TINY, run_train, search_runs
from medclf.config import CONF_DIR


def test_the_preset_holds_only_deltas_and_can_be_overridden() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default = compose("train")
        recipe = compose("train", ["recipe=small_data", "datamodule.batch_size=8"])
    assert recipe.datamodule.batch_size == 8  # a later override wins
    changed = {
        f"{group}.{key}"
        for group in ("datamodule", "model", "loss", "scheduler", "augment", "optimizer")
        for key in recipe[group]
        if recipe[group][key] != default[group].get(key)
    }
    assert changed == {
        "datamodule.batch_size",
        "model.ema_decay",
        "loss.label_smoothing",
        "scheduler.warmup_epochs",
    }


def test_a_run_with_the_preset_records_its_settings(tmp_path: Path) -> None:
    result = run_train(
        tmp_path, *FAST, *TINY, "recipe=small_data", "logger.mlflow.save_model=false"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "an exponential moving average of the weights (decay 0.999" in result.stdout
    run = search_runs(tmp_path).iloc[0]
    assert run["params.loss.label_smoothing"] == "0.1"
    assert run["params.scheduler.warmup_epochs"] == "1"
    assert run["params.model.ema_decay"] == "0.999"
    assert run["params.datamodule.batch_size"] == "16"
