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

from medclf.errors import ConfigError, did_you_mean

__all__ = ["MIN_SIZE", "MONAI_BACKBONES", "create_monai_backbone"]

MONAI_BACKBONES: dict[str, str] = {
    "3d_densenet121": "DenseNet121",
    "3d_densenet169": "DenseNet169",
    "3d_densenet201": "DenseNet201",
    "3d_resnet18": "resnet18",
    "3d_resnet34": "resnet34",
    "3d_resnet50": "resnet50",
    "3d_resnet101": "resnet101",
    "3d_resnet152": "resnet152",
    "3d_seresnet50": "SEResNet50",
    "3d_seresnet101": "SEResNet101",
    "3d_seresnet152": "SEResNet152",
    "3d_seresnext50": "SEResNext50",
    "3d_seresnext101": "SEResNext101",
    "3d_senet154": "SENet154",
    **{f"3d_efficientnetb{i}": f"efficientnet-b{i}" for i in range(8)},
}
"""Our backbone name -> MONAI class or factory name (``efficientnet-bN`` is EfficientNetBN's
``model_name``)."""

MIN_SIZE: dict[str, int] = {
    **dict.fromkeys(("3d_densenet121", "3d_densenet169", "3d_densenet201"), 29),
    **dict.fromkeys(
        ("3d_resnet18", "3d_resnet34", "3d_resnet50", "3d_resnet101", "3d_resnet152"), 1
    ),
    **dict.fromkeys(
        ("3d_seresnet50", "3d_seresnet101", "3d_seresnet152", "3d_seresnext50", "3d_seresnext101"),
        3,
    ),
    "3d_senet154": 3,
    "3d_efficientnetb0": 32,
    "3d_efficientnetb1": 16,
    "3d_efficientnetb2": 4,
    "3d_efficientnetb3": 12,
    "3d_efficientnetb4": 28,
    "3d_efficientnetb5": 8,
    "3d_efficientnetb6": 16,
    "3d_efficientnetb7": 24,
}
"""Smallest cubic input side that forwards (batch 2, eval mode), measured; larger sides work too
(checked up to 64 for EfficientNet; the others pad symmetrically, so sizes shrink monotonically).

DenseNet needs 29 because its three 2x average-pooling transitions floor the size. EfficientNet's
numbers are irregular because MONAI pads each strided conv statically for the model's design
resolution (224-600 px), not for the actual input.
"""


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
    parts = OrderedDict(
        _conv_stem_padding=net._conv_stem_padding,
        _conv_stem=net._conv_stem,
        _bn0=net._bn0,
        _swish0=net._swish,
        _blocks=net._blocks,
        _conv_head_padding=net._conv_head_padding,
        _conv_head=net._conv_head,
        _bn1=net._bn1,
        _swish=net._swish,
    )
    return nn.Sequential(parts)


def _num_features(module: nn.Module) -> int:
    """Channels of the returned map: every net here ends its last block with a batch norm."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
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
