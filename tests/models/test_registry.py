"""The registries: every registered loss, optimizer and scheduler builds and works, names are
checked with suggestions, and a user's own loss needs only a class and a YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import medclf.models.losses  # noqa: F401  (registers the built-in losses)
import medclf.models.optim  # noqa: F401  (registers the built-in optimizers, schedulers)
from helpers import TINY, run_train, search_runs
from medclf.config import CONF_DIR, group_options
from medclf.errors import ConfigError
from medclf.models.losses import create_loss
from medclf.models.optim import create_optimizer, create_scheduler
from medclf.models.registry import BACKBONES, LOSSES, OPTIMIZERS, SCHEDULERS, Registry


def test_each_registry_is_a_config_group() -> None:
    """A YAML per registered loss, optimizer and scheduler, and the backbone options are the
    backbone registry."""
    for group, registry in (("loss", LOSSES), ("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS)):
        names = {(CONF_DIR / group / f"{option}.yaml").read_text() for option in registry}
        assert all(names), group
        assert set(group_options(group)) == set(registry)
    assert set(group_options("backbone")) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_every_loss_builds_and_is_differentiable(name: str, activation: str) -> None:
    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = create_loss({"name": name, "class_weights": [1.0, 2.0, 1.0]}, activation)(logits, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_steps(name: str) -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = create_optimizer([weight], {"name": name, "lr": 0.1})
    weight.sum().backward()
    optimizer.step()
    assert (weight < 1).all()


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_builds(name: str) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    kwargs = {"cosine": {"T_max": 3}, "plateau": {"monitor": "val/loss"}}.get(name, {})
    built = create_scheduler(optimizer, {"name": name, **kwargs})
    if name == "none":
        assert built is optimizer
    else:
        assert built["optimizer"] is optimizer and "scheduler" in built["lr_scheduler"]


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"loss.name='focl'.*Did you mean: focal"):
        LOSSES["focl"]
    with pytest.raises(ConfigError, match="Did you mean: .*adamw"):
        OPTIMIZERS["adamv"]


def test_a_name_is_registered_once() -> None:
    registry = Registry("thing", "thing.name")
    registry.register("a", int)
    registry.register("a", int)  # the same entry again (a module imported twice): fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", float)


USER_LOSS = '''
import torch

from medclf.models.losses import ClassificationLoss
from medclf.models.registry import LOSSES

CALLS = []


@LOSSES.register("user_dice")
class DiceLoss(ClassificationLoss):
    """Soft Dice loss: 1 - 2 |p q| / (|p| + |q|), summed over classes."""

    def __init__(self, activation="softmax", class_weights=None, smooth=1.0):
        super().__init__(activation, class_weights)
        self.smooth = smooth

    def forward(self, logits, target):
        CALLS.append(len(logits))
        q = logits.softmax(-1) if self.activation == "softmax" else logits.sigmoid()
        p = self._as_distribution(target, logits)
        overlap = (p * q).sum(0)
        return (1 - (2 * overlap + self.smooth) / (p.sum(0) + q.sum(0) + self.smooth)).mean()
'''


def test_a_users_loss_is_a_class_and_a_yaml(tmp_path: Path, monkeypatch) -> None:
    """A loss of the user's own: a registered class in their module, a YAML in their config
    folder, ``imports=[module]``; it trains."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_losses.py").write_text(USER_LOSS)
    (tmp_path / "my_conf" / "loss").mkdir(parents=True)
    (tmp_path / "my_conf" / "loss" / "dice.yaml").write_text(
        "# my Dice loss\nname: user_dice\nsmooth: 0.5\nclass_weights: null\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    try:
        result = run_train(
            tmp_path,
            "--config-dir",
            str(tmp_path / "my_conf"),
            "loss=dice",
            "imports=[my_losses]",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "logger.mlflow.save_model=false",
            *TINY,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert sys.modules["my_losses"].CALLS  # the training step used it
        run = search_runs(tmp_path).iloc[0]
        assert run["params.loss.name"] == "user_dice" and run["params.loss.smooth"] == "0.5"
        assert run["status"] == "FINISHED"
    finally:
        LOSSES.pop("user_dice", None)
        sys.modules.pop("my_losses", None)


def test_an_unknown_import_is_a_config_error(tmp_path: Path) -> None:
    result = run_train(tmp_path, "imports=[no_such_module_here]", "trainer.fast_dev_run=true")
    assert result.returncode == 2
    assert "imports: cannot import 'no_such_module_here'" in result.stderr
