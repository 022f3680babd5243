"""Security: ``_target_`` strings come only from conf/ and the command line. Text in a data
file (CSV labels and metadata) or in a checkpoint's metadata is data: never instantiated,
imported, resolved as an interpolation or evaluated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from helpers import FAST, TINY, run_config, tiny_module, write_checkpoint
from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.models.checkpoint import load_module

CANARY = "tests_canary_module.boom"
HOSTILE = ["{'_target_': 'os.system', 'command': 'touch pwned'}", "${oc.env:HOME}", CANARY]


def _conf_targets() -> set[str]:
    text = "\n".join(p.read_text() for p in CONF_DIR.rglob("*.yaml"))
    return set(re.findall(r"_target_:\s*([\w.]+)", text))


def _hostile_csv(image_csv: Path) -> Path:
    """The fixture's table with hostile strings as class names and metadata values."""
    lines = image_csv.read_text().splitlines()
    rows = ["file,diagnosis,note"]
    for i, line in enumerate(lines[1:]):
        file, label = line.split(",")
        label = {"benign": HOSTILE[1], "malignant": CANARY}.get(label, label)
        rows.append(f'{file},{label},"{HOSTILE[i % 3]}"')
    path = image_csv.parent / "hostile.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_training_instantiates_only_targets_from_conf(
    tmp_path: Path, image_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hydra._internal.instantiate._instantiate2 as instantiate2

    from medclf.pipeline.train import run

    located: list[str] = []
    real_locate = instantiate2._locate

    def spying_locate(path: str):
        located.append(path)
        return real_locate(path)

    monkeypatch.setattr(instantiate2, "_locate", spying_locate)
    csv = _hostile_csv(image_csv)
    overrides = [
        "datamodule=csv",
        f"datamodule.csv_path={csv}",
        "datamodule.image_column=file",
        "datamodule.label_column=diagnosis",
        "datamodule.meta_columns=[note]",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "logger.mlflow.save_model=false",
        *FAST,
        *TINY,
    ]
    cfg = run_config(tmp_path, overrides, "hostile")
    results: dict = {}
    run(cfg, results)

    assert located and set(located) <= _conf_targets(), set(located) - _conf_targets()
    assert not (Path.cwd() / "pwned").exists()
    module = load_module(results["checkpoint"])
    assert set(module.class_names) == {HOSTILE[1], CANARY, "normal"}  # kept as text
    notes = {c["name"]: c for c in module.hparams["metadata"]}["note"]["categories"]
    assert sorted(notes) == sorted(HOSTILE)


def test_checkpoint_metadata_is_never_instantiated(tmp_path: Path) -> None:
    """A checkpoint asking for an instantiator, or carrying _target_ and interpolations in
    its hyperparameters: refused, or loaded as plain text; nothing named is imported."""
    plain = write_checkpoint(tiny_module([HOSTILE[1], "b"]), tmp_path / "plain.ckpt")
    checkpoint = torch.load(plain, weights_only=True)
    loaded = load_module(plain)
    assert loaded.class_names == [HOSTILE[1], "b"]

    for key, node in (("_instantiator", None), ("_target_", "backbone")):
        hostile = {**checkpoint, "hyper_parameters": dict(checkpoint["hyper_parameters"])}
        hparams = hostile["hyper_parameters"]
        if node is None:
            hparams[key] = CANARY
        else:
            hparams[node] = {**hparams[node], key: CANARY}
        path = tmp_path / f"{key}.ckpt"
        torch.save(hostile, path)
        with pytest.raises(ConfigError, match="not a medclf checkpoint that loads safely"):
            load_module(path)
    import sys

    assert "tests_canary_module" not in sys.modules
