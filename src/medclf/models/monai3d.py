"""MONAI 3D networks as feature extractors that stop before global pooling.

``create_monai_backbone`` returns a module whose ``forward(x)`` gives the last spatial feature map
``(N, F, D', H', W')`` of a ``monai.networks.nets`` network, with the activation the network applies
just before its own pooling, so our classification head can pool it. The module is an
``nn.Sequential`` of the network's own parts under their MONAI attribute names: the classifier is
dropped (no unused parameters under DDP) and state-dict keys match MONAI's. Weights are always
random: ``pretrained`` is never set, as there is no network access.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn
from monai.networks import nets

from medclf.compat import monai_efficientnet_features
from medclf.errors import ConfigError, did_you_mean
from medclf.models.registry import BACKBONES

__all__ = ["MIN_SIZE", "MONAI_BACKBONES", "create_monai_backbone"]

MONAI_BACKBONES: dict[str, str] = {
    name: spec.model_id for name, spec in BACKBONES.items() if spec.library == "monai"
}
"""Our backbone name -> MONAI class or factory name (``efficientnet-bN`` is EfficientNetBN's
``model_name``), from the backbone registry."""

MIN_SIZE: dict[str, int] = {name: BACKBONES[name].min_size for name in MONAI_BACKBONES}
"""Smallest cubic input side that forwards (batch 2, eval mode), from the backbone registry;
larger sides work too (checked up to 64 for EfficientNet; the others pad symmetrically, so
sizes shrink monotonically)."""


def _densenet(ident: str, in_chans: int, spatial_dims: int) -> nn.Sequential:
    """``features`` ends with norm5; ``class_layers`` applies ReLU before pooling, so we add it."""
    net = getattr(nets, ident)(spatial_dims=spatial_dims, in_channels=in_chans, out_channels=1)
    return nn.Sequential(OrderedDict(features=net.features, relu=net.class_layers.relu))


def _resnet(ident: str, in_chans: int, spatial_dims: int) -> nn.Sequential:
    """Stem, max-pool and layer1-4, as ``ResNet.forward`` runs them up to ``avgpool``."""
    net = getattr(nets, ident)(
        pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_chans, feed_forward=False
    )
    names = ["conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))


def _senet(ident: str, in_chans: int, spatial_dims: int) -> nn.Sequential:
    """``SENet.features``: layer0-4 (the last SE block already ends with ReLU)."""
    net = getattr(nets, ident)(
        spatial_dims=spatial_dims, in_channels=in_chans, num_classes=1, pretrained=False
    )
    return nn.Sequential(OrderedDict((f"layer{i}", getattr(net, f"layer{i}")) for i in range(5)))


def _efficientnet(ident: str, in_chans: int, spatial_dims: int) -> nn.Sequential:
    """``EfficientNet.forward`` up to ``_avg_pooling``: stem, blocks, head conv, BN and swish."""
    net = nets.EfficientNetBN(
        ident, pretrained=False, spatial_dims=spatial_dims, in_channels=in_chans, num_classes=1
    )
    parts = monai_efficientnet_features(net)
    return nn.Sequential(parts)


def _num_features(module: nn.Module) -> int:
    """Channels of the returned map: every net here ends its last block with a batch norm."""
    batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    norms = [m for m in module.modules() if isinstance(m, batch_norms)]
    return norms[-1].num_features


def create_monai_backbone(name: str, in_chans: int, spatial_dims: int = 3) -> tuple[nn.Module, int]:
    """Build ``name`` (a key of ``MONAI_BACKBONES``); return (pre-pooling extractor, channels)."""
    if name not in MONAI_BACKBONES:
        raise ConfigError(
            f"model.backbone: unknown MONAI 3D backbone {name!r}."
            f"{did_you_mean(name, MONAI_BACKBONES)} Known: {', '.join(MONAI_BACKBONES)}."
        )
    ident = MONAI_BACKBONES[name]
    if ident.startswith("DenseNet"):
        build = _densenet
    elif ident.startswith("resnet"):
        build = _resnet
    elif ident.startswith("SE"):
        build = _senet
    else:
        build = _efficientnet
    module = build(ident, in_chans, spatial_dims)
    return module, _num_features(module)
