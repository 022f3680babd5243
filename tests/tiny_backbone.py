"""Backbones for the tests whose subject is not the network, registered the way a user
registers their own (medclf.models.registry). Select one with ``backbone.name=tiny``; a
process imports them with ``imports=[tiny_backbone]`` (the tests folder is on its
PYTHONPATH).

- ``tiny``: timm's ``test_resnet`` (0.4 M parameters, 1.5 MB checkpoints).
- ``tiny_plain``: two convolutions and ReLUs, no batch norm and no dropout, so nothing
  depends on the batch: N processes of batch B train exactly as one of batch N x B.
- ``tiny3d``: two 3D convolutions with batch norm (the batch-norm statistics test).
"""

from timm.models import register_model
from torch import nn

from medclf.models.registry import BACKBONES, BackboneSpec


class TinyPlain(nn.Module):
    def __init__(self, num_classes: int = 0, in_chans: int = 3, **kwargs) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.num_features = 32
        self.pretrained_cfg = {"mean": (0.5,), "std": (0.5,)}

    def forward_features(self, x):
        return self.features(x)


@register_model
def tiny_plain(pretrained: bool = False, **kwargs) -> TinyPlain:
    return TinyPlain(**kwargs)


BACKBONES.register("tiny", BackboneSpec("test_resnet"))
BACKBONES.register("tiny_plain", BackboneSpec("tiny_plain", min_size=8))


class Tiny3d(nn.Module):
    """Two 3D convolutions with batch norm: the 3D ball set's batch-norm test network."""

    def __init__(self, num_classes: int = 0, in_chans: int = 1, **kwargs) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(in_chans, 8, 3, stride=2, padding=1),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.Conv3d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm3d(16),
            nn.ReLU(),
        )
        self.num_features = 16
        self.pretrained_cfg = {"mean": (0.5,), "std": (0.5,)}

    def forward_features(self, x):
        return self.features(x)


@register_model
def tiny3d(pretrained: bool = False, **kwargs) -> Tiny3d:
    return Tiny3d(**kwargs)


BACKBONES.register("tiny3d", BackboneSpec("tiny3d", min_size=8, spatial_dims=3))
