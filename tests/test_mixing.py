"""Mixup and CutMix (augment.mixup, augment.cutmix): mixed images and soft targets against
their formulas, alpha -> 0 equal to no mixing, and the errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.pipeline.mixing import MixupCutmix, mixing
from medclf.pipeline.rules import check_augment

TASKS = {
    "multiclass": ({"head": {"activation": "softmax"}}, torch.tensor([0, 1, 2, 0, 1, 2, 1])),
    "binary": (
        {"class_names": ["neg", "pos"], "task": "binary", "head": {"activation": "sigmoid"}},
        torch.tensor([0, 1, 1, 0, 0, 1, 1]),
    ),
    "multilabel": (
        {"task": "multilabel", "head": {"activation": "sigmoid"}},
        torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1], [1, 1, 1]]),
    ),
}


def module(task: str):
    from helpers import tiny_module

    torch.manual_seed(0)
    return tiny_module(**TASKS[task][0]).eval()  # no dropout: losses comparable


def mixed(callback: MixupCutmix, pl_module, batch: dict, batch_idx: int = 0) -> dict:
    batch = {key: value.clone() for key, value in batch.items()}
    callback.setup(SimpleNamespace(), pl_module, "fit")
    callback.on_train_batch_start(SimpleNamespace(current_epoch=0), pl_module, batch, batch_idx)
    return batch


def a_batch(task: str) -> dict:
    generator = torch.Generator().manual_seed(3)
    return {"image": torch.rand(7, 1, 32, 32, generator=generator), "target": TASKS[task][1]}


@pytest.mark.parametrize("task", list(TASKS))
def test_alpha_near_zero_trains_as_without_mixup(task: str) -> None:
    """Beta(α, α) → {0, 1} as α → 0: each batch is unchanged or its pairs swapped whole, so
    the batch's loss (a mean over samples) equals the unmixed loss."""
    pl_module = module(task)
    batch = a_batch(task)
    plain_loss = pl_module.model_step(batch)[0]
    swapped = 0
    for batch_idx in range(6):
        out = mixed(MixupCutmix(mixup=1e-6), pl_module, batch, batch_idx)
        swapped += not torch.allclose(out["image"], batch["image"])
        assert torch.equal(out["target"], batch["target"])  # the metrics' labels stay
        loss = pl_module.model_step(out)[0]
        assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-5, abs=1e-6)
    assert 0 < swapped < 6  # both outcomes were drawn


@pytest.mark.parametrize("task", list(TASKS))
def test_mixup_blends_images_and_targets_with_one_weight(task: str) -> None:
    pl_module = module(task)
    batch = a_batch(task)
    out = mixed(MixupCutmix(mixup=0.4), pl_module, batch)
    x, target = batch["image"], batch["target"]
    dense = (
        torch.nn.functional.one_hot(target, 3).float()
        if task == "multiclass"
        else target.float().reshape(7, -1)
    )
    pairs = slice(0, 6)  # the odd batch's last sample is left as it is
    lam = float(out["soft_target"][0, 0] - dense[5, 0]) / float(dense[0, 0] - dense[5, 0])
    assert 0 < lam < 1
    expected = lam * x[pairs] + (1 - lam) * x[pairs].flip(0)
    assert torch.allclose(out["image"][pairs], expected, atol=1e-6)
    assert torch.allclose(out["image"][6], x[6])
    soft = lam * dense[pairs] + (1 - lam) * dense[pairs].flip(0)
    assert torch.allclose(out["soft_target"][pairs], soft, atol=1e-6)
    assert torch.equal(out["soft_target"][6], dense[6])
    loss = pl_module.model_step(out)[0]
    assert torch.isfinite(loss)


def test_cutmix_pastes_one_box_and_weighs_targets_by_its_area() -> None:
    pl_module = module("multiclass")
    batch = a_batch("multiclass")
    out = mixed(MixupCutmix(cutmix=1.0), pl_module, batch)
    x = batch["image"][:6]
    inside = (out["image"][:6] != x).any(dim=(0, 1))  # the pixels taken from the mirror
    rows, cols = inside.any(1).nonzero().flatten(), inside.any(0).nonzero().flatten()
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    assert torch.equal(out["image"][:6][..., box[0], box[1]], x.flip(0)[..., box[0], box[1]])
    outside = out["image"][:6].clone()
    outside[..., box[0], box[1]] = x[..., box[0], box[1]]
    assert torch.equal(outside, x)
    lam = 1 - len(rows) * len(cols) / (32 * 32)
    dense = torch.nn.functional.one_hot(batch["target"][:6], 3).float()
    assert torch.allclose(out["soft_target"][:6], lam * dense + (1 - lam) * dense.flip(0))


def test_volumes_take_mixup_but_not_cutmix() -> None:
    from helpers import tiny_module

    volumes = tiny_module(
        backbone={"name": "tiny3d", "pretrained": False}, spatial_dims=3, image_size=None
    )
    batch = {"image": torch.rand(4, 1, 8, 8, 8), "target": torch.tensor([0, 1, 2, 0])}
    out = mixed(MixupCutmix(mixup=0.4), volumes, batch)
    assert out["soft_target"].shape == (4, 3)
    augment = OmegaConf.create({"augment": {"cutmix": 1.0}})
    check_augment(augment, spatial_dims=2)
    with pytest.raises(ConfigError, match="augment.cutmix=1.0: CutMix cuts 2D boxes"):
        check_augment(augment, spatial_dims=volumes.hparams.spatial_dims)


def test_config_keys_and_errors() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default = compose("train")
        chosen = compose("train", ["augment=none", "augment.mixup=0.2", "augment.cutmix=1"])
    assert mixing(default.augment, 0) is None
    callback = mixing(chosen.augment, 0)
    assert (callback.mixup, callback.cutmix, callback.prob) == (0.2, 1.0, 1.0)
    with pytest.raises(ConfigError, match="augment.mixup=-1"):
        check_augment(OmegaConf.create({"augment": {"mixup": -1}}))
    with pytest.raises(ConfigError, match="augment.mix_prob=2"):
        check_augment(OmegaConf.create({"augment": {"mixup": 0.2, "mix_prob": 2}}))
