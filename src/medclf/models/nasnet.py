"""NASNet-A Mobile (4 @ 1056) for timm.

timm ships NASNet-A Large only. This module builds the mobile variant of Zoph et al. 2018,
"Learning Transferable Architectures for Scalable Image Recognition" (https://arxiv.org/abs/1707.07012),
from the cells in ``timm.models.nasnet``, with the layout and parameter names of Cadene's
``pretrainedmodels`` ``nasnetamobile``, and registers it as ``nasnetamobile`` so that
``timm.create_model`` builds it like any other timm model. Importing the module registers the model.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct, create_classifier, get_device_dtype
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models.nasnet import (
    CellStem0,
    CellStem1,
    FirstCell,
    NormalCell,
    ReductionCell0,
    ReductionCell1,
)

from medclf.compat import timm_feature_take_indices

__all__ = ["NASNetAMobile", "nasnetamobile"]

MODEL_NAME = "nasnetamobile"


class NASNetAMobile(nn.Module):
    """NASNet-A Mobile: 4 normal cells per stage, 1056 penultimate filters, about 5.3M parameters.

    The channel plan follows timm's ``NASNetALarge`` (``channels = num_features // 24``) with the
    mobile stem (32 filters) and 4 instead of 6 cells per stage. Unlike the large model, the first
    cell after a reduction cell takes the reduction cell's input as its previous input, as in the
    reference implementations (TF-slim ``skip_reduction_layer_input=False``, Keras
    ``NASNetMobile`` ``skip_reduction=False``, Cadene's ``nasnetamobile``).
    ``pad_type='same'`` reproduces TensorFlow's SAME padding at any input size.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_size: int = 32,
        channel_multiplier: int = 2,
        num_features: int = 1056,
        output_stride: int = 32,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        pad_type: str = "same",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        if output_stride != 32:
            raise ValueError(f"NASNetAMobile only supports output_stride=32, got {output_stride}")
        if num_features % 24:
            raise ValueError(f"num_features must be a multiple of 24, got {num_features}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem_size = stem_size
        self.num_features = num_features
        self.channel_multiplier = channel_multiplier
        self.drop_rate = drop_rate

        channels = num_features // 24
        cells = partial(_cell_kwargs, pad_type=pad_type, **dd)

        self.conv0 = ConvNormAct(
            in_channels=in_chans,
            out_channels=stem_size,
            kernel_size=3,
            padding=0,
            stride=2,
            norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.1),
            apply_act=False,
            **dd,
        )
        self.cell_stem_0 = CellStem0(
            stem_size, num_channels=channels // (channel_multiplier**2), pad_type=pad_type, **dd
        )
        self.cell_stem_1 = CellStem1(
            stem_size, num_channels=channels // channel_multiplier, pad_type=pad_type, **dd
        )

        self.cell_0 = FirstCell(**cells(channels, channels // 2, 2 * channels, channels))
        self.cell_1 = NormalCell(**cells(2 * channels, channels, 6 * channels, channels))
        self.cell_2 = NormalCell(**cells(6 * channels, channels, 6 * channels, channels))
        self.cell_3 = NormalCell(**cells(6 * channels, channels, 6 * channels, channels))

        self.reduction_cell_0 = ReductionCell0(
            **cells(6 * channels, 2 * channels, 6 * channels, 2 * channels)
        )
        self.cell_6 = FirstCell(**cells(6 * channels, channels, 8 * channels, 2 * channels))
        self.cell_7 = NormalCell(**cells(8 * channels, 2 * channels, 12 * channels, 2 * channels))
        self.cell_8 = NormalCell(**cells(12 * channels, 2 * channels, 12 * channels, 2 * channels))
        self.cell_9 = NormalCell(**cells(12 * channels, 2 * channels, 12 * channels, 2 * channels))

        self.reduction_cell_1 = ReductionCell1(
            **cells(12 * channels, 4 * channels, 12 * channels, 4 * channels)
        )
        self.cell_12 = FirstCell(**cells(12 * channels, 2 * channels, 16 * channels, 4 * channels))
        self.cell_13 = NormalCell(**cells(16 * channels, 4 * channels, 24 * channels, 4 * channels))
        self.cell_14 = NormalCell(**cells(24 * channels, 4 * channels, 24 * channels, 4 * channels))
        self.cell_15 = NormalCell(**cells(24 * channels, 4 * channels, 24 * channels, 4 * channels))
        self.act = nn.ReLU(inplace=True)

        self.feature_info = [
            dict(num_chs=stem_size, reduction=2, module="conv0"),
            dict(num_chs=channels, reduction=4, module="cell_stem_1.conv_1x1.act"),
            dict(num_chs=6 * channels, reduction=8, module="reduction_cell_0.conv_1x1.act"),
            dict(num_chs=12 * channels, reduction=16, module="reduction_cell_1.conv_1x1.act"),
            dict(num_chs=num_features, reduction=32, module="act"),
        ]
        self.layer_names = (
            ["conv0", "cell_stem_0", "cell_stem_1"]
            + [f"cell_{i}" for i in range(4)]
            + ["reduction_cell_0"]
            + [f"cell_{i}" for i in range(6, 10)]
            + ["reduction_cell_1"]
            + [f"cell_{i}" for i in range(12, 16)]
        )
        tap_layers = ("conv0", "cell_stem_0", "cell_3", "cell_9", "cell_15")
        self.feature_ends = [self.layer_names.index(n) for n in tap_layers]

        self.global_pool, self.head_drop, self.last_linear = create_classifier(
            num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd
        )
        self.head_hidden_size = num_features * self.global_pool.feat_mult()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay, as in timm's NASNetALarge."""
        return dict(
            stem=r"^conv0|cell_stem_[01]",
            blocks=[
                (r"^cell_(\d+)", None),
                (r"^reduction_cell_0", (6,)),
                (r"^reduction_cell_1", (12,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing is not supported: every cell takes two inputs."""
        if enable:
            raise NotImplementedError("gradient checkpointing is not supported by NASNetAMobile")

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """Return the classifier layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.last_linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head, e.g. for fine-tuning on a new number of classes."""
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.last_linear = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **dd
        )
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.last_linear.train(self.training)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward that also returns the ``feature_info`` taps, for timm's feature API.

        Index 0 is the conv0 output, indices 1-3 the ReLU-activated outputs of cell_stem_0, cell_3
        and cell_9 (what the next cell consumes), index 4 the activated cell_15 output.
        ``norm`` is accepted for API compatibility; the model has no final norm.
        """
        if output_fmt != "NCHW":
            raise ValueError("Output shape must be NCHW.")
        intermediates: list[torch.Tensor] = []
        take_indices, max_index = timm_feature_take_indices(len(self.feature_ends), indices)
        last_idx = len(self.feature_ends) - 1

        layer_names = self.layer_names
        if stop_early:
            layer_names = layer_names[: self.feature_ends[max_index] + 1]
        x_prev = x
        feat_idx = 0
        for i, name in enumerate(layer_names):
            layer = getattr(self, name)
            if i < 2:
                x_prev, x = x, layer(x)
            elif i == 2:
                x_prev, x = x, layer(x_prev, x)
            else:
                x_prev, x = x, layer(x, x_prev)
            if i == self.feature_ends[feat_idx]:
                if feat_idx == last_idx:
                    x = self.act(x)
                if feat_idx in take_indices:
                    intermediates.append(F.relu(x) if 0 < feat_idx < last_idx else x)
                feat_idx += 1

        if intermediates_only:
            return intermediates
        if 0 < feat_idx - 1 < last_idx:
            x = F.relu(x)
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the final ReLU-activated feature map, shape (N, num_features, H/32, W/32)."""
        x_conv0 = self.conv0(x)
        x_stem_0 = self.cell_stem_0(x_conv0)
        x_stem_1 = self.cell_stem_1(x_conv0, x_stem_0)

        x_cell_0 = self.cell_0(x_stem_1, x_stem_0)
        x_cell_1 = self.cell_1(x_cell_0, x_stem_1)
        x_cell_2 = self.cell_2(x_cell_1, x_cell_0)
        x_cell_3 = self.cell_3(x_cell_2, x_cell_1)

        x_reduction_cell_0 = self.reduction_cell_0(x_cell_3, x_cell_2)
        x_cell_6 = self.cell_6(x_reduction_cell_0, x_cell_3)
        x_cell_7 = self.cell_7(x_cell_6, x_reduction_cell_0)
        x_cell_8 = self.cell_8(x_cell_7, x_cell_6)
        x_cell_9 = self.cell_9(x_cell_8, x_cell_7)

        x_reduction_cell_1 = self.reduction_cell_1(x_cell_9, x_cell_8)
        x_cell_12 = self.cell_12(x_reduction_cell_1, x_cell_9)
        x_cell_13 = self.cell_13(x_cell_12, x_reduction_cell_1)
        x_cell_14 = self.cell_14(x_cell_13, x_cell_12)
        x_cell_15 = self.cell_15(x_cell_14, x_cell_13)
        return self.act(x_cell_15)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify; ``pre_logits`` stops before the classifier."""
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.last_linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (or pooled features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))


def _cell_kwargs(
    in_chs_left: int,
    out_chs_left: int,
    in_chs_right: int,
    out_chs_right: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """Keyword arguments of a timm NASNet cell: left is the previous input, right the current."""
    return dict(
        in_chs_left=in_chs_left,
        out_chs_left=out_chs_left,
        in_chs_right=in_chs_right,
        out_chs_right=out_chs_right,
        **kwargs,
    )


def _create_nasnet_mobile(variant: str, pretrained: bool = False, **kwargs: Any) -> NASNetAMobile:
    """Build through timm so pretrained loading, in_chans adaptation and features_only work."""
    return build_model_with_cfg(
        NASNetAMobile,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="hook", no_rewrite=True),
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        f"{MODEL_NAME}.untrained": {
            "input_size": (3, 224, 224),
            "pool_size": (7, 7),
            "crop_pct": 0.875,
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "num_classes": 1000,
            "first_conv": "conv0.conv",
            "classifier": "last_linear",
        },
    }
)


def nasnetamobile(pretrained: bool = False, **kwargs: Any) -> NASNetAMobile:
    """NASNet-A Mobile (4 @ 1056); no hosted weights, load a file via ``pretrained_cfg_overlay``."""
    return _create_nasnet_mobile(MODEL_NAME, pretrained, **kwargs)


if not is_model(MODEL_NAME):
    register_model(nasnetamobile)
