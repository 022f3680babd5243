"""Backbones: a registered name (medclf.models.registry.BACKBONES) → a network that yields
its last spatial feature map, from timm (2D) or MONAI (``3d_*``, medclf.models.monai3d).

Classifiers are removed (``num_classes=0``) and ``forward_features`` is used, so VGG keeps no
fully connected layers (as MIA requires) and the classification head does the pooling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from medclf.errors import ConfigError, MedclfError
from medclf.models.registry import BACKBONES, BackboneSpec

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "get_spec"]

log = logging.getLogger(__name__)


def get_spec(name: str) -> BackboneSpec:
    """Look a backbone up by its user-facing name, suggesting the closest on a typo."""
    return BACKBONES[name]


def cached_pretrained_file(model_id: str) -> str | None:
    """The path of ``model_id``'s default pretrained weights in the local Hugging Face
    cache, or None (not cached, or not published on the Hub)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_id) if "." in model_id else None
    if cfg is None:
        tags = timm.list_pretrained(model_id + ".*")
        cfg = timm.models.get_pretrained_cfg(tags[0]) if tags else None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def check_weights(name: str, pretrained: bool, weights: str | None) -> None:
    """``backbone.weights`` is a file and ``backbone.pretrained`` weights can be had: published
    by timm and in the local Hugging Face cache, or downloadable (not offline)."""
    spec = get_spec(name)
    if weights:
        if not Path(weights).expanduser().is_file():
            raise ConfigError(
                f"backbone.weights={weights!r}: no such file. Give the path of a local state "
                f"dict (.pth, .bin or .safetensors) for {spec.model_id}, or set "
                "backbone.weights=null."
            )
        return
    if not pretrained:
        return
    if spec.library == "monai":
        raise ConfigError(
            f"backbone.pretrained=true: no pretrained weights are offered for {name}; set "
            "backbone.pretrained=false or give a MONAI state dict with backbone.weights=PATH."
        )
    import timm
    from huggingface_hub import constants

    if not timm.list_pretrained(spec.model_id + ".*"):
        raise ConfigError(
            f"backbone.pretrained=true: timm publishes no pretrained weights for {name} "
            f"({spec.model_id}). Set backbone.pretrained=false or give local weights with "
            "backbone.weights=PATH."
        )
    if constants.HF_HUB_OFFLINE and cached_pretrained_file(spec.model_id) is None:
        raise ConfigError(
            f"backbone.pretrained=true: the ImageNet weights of {name} ({spec.model_id}) are not "
            "in the local Hugging Face cache and this machine is offline (HF_HUB_OFFLINE). "
            'Fetch them once where there is a network (python -c "import timm; '
            f"timm.create_model('{spec.model_id}', pretrained=True)\") and copy the cache "
            "(HF_HOME, default ~/.cache/huggingface) here, give a weights file with "
            "backbone.weights=PATH, or set backbone.pretrained=false."
        )


_SMALLEST: dict[tuple[str, tuple[int, ...]], int | None] = {}


def _forwards(backbone: nn.Module, channels: int, size: Sequence[int]) -> bool:
    try:
        backbone(torch.zeros(1, channels, *size))
    except (RuntimeError, ValueError, IndexError, ZeroDivisionError):
        return False
    return True


def smallest_input(backbone: Backbone, channels: int, size: Sequence[int]) -> int | None:
    """None when ``backbone`` forwards an input of ``size`` (pixels or voxels per side), else
    the smallest side, the same on every axis, that it forwards: read from the network by
    forward passes of a zero input (eval mode, no gradients), cached per backbone and size."""
    key = (backbone.name, tuple(int(s) for s in size))
    if key in _SMALLEST:
        return _SMALLEST[key]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            if _forwards(backbone, channels, size):
                found = None
            else:
                dims, low, high = len(size), min(size), max(max(size) * 2, 32)
                while not _forwards(backbone, channels, (high,) * dims):
                    low, high = high, high * 2
                    if high > 4096:
                        raise ValueError(f"backbone {backbone.name} forwards no input up to 4096")
                while high - low > 1:  # low does not forward, high does
                    middle = (low + high) // 2
                    if _forwards(backbone, channels, (middle,) * dims):
                        high = middle
                    else:
                        low = middle
                found = high
    finally:
        backbone.train(was_training)
    _SMALLEST[key] = found
    return found


class Backbone(nn.Module):
    """A feature extractor: image (N, C, *spatial) → last feature map (N, F, *spatial')."""

    def __init__(
        self,
        name: str,
        in_chans: int = 3,
        pretrained: bool = False,
        weights: str | None = None,
        drop_path_rate: float | None = None,
    ) -> None:
        super().__init__()
        spec = get_spec(name)
        self.name = name
        self.spec = spec
        if spec.library == "monai":
            self._init_monai(name, in_chans, pretrained, weights)
            return
        import timm

        if spec.model_id == "nasnetamobile":
            import medclf.models.nasnet  # noqa: F401  (registers the model with timm)
        kwargs: dict = {"num_classes": 0, "in_chans": int(in_chans)}
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        if weights:  # checked by check_weights (the pre-flight)
            path = Path(weights).expanduser()
            kwargs["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
            pretrained = True
        elif pretrained:
            cached = cached_pretrained_file(spec.model_id)
            if cached:  # no request to the Hub: the weights are on this machine already
                kwargs["pretrained_cfg_overlay"] = {"file": cached}
        try:
            self.model = timm.create_model(spec.model_id, pretrained=pretrained, **kwargs)
        except OSError as error:  # huggingface_hub's LocalEntryNotFoundError among them
            if weights:
                raise
            raise MedclfError(
                f"the ImageNet weights of {name} ({spec.model_id}) could not be downloaded "
                f"({type(error).__name__}); fetch them where there is a network, give a weights "
                "file with backbone.weights=PATH, or set backbone.pretrained=false."
            ) from None
        self.num_features = int(self.model.num_features)
        self.pretrained_cfg = dict(getattr(self.model, "pretrained_cfg", {}) or {})
        self._drop_unused(int(in_chans))

    def _drop_unused(self, in_chans: int) -> None:
        """Parameters ``forward_features`` never uses (VGG's 4096-wide pre-logits MLP,
        ConvNeXt's head norm) would fill memory and the optimizer and make DDP fail on
        unused parameters: a dry backward pass finds them; whole unused submodules are
        replaced by Identity, stray parameters frozen."""
        size = self.spec.min_size
        was_training = self.model.training
        self.model.eval()  # no BatchNorm statistics updated by the probe
        probe = torch.zeros(1, in_chans, *(size,) * self.spec.spatial_dims)  # a user's 3D one too
        self.model.forward_features(probe).float().sum().backward()
        self.model.train(was_training)
        unused = {n for n, p in self.model.named_parameters() if p.grad is None}
        self.model.zero_grad(set_to_none=True)
        if not unused:
            return
        for name, child in list(self.model.named_children()):
            names = [n for n, _ in child.named_parameters(prefix=name)]
            if names and all(n in unused for n in names):
                setattr(self.model, name, torch.nn.Identity())
        for name, param in self.model.named_parameters():
            if name in unused:
                param.requires_grad_(False)

    def _init_monai(self, name: str, in_chans: int, pretrained: bool, weights: str | None):
        """A MONAI 3D network (random init, or a local MONAI state dict via ``weights``)."""
        from medclf.models.monai3d import create_monai_backbone

        self.model, self.num_features = create_monai_backbone(name, int(in_chans))
        self.pretrained_cfg = {"mean": (0.5,), "std": (0.5,)}
        if weights:
            path = Path(weights).expanduser()
            state = torch.load(path, map_location="cpu", weights_only=True)
            own = self.model.state_dict()
            usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
            if not usable:
                raise ConfigError(
                    f"{path} holds no tensor of {name} (MONAI {self.spec.model_id}); is it a "
                    "state dict of that network? Give another file with backbone.weights=PATH."
                )
            self.model.load_state_dict(usable, strict=False)
            log.info("loaded %d of %d tensors from %s", len(usable), len(own), path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.library == "monai":
            return self.model(x)
        return self.model.forward_features(x)

    def normalization(self, channels: int) -> tuple[list[float], list[float]]:
        """Mean and std the backbone expects, adapted to ``channels`` input channels."""
        mean = list(self.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
        std = list(self.pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
        if channels == len(mean):
            return mean, std
        return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
