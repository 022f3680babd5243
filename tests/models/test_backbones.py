"""Every backbone of the one registry table builds and forwards at its minimum input size."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from medclf.config import CONF_DIR, group_options
from medclf.errors import ConfigError
from medclf.models.backbones import BACKBONES, Backbone, check_weights, get_spec
from medclf.models.head import ClassificationHead

MIA_NAMES = [
    "densenet121",
    "densenet169",
    "densenet201",
    "efficientnetb0",
    "efficientnetb1",
    "efficientnetb2",
    "efficientnetb3",
    "efficientnetb4",
    "efficientnetb5",
    "efficientnetb6",
    "efficientnetb7",
    "inceptionv3",
    "inceptionresnetv2",
    "mobilenet",
    "mobilenetv2",
    "nasnetlarge",
    "nasnetmobile",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet50v2",
    "resnet101v2",
    "resnet152v2",
    "resnext50",
    "resnext101",
    "seresnet18",
    "seresnet34",
    "seresnet50",
    "seresnet101",
    "seresnet152",
    "seresnext50",
    "seresnext101",
    "senet154",
    "vgg16",
    "vgg19",
    "xception",
]


TEST_PLUGINS = {"tiny", "tiny_plain", "tiny3d"}  # tests/tiny_backbone.py
THREE_D = (
    [f"3d_densenet{n}" for n in (121, 169, 201)]
    + [f"3d_resnet{n}" for n in (18, 34, 50, 101, 152)]
    + ["3d_seresnet50", "3d_seresnet101", "3d_seresnet152", "3d_seresnext50", "3d_seresnext101"]
    + ["3d_senet154"]
    + [f"3d_efficientnetb{i}" for i in range(8)]
)


def test_registry_has_the_mia_list_convnext_and_3d_networks() -> None:
    expected = set(MIA_NAMES) | {"convnext_tiny", "convnext_small", "convnext_base"}
    builtin = set(BACKBONES) - TEST_PLUGINS  # the tests register three of their own
    assert builtin == expected | set(THREE_D)
    assert {n for n, s in BACKBONES.items() if s.spatial_dims == 3} - TEST_PLUGINS == set(THREE_D)
    assert all(BACKBONES[n].library == "monai" for n in THREE_D)


def test_every_backbone_is_an_option_made_from_the_registry() -> None:
    """The ``backbone`` group's options are the registry's names, not a hand-kept copy of
    it, and ``_base`` is not one of them."""
    assert set(group_options("backbone")) == set(BACKBONES)
    assert not (CONF_DIR / "backbone").exists()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name in ("densenet121", "3d_resnet18", "xception"):
            cfg = compose("train", overrides=[f"backbone={name}"])
            assert cfg.backbone.name == name and cfg.backbone.pretrained is False
            assert cfg.backbone.freeze_epochs == 0


@pytest.mark.parametrize("name", sorted(THREE_D))
def test_3d_backbone_forwards_a_volume_with_the_head(name: str) -> None:
    """(2, C, 32, 32, 32) → 5-D feature map → the same head, pooling over three axes."""
    backbone = Backbone(name, in_chans=1).eval()
    head = ClassificationHead(backbone.num_features, n_labels=3).eval()
    with torch.no_grad():
        features = backbone(torch.rand(2, 1, 32, 32, 32))
        logits = head(features)
    assert features.ndim == 5 and features.shape[1] == backbone.num_features
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "name", sorted(n for n, s in BACKBONES.items() if s.spatial_dims == 2 and n not in TEST_PLUGINS)
)
def test_builds_and_forwards_at_minimum_size(name: str) -> None:
    """1- and 3-channel input at the minimum size → a spatial feature map → head logits."""
    size = BACKBONES[name].min_size
    for channels in (1, 3):
        backbone = Backbone(name, in_chans=channels).eval()
        head = ClassificationHead(backbone.num_features, n_labels=4).eval()
        with torch.no_grad():
            features = backbone(torch.rand(2, channels, size, size))
            logits = head(features)
        assert features.ndim == 4 and features.shape[1] == backbone.num_features
        assert logits.shape == (2, 4)
        assert torch.isfinite(logits).all()


def test_vgg_has_no_fully_connected_layers() -> None:
    """MIA: architectures come without fully connected layers (VGG's 4096 MLP is not used)."""
    backbone = Backbone("vgg16", in_chans=3)
    assert backbone.num_features == 512
    out = backbone(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 512, 1, 1)


def test_nasnetmobile_is_the_paper_network() -> None:
    backbone = Backbone("nasnetmobile", in_chans=3)
    assert backbone.num_features == 1056
    assert 4.2e6 < sum(p.numel() for p in backbone.parameters()) < 4.3e6  # 5.29M - 1056*1000


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean: densenet121"):
        get_spec("densenet12")


def test_local_weights_adapt_channels_and_drop_classifier(tmp_path) -> None:
    """backbone.weights=PATH: a 3-channel ImageNet-style state dict loads into 1 channel."""
    import timm

    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = Backbone("resnet18", in_chans=1, weights=str(path))
    expected = source.conv1.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(backbone.model.conv1.weight, expected)
    torch.testing.assert_close(backbone.model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_missing_weights_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="backbone.weights"):
        check_weights("resnet18", False, str(tmp_path / "nope.pth"))


def test_pretrained_without_published_weights_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no pretrained weights"):
        check_weights("resnet152v2", True, None)


def test_normalization_follows_backbone_and_channels() -> None:
    backbone = Backbone("inceptionv3", in_chans=3)
    mean, std = backbone.normalization(3)
    assert mean == pytest.approx([0.5, 0.5, 0.5]) and std == pytest.approx([0.5, 0.5, 0.5])
    mean1, std1 = Backbone("resnet18", in_chans=1).normalization(1)
    assert mean1 == pytest.approx([(0.485 + 0.456 + 0.406) / 3])
    assert get_spec("inceptionv3").min_size == 75


def test_monai_local_weights_load_and_foreign_files_are_refused(tmp_path) -> None:
    source = Backbone("3d_resnet18", in_chans=1)
    path = tmp_path / "monai.pth"
    torch.save(source.model.state_dict(), path)
    loaded = Backbone("3d_resnet18", in_chans=1, weights=str(path))
    torch.testing.assert_close(loaded.model.state_dict(), source.model.state_dict())
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"holds no tensor of 3d_resnet18 \(MONAI resnet18\)"):
        Backbone("3d_resnet18", in_chans=1, weights=str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="no pretrained weights are offered"):
        check_weights("3d_resnet18", True, None)
