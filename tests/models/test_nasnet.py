"""Tests for the NASNet-A Mobile timm registration in ``medclf.models.nasnet``."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import is_model, model_entrypoint

from medclf.models import nasnet

MODEL_NAME = nasnet.MODEL_NAME
KERAS_TRAINABLE_PARAMS = 5_289_978
MIN_INPUT_SIZE = 3


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """One 1000-class model in eval mode, shared by the read-only tests to keep them fast."""
    torch.manual_seed(0)
    return timm.create_model(MODEL_NAME, pretrained=False).eval()


def test_registered_with_timm() -> None:
    assert is_model(MODEL_NAME)
    assert MODEL_NAME in timm.list_models("nasnet*")
    assert model_entrypoint(MODEL_NAME) is nasnet.nasnetamobile


def test_param_count_matches_nasnet_a_mobile(model: nn.Module) -> None:
    n_params = _num_params(model)
    print(f"nasnetamobile params (1000 classes): {n_params:,}")
    assert 5_200_000 <= n_params <= 5_400_000
    assert n_params == KERAS_TRAINABLE_PARAMS
    n_bn_stats = sum(b.numel() for name, b in model.named_buffers() if "running_" in name)
    assert n_params + n_bn_stats == 5_326_716


def test_architecture_attributes(model: nn.Module) -> None:
    assert model.num_features == 1056
    assert model.num_classes == 1000
    assert model.conv0.conv.out_channels == 32
    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.get_classifier().in_features == 1056
    assert model.pretrained_cfg["first_conv"] == "conv0.conv"
    assert model.pretrained_cfg["classifier"] == "last_linear"
    assert model.pretrained_cfg["tag"] == "untrained"


def test_forward_logits(model: nn.Module) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()


def test_forward_features_and_head(model: nn.Module) -> None:
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        full = model(x)
    assert feats.shape == (1, 1056, 7, 7)
    assert (feats >= 0).all()
    assert pooled.shape == (1, 1056)
    torch.testing.assert_close(logits, full)


def test_forward_intermediates_match_feature_info(model: nn.Module) -> None:
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(torch.randn(1, 3, 224, 224))
    assert final.shape == (1, 1056, 7, 7)
    assert [t.shape[1] for t in intermediates] == [info["num_chs"] for info in model.feature_info]
    assert [t.shape[1] for t in intermediates] == [32, 44, 264, 528, 1056]
    assert [t.shape[-1] for t in intermediates] == [111, 56, 28, 14, 7]
    torch.testing.assert_close(intermediates[-1], final)


def test_features_only() -> None:
    backbone = timm.create_model(MODEL_NAME, features_only=True, out_indices=(2, 3, 4)).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    assert backbone.feature_info.channels() == [264, 528, 1056]
    assert [tuple(f.shape[1:]) for f in feats] == [(264, 8, 8), (528, 4, 4), (1056, 2, 2)]


@pytest.mark.parametrize("size", [MIN_INPUT_SIZE, 32])
def test_headless_single_channel_small_input(size: int) -> None:
    model = timm.create_model(MODEL_NAME, num_classes=0, in_chans=1)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model.conv0.conv.in_channels == 1
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 1056)
    out.sum().backward()
    assert model.conv0.conv.weight.grad is not None


def test_input_below_minimum_size_fails() -> None:
    model = timm.create_model(MODEL_NAME, num_classes=0, in_chans=1).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(torch.randn(1, 1, MIN_INPUT_SIZE - 1, MIN_INPUT_SIZE - 1))


def test_head_options_and_reset_classifier() -> None:
    model = timm.create_model(MODEL_NAME, num_classes=5, drop_rate=0.25, global_pool="max")
    assert model.head_drop.p == 0.25
    assert model.global_pool.pool_type == "max"
    assert model.get_classifier().out_features == 5
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3
    assert model.global_pool.pool_type == "max"
    model.reset_classifier(0, global_pool="avg")
    assert isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1056)


def test_pretrained_overlay_loads_local_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model(MODEL_NAME, num_classes=1000, in_chans=3)
    state_dict = source.state_dict()
    weights = tmp_path / "nasnetamobile.pth"
    torch.save(state_dict, weights)

    model = timm.create_model(
        MODEL_NAME,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(weights)),
        num_classes=0,
        in_chans=1,
    )

    assert isinstance(model.get_classifier(), nn.Identity)
    expected_stem = state_dict["conv0.conv.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.conv0.conv.weight.detach(), expected_stem)
    deep = "cell_15.comb_iter_4_left.separable_2.pointwise_conv2d.weight"
    torch.testing.assert_close(model.state_dict()[deep], state_dict[deep], rtol=0, atol=0)
    stats = "reduction_cell_1.conv_1x1.bn.running_var"
    torch.testing.assert_close(model.state_dict()[stats], state_dict[stats], rtol=0, atol=0)


def test_second_import_does_not_reregister(monkeypatch: pytest.MonkeyPatch) -> None:
    alias = "medclf_models_nasnet_second_copy"
    spec = importlib.util.spec_from_file_location(alias, nasnet.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, alias, module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(module)
    assert model_entrypoint(MODEL_NAME) is nasnet.nasnetamobile
    assert importlib.import_module("medclf.models.nasnet") is nasnet
    assert timm.create_model(MODEL_NAME, num_classes=0).num_features == 1056
