"""The pre-flight (medclf.pipeline.plan): every config key checked in one place, the config
checked once per run (a k-fold run included), the platform's callbacks visible in the config
and each switchable, the backbone's smallest input read from the network."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import FAST, TINY, preflight, run_config, run_train
from medclf.config import CONF_DIR
from medclf.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "medclf"
# a check's message begins with the key it checks: "datamodule.batch_size=0 must be ..."
LEADING_KEY = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?:=|:| )")


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _config_keys() -> set[str]:
    """Every key of the composed training config (dotted), and its group names."""
    keys: set[str] = set()

    def walk(node, prefix: str) -> None:
        for key in node:
            name = f"{prefix}{key}"
            keys.add(name)
            if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
                continue
            if OmegaConf.is_dict(node):
                child = node[key]
                if OmegaConf.is_dict(child):
                    walk(child, f"{name}.")

    for overrides in ((), ("datamodule=csv",), ("datamodule=folder",), ("datamodule=npz",)):
        walk(_compose(*overrides), "")
    return keys


def _message(call: ast.Call) -> str:
    """The literal text a ConfigError call's message starts with (f-string parts joined,
    an expression standing for its value)."""
    if not call.args:
        return ""
    node = call.args[0]
    parts = node.values if isinstance(node, ast.JoinedStr) else [node]
    text = ""
    for part in parts:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            text += part.value
        else:
            text += "\0"  # a value: ends the key at the start
    if isinstance(node, ast.BinOp):  # "a" + "b"
        text = "".join(c.value for c in ast.walk(node) if isinstance(c, ast.Constant))
    return text


# other commands (predict, export, label) have keys of the same names (ckpt_path, threshold)
OTHER_COMMANDS = ("inference", "labelling")
# the one loader of checkpoint files, for every command: is ckpt_path a safe medclf checkpoint
SHARED = {"ckpt_path": "models/checkpoint.py"}


def config_checks() -> dict[str, set[str]]:
    """Each training config key whose value a ``ConfigError`` in src/medclf names first → the
    modules that raise it (other commands' modules left out)."""
    keys = _config_keys()
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in OTHER_COMMANDS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ConfigError"):
                continue
            match = LEADING_KEY.match(_message(node))
            if match and match.group(1) in keys:
                found[match.group(1)].add(str(path.relative_to(SRC)))
    return found


def test_every_config_key_is_checked_in_one_place() -> None:
    """Every ConfigError naming a key of the training config comes from one module per key
    (pipeline/rules.py holds the pre-flight's; the registries, optimizer arguments, backbone
    weights, thresholds and resume own theirs)."""
    checks = config_checks()
    twice = {
        key: sorted(where) for key, where in checks.items() if len(where - {SHARED.get(key)}) > 1
    }
    assert not twice, f"keys checked in several places: {twice}"
    assert len(checks) >= 35, sorted(checks)  # the scan does find the checks
    rules = {key for key, where in checks.items() if where == {"pipeline/rules.py"}}
    assert {"datamodule.batch_size", "datamodule.image_size", "head.activation"} <= rules


def test_the_scan_sees_a_second_place() -> None:
    """The scan above would notice a key checked twice (a check added to the datamodule)."""
    source = 'def f(x):\n    raise ConfigError(f"datamodule.batch_size={x} must be positive")\n'
    call = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call))
    assert LEADING_KEY.match(_message(call)).group(1) == "datamodule.batch_size"
    assert "datamodule.batch_size" in config_checks()


def test_a_k_fold_run_checks_the_config_once(tmp_path: Path, monkeypatch) -> None:
    """Two folds: every config rule and every data check ran once, not once per fold."""
    from medclf.pipeline import rules
    from medclf.pipeline.task import train_task

    calls: dict[str, int] = defaultdict(int)

    def counted(function):
        def wrapper(*args, **kwargs):
            calls[function.__name__] += 1
            return function(*args, **kwargs)

        wrapper.__name__ = function.__name__
        return wrapper

    monkeypatch.setattr(rules, "RULES", tuple(counted(rule) for rule in rules.RULES))
    for name in ("check_model_fits_data", "check_augment", "check_eval"):
        monkeypatch.setattr(rules, name, counted(getattr(rules, name)))
    cfg = run_config(tmp_path, [*FAST, *TINY, "cv.folds=2", "eval.bootstrap=0"], "cv-checks")
    train_task(cfg)
    assert len(list((tmp_path / "run").glob("fold_*/checkpoints/*.ckpt"))) >= 2
    assert {name: calls[name.__name__] for name in rules.RULES} == {r: 1 for r in rules.RULES}
    assert len(calls) == len(rules.RULES) + 3 and set(calls.values()) == {1}, dict(calls)


PLATFORM = list(_compose().callbacks)[5:]  # after the group's own five


def test_platform_callbacks_are_in_the_config_and_each_can_be_turned_off() -> None:
    """Every callback a run gets is in the composed config; ``callbacks.NAME=null`` removes
    exactly that one, ``callbacks=none`` keeps the platform's."""
    from medclf.pipeline.build import instantiate_callbacks

    assert PLATFORM == [
        "resume_state",
        "interrupt_checkpoint",
        "test_report",
        "training_curves",
        "config_fingerprint",
        "batch_mixing",
        "weight_averaging",
        "bn_recalibration",
        "best_value",
        "trial_pruning",
        "background_checkpoints",
        "data_wait",
    ]
    assert list(_compose("callbacks=none").callbacks) == PLATFORM
    values = {"config_digest": "0" * 64, "command": "medclf-train"}
    on = ("augment.mixup=0.2", "model.ema_decay=0.9", "paths.output_dir=/tmp/x")
    every = instantiate_callbacks(_compose(*on).callbacks, values)
    kinds = [type(c).__name__ for c in every]
    assert len(kinds) == 5 + len(PLATFORM) - 1  # no search: no trial pruning
    for name in [n for n in PLATFORM if n != "trial_pruning"]:
        cfg = _compose(*on, f"callbacks.{name}=null")
        left = [type(c).__name__ for c in instantiate_callbacks(cfg.callbacks, values)]
        assert len(left) == len(kinds) - 1, name
    replaced = _compose(*on, "callbacks.best_value._target_=medclf.pipeline.best.BestValue")
    replacing = instantiate_callbacks(replaced.callbacks, values)
    assert any(type(c).__name__ == "BestValue" for c in replacing)


def test_a_run_with_every_platform_callback_off_still_trains(tmp_path: Path) -> None:
    off = [f"callbacks.{name}=null" for name in PLATFORM]
    result = run_train(tmp_path, *FAST, *TINY, "logger=none", *off)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/accuracy" in result.stdout + result.stderr
    assert not list(tmp_path.glob("logs/runs/*/report.html"))  # no test report: off


def test_resnet18_trains_at_28_px(tmp_path: Path) -> None:
    """MedMNIST's native 28 px: resnet18 forwards it (the old table said 32)."""
    result = run_train(
        tmp_path, *FAST, "backbone=resnet18", "datamodule.image_size=28", "logger=none"
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_size_that_does_not_forward_names_the_smallest_that_does() -> None:
    """densenet121's smallest input is 29 px (read from the network, not a table of 32)."""
    with pytest.raises(ConfigError, match=r"densenet121, which needs inputs of at least 29 px"):
        preflight("backbone=densenet121", "datamodule.image_size=28")
    preflight("backbone=densenet121", "datamodule.image_size=29")
