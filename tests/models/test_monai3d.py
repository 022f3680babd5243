"""Tests for the MONAI 3D pre-pooling feature extractors in ``medclf.models.monai3d``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
from monai.networks import nets

from medclf.errors import ConfigError
from medclf.models.monai3d import MIN_SIZE, MONAI_BACKBONES, create_monai_backbone

EXPECTED_NAMES = {
    *(f"3d_densenet{d}" for d in (121, 169, 201)),
    *(f"3d_resnet{d}" for d in (18, 34, 50, 101, 152)),
    *(f"3d_seresnet{d}" for d in (50, 101, 152)),
    "3d_seresnext50",
    "3d_seresnext101",
    "3d_senet154",
    *(f"3d_efficientnetb{i}" for i in range(8)),
}


def _features(model: nn.Module, side: int, in_chans: int = 1) -> torch.Tensor:
    """Forward a seeded (2, in_chans, side, side, side) volume without gradients."""
    x = torch.randn(2, in_chans, side, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)


def test_names_and_min_sizes_cover_the_same_backbones() -> None:
    assert set(MONAI_BACKBONES) == EXPECTED_NAMES
    assert set(MIN_SIZE) == EXPECTED_NAMES
    assert all(1 <= side <= 32 for side in MIN_SIZE.values())


@pytest.mark.parametrize("name", sorted(MONAI_BACKBONES))
def test_forward_gives_5d_map_down_to_min_size(name: str) -> None:
    model, num_features = create_monai_backbone(name, in_chans=1)
    model.eval()
    fmap = _features(model, 32)
    assert fmap.ndim == 5
    assert fmap.shape[:2] == (2, num_features)
    assert torch.isfinite(fmap).all()

    side = MIN_SIZE[name]
    assert _features(model, side).shape[:2] == (2, num_features)
    if side > 1:
        with pytest.raises(RuntimeError):
            _features(model, side - 1)


@pytest.mark.parametrize(
    "name", ["3d_densenet121", "3d_resnet18", "3d_seresnext50", "3d_efficientnetb0"]
)
def test_three_input_channels(name: str) -> None:
    model, num_features = create_monai_backbone(name, in_chans=3)
    fmap = _features(model.eval(), 32, in_chans=3)
    assert fmap.ndim == 5
    assert fmap.shape[:2] == (2, num_features)


def _densenet121() -> nn.Module:
    net = nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=1)
    net.class_layers.out = nn.Identity()
    return net


def _resnet18() -> nn.Module:
    return nets.resnet18(spatial_dims=3, n_input_channels=1, feed_forward=False)


def _seresnet50() -> nn.Module:
    net = nets.SEResNet50(spatial_dims=3, in_channels=1)
    net.last_linear = nn.Identity()
    return net


def _efficientnetb0() -> nn.Module:
    net = nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=3, in_channels=1)
    net._fc = nn.Identity()
    return net


@pytest.mark.parametrize(
    ("name", "pooled_reference", "side"),
    [
        ("3d_densenet121", _densenet121, 64),
        ("3d_resnet18", _resnet18, 32),
        ("3d_seresnet50", _seresnet50, 64),
        ("3d_efficientnetb0", _efficientnetb0, 64),
    ],
)
def test_global_average_of_map_equals_monai_pooled_features(
    name: str, pooled_reference: Callable[[], nn.Module], side: int
) -> None:
    """The MONAI net with its last linear layer removed returns its pooled features: averaging our
    map must give the same vector, so the map is the pre-pooling activation. The strict state-dict
    load also checks that our parameter names are MONAI's."""
    reference = pooled_reference().eval()
    model, num_features = create_monai_backbone(name, in_chans=1)
    model.load_state_dict(reference.state_dict())
    fmap = _features(model.eval(), side)
    assert fmap.shape[2:].numel() > 1
    pooled = _features(reference, side)
    assert pooled.shape == (2, num_features)
    torch.testing.assert_close(fmap.mean(dim=(2, 3, 4)), pooled, rtol=1e-4, atol=1e-5)


def test_spatial_dims_2_gives_4d_map() -> None:
    model, num_features = create_monai_backbone("3d_resnet18", in_chans=1, spatial_dims=2)
    with torch.no_grad():
        fmap = model.eval()(torch.randn(2, 1, 32, 32))
    assert fmap.shape == (2, num_features, 2, 2)


@pytest.mark.parametrize(
    ("name", "close"), [("3d_resnet19", "3d_resnet18"), ("resnet50", "3d_resnet50")]
)
def test_unknown_name_raises_config_error_with_suggestion(name: str, close: str) -> None:
    with pytest.raises(ConfigError, match="Did you mean") as info:
        create_monai_backbone(name, in_chans=1)
    message = str(info.value)
    assert repr(name) in message
    assert close in message.split("Did you mean")[1]
