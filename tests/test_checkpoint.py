"""Checkpoints load with nothing but the file, and bad files are refused with the path."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from helpers import tiny_module
from medclf.errors import ConfigError
from medclf.inference.spec import InputSpec
from medclf.models.checkpoint import load_module
from medclf.models.module import ClassificationModule


def _module() -> ClassificationModule:
    return tiny_module()


def test_checkpoint_describes_and_reproduces_its_model(tmp_path) -> None:
    import lightning as L

    module = _module()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(module)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    assert not loaded.training
    info = InputSpec.of(loaded)
    assert info.class_names == ["a", "b", "c"] and info.channels == 1
    assert info.image_size == 32 and info.task == "multiclass"
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), module.eval()(x))


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_module(tmp_path / "nope.ckpt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": _Evil()}, f)
    with pytest.raises(ConfigError, match="evil.ckpt"):
        load_module(path)
