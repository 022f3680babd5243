"""Train-time augmentation of a whole batch on its device with torch ops
(``datamodule.on_device=true``): the decoded set lives on the GPU, and a step gathers,
augments and trains without host work. Each sample draws its own flips, quarter turn,
affine (rotation, translation, scale; one ``grid_sample``), brightness/contrast and gamma,
as albumentations' HorizontalFlip, VerticalFlip, RandomRotate90, Affine,
RandomBrightnessContrast and RandomGamma do, from a generator on the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class BatchAugment:
    """Random per-sample augmentation of (N, C, H, W) float images in [0, 1]. Probabilities
    are per sample; ``rotate`` is in degrees (±), ``translate`` a fraction of the side (±),
    ``scale`` and ``gamma`` ranges; ``brightness`` and ``contrast`` are albumentations'
    limits (out = (1 + c) * x + b, clipped to [0, 1])."""

    def __init__(
        self,
        hflip_p: float = 0.0,
        vflip_p: float = 0.0,
        rot90_p: float = 0.0,
        affine_p: float = 0.0,
        rotate: float = 0.0,
        translate: float = 0.0,
        scale: Sequence[float] = (1.0, 1.0),
        intensity_p: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        gamma_p: float = 0.0,
        gamma: Sequence[float] = (1.0, 1.0),
    ) -> None:
        self.hflip_p, self.vflip_p, self.rot90_p = hflip_p, vflip_p, rot90_p
        self.affine_p, self.rotate, self.translate = affine_p, rotate, translate
        self.scale = tuple(float(v) for v in scale)
        self.intensity_p, self.brightness, self.contrast = intensity_p, brightness, contrast
        self.gamma_p, self.gamma = gamma_p, tuple(float(v) for v in gamma)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, device = images.shape[0], images.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, device=device, generator=generator)

        def chosen(p: float) -> torch.Tensor:
            return (torch.rand(n, device=device, generator=generator) < p).view(n, 1, 1, 1)

        x = images
        if self.hflip_p:
            x = torch.where(chosen(self.hflip_p), x.flip(-1), x)
        if self.vflip_p:
            x = torch.where(chosen(self.vflip_p), x.flip(-2), x)
        if self.rot90_p and x.shape[-1] == x.shape[-2]:
            turn = chosen(self.rot90_p)
            quarters = torch.randint(1, 4, (n, 1, 1, 1), device=device, generator=generator)
            for k in (1, 2, 3):
                x = torch.where(turn & (quarters == k), x.rot90(k, (-2, -1)), x)
        if self.affine_p:
            x = self._affine(x, chosen(self.affine_p).view(n), uniform)
        if self.intensity_p:
            alpha = uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1)
            beta = uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
            x = torch.where(chosen(self.intensity_p), (alpha * x + beta).clamp(0, 1), x)
        if self.gamma_p:
            power = uniform(*self.gamma).view(n, 1, 1, 1)
            x = torch.where(chosen(self.gamma_p), x.clamp_min(0) ** power, x)
        return x

    def _affine(self, x: torch.Tensor, on: torch.Tensor, uniform) -> torch.Tensor:
        """Rotation about the centre, scale and translation as one bilinear resampling
        (zeros outside), for the samples ``on``; the others are left as they are."""
        n, _, height, width = x.shape
        angle = uniform(-self.rotate, self.rotate) * (math.pi / 180)
        scale = uniform(*self.scale)
        shift = [uniform(-self.translate, self.translate) * 2 for _ in range(2)]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin * height / width, shift[0]], 1),
                torch.stack([sin * width / height, cos, shift[1]], 1),
            ],
            1,
        )
        identity = torch.eye(2, 3, device=x.device, dtype=theta.dtype).expand(n, 2, 3)
        theta = torch.where(on.view(n, 1, 1), theta, identity).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return torch.where(on.view(n, 1, 1, 1), moved, x)
