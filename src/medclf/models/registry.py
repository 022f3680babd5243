"""The registries of medclf's extension points: backbones, losses, optimizers, schedulers.

One registry per extension point, in the timm manner: a plain dict from the name a user
types (``backbone=densenet121``, ``loss.name: focal``) to what it builds, filled where the
thing is defined (``@LOSSES.register("focal")`` on the class) and read by one factory
(``create_loss``, ``create_optimizer``, ``Backbone``). An unknown name is a ConfigError that
suggests the closest names. The tests iterate every registry.

This module imports neither torch nor timm: the backbone table below also gives the
``backbone`` config group its options (medclf.config), which ``--help`` lists.

Your own loss, optimizer, scheduler or backbone: register it in a module of yours, give it
a YAML in your config folder, and name the module in ``imports``::

    # my_losses.py
    from medclf.models.losses import ClassificationLoss
    from medclf.models.registry import LOSSES

    @LOSSES.register("dice")
    class DiceLoss(ClassificationLoss): ...

    medclf-train --config-dir my_conf loss=dice imports=[my_losses]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medclf.errors import ConfigError, did_you_mean

_DECORATOR = object()  # register(name) without an entry: used as a decorator


class Registry(dict):
    """``name → entry``. ``registry[name]`` of an unknown name raises a ConfigError naming the
    config key and the closest registered names."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__()
        self.kind = kind
        self.key = key

    def register(self, name: str, entry: Any = _DECORATOR) -> Any:
        """``REGISTRY.register(name, entry)``, or ``@REGISTRY.register(name)`` on a class or
        function. A name is registered once; registering it again is an error (two plugins
        claiming one name), unless it is the same entry (a module imported twice)."""

        def add(value: Any) -> Any:
            known = dict.get(self, name)
            if known is not None and known is not value and _qualname(known) != _qualname(value):
                raise ValueError(f"{self.kind} {name!r} is already registered ({known!r})")
            self[name] = value
            return value

        return add if entry is _DECORATOR else add(entry)

    def __missing__(self, name: str) -> Any:
        raise ConfigError(
            f"{self.key}={name!r} is not a known {self.kind}.{did_you_mean(name, self)} "
            f"Choose one of: {', '.join(sorted(self))}, or register your own (see "
            "medclf.models.registry)."
        )

    def names(self) -> list[str]:
        return sorted(self)


def _qualname(value: Any) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: where the network comes from and what input it accepts."""

    model_id: str  # the timm model name, or the MONAI class or efficientnet-bN name
    min_size: int = 32  # smallest input side (pixels or voxels) that forwards
    spatial_dims: int = 2
    library: str = "timm"


BACKBONES = Registry("backbone", "backbone.name")
LOSSES = Registry("loss", "loss.name")
OPTIMIZERS = Registry("optimizer", "optimizer.name")
SCHEDULERS = Registry("scheduler", "scheduler.name")

# The MIA list plus ConvNeXt from AUCMEDI (2D, timm). Classifiers are removed
# (``num_classes=0``) and ``forward_features`` is used, so VGG keeps no fully connected layers
# (as MIA requires) and the classification head does the pooling.
_TIMM = {
    "densenet121": BackboneSpec("densenet121"),
    "densenet169": BackboneSpec("densenet169"),
    "densenet201": BackboneSpec("densenet201"),
    **{f"efficientnetb{i}": BackboneSpec(f"tf_efficientnet_b{i}") for i in range(8)},
    "inceptionv3": BackboneSpec("inception_v3", min_size=75),
    "inceptionresnetv2": BackboneSpec("inception_resnet_v2", min_size=75),
    "mobilenet": BackboneSpec("mobilenetv1_100"),
    "mobilenetv2": BackboneSpec("mobilenetv2_100"),
    "nasnetlarge": BackboneSpec("nasnetalarge"),
    "nasnetmobile": BackboneSpec("nasnetamobile"),  # medclf.models.nasnet registers it
    "resnet18": BackboneSpec("resnet18"),
    "resnet34": BackboneSpec("resnet34"),
    "resnet50": BackboneSpec("resnet50"),
    "resnet101": BackboneSpec("resnet101"),
    "resnet152": BackboneSpec("resnet152"),
    "resnet50v2": BackboneSpec("resnetv2_50"),
    "resnet101v2": BackboneSpec("resnetv2_101"),
    "resnet152v2": BackboneSpec("resnetv2_152"),
    "resnext50": BackboneSpec("resnext50_32x4d"),
    "resnext101": BackboneSpec("resnext101_32x4d"),
    "seresnet18": BackboneSpec("legacy_seresnet18"),
    "seresnet34": BackboneSpec("legacy_seresnet34"),
    "seresnet50": BackboneSpec("legacy_seresnet50"),
    "seresnet101": BackboneSpec("legacy_seresnet101"),
    "seresnet152": BackboneSpec("legacy_seresnet152"),
    "seresnext50": BackboneSpec("legacy_seresnext50_32x4d"),
    "seresnext101": BackboneSpec("legacy_seresnext101_32x4d"),
    "senet154": BackboneSpec("legacy_senet154"),
    "vgg16": BackboneSpec("vgg16"),
    "vgg19": BackboneSpec("vgg19"),
    "xception": BackboneSpec("legacy_xception"),
    "convnext_tiny": BackboneSpec("convnext_tiny"),
    "convnext_small": BackboneSpec("convnext_small"),
    "convnext_base": BackboneSpec("convnext_base"),
}

# MONAI 3D networks (medclf.models.monai3d): the MONAI class or factory name, and the
# smallest cubic input side that forwards (batch 2, eval mode), measured. DenseNet needs 29
# because its three 2x average-pooling transitions floor the size; EfficientNet's numbers
# are irregular because MONAI pads each strided conv statically for the model's design
# resolution (224-600 px), not for the actual input.
_MONAI = {
    "3d_densenet121": ("DenseNet121", 29),
    "3d_densenet169": ("DenseNet169", 29),
    "3d_densenet201": ("DenseNet201", 29),
    "3d_resnet18": ("resnet18", 1),
    "3d_resnet34": ("resnet34", 1),
    "3d_resnet50": ("resnet50", 1),
    "3d_resnet101": ("resnet101", 1),
    "3d_resnet152": ("resnet152", 1),
    "3d_seresnet50": ("SEResNet50", 3),
    "3d_seresnet101": ("SEResNet101", 3),
    "3d_seresnet152": ("SEResNet152", 3),
    "3d_seresnext50": ("SEResNext50", 3),
    "3d_seresnext101": ("SEResNext101", 3),
    "3d_senet154": ("SENet154", 3),
    "3d_efficientnetb0": ("efficientnet-b0", 32),
    "3d_efficientnetb1": ("efficientnet-b1", 16),
    "3d_efficientnetb2": ("efficientnet-b2", 4),
    "3d_efficientnetb3": ("efficientnet-b3", 12),
    "3d_efficientnetb4": ("efficientnet-b4", 28),
    "3d_efficientnetb5": ("efficientnet-b5", 8),
    "3d_efficientnetb6": ("efficientnet-b6", 16),
    "3d_efficientnetb7": ("efficientnet-b7", 24),
}

for _name, _spec in _TIMM.items():
    BACKBONES.register(_name, _spec)
for _name, (_ident, _side) in _MONAI.items():
    BACKBONES.register(_name, BackboneSpec(_ident, _side, spatial_dims=3, library="monai"))


def import_plugins(modules: list[str] | None) -> None:
    """Import the user's modules named in ``imports`` (they register their own entries);
    the current directory is searched too. A module that does not import is a ConfigError."""
    import importlib
    import os
    import sys

    if not modules:
        return
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in modules:
        try:
            importlib.import_module(str(name))
        except ImportError as error:
            raise ConfigError(
                f"imports: cannot import {name!r} ({error}). Give the module name of your "
                "registered losses, backbones, optimizers or schedulers, importable from the "
                "current directory or the Python path."
            ) from None


def registry_of(kind: str) -> Registry:
    """The registry called ``kind`` (backbone, loss, optimizer, scheduler)."""
    return {r.kind: r for r in (BACKBONES, LOSSES, OPTIMIZERS, SCHEDULERS)}[kind]
