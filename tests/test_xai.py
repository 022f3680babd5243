"""Grad-CAM heatmaps (medclf.xai): shapes, ranges, targets, writers, and a hand-computed oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medclf.errors import ConfigError
from medclf.inference import xai
from medclf.models.module import ClassificationModule


def build(
    backbone: str, class_names=("a", "b", "c"), in_chans=3, meta_variables=None, **kwargs
) -> ClassificationModule:
    """A randomly initialised module (fixed seed): random weights already give structured maps."""
    torch.manual_seed(0)
    task = kwargs.pop("task", "multiclass")
    activation = "sigmoid" if task == "binary" else "softmax"
    return ClassificationModule(
        class_names=list(class_names),
        in_chans=in_chans,
        backbone={"name": backbone, "pretrained": False},
        head={"activation": activation, "meta_variables": meta_variables},
        loss={"name": "ce"},
        optimizer={"name": "adamw", "lr": 1e-3},
        task=task,
        **kwargs,
    )


def squares(shape: tuple[int, ...], boxes: list[tuple[slice, ...]], channels: int = 3):
    """Dark images (N = len(boxes)) with one bright box each: a structure for the CAM to find."""
    images = torch.zeros(len(boxes), channels, *shape)
    for i, box in enumerate(boxes):
        images[(i, slice(None), *box)] = 1.0
    return images


@pytest.fixture(scope="module")
def resnet() -> ClassificationModule:
    return build("resnet18", image_size=128)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    # H != W, so a swapped (W, H) in the upsampling would show as a wrong shape
    return squares((96, 128), [np.s_[10:40, 20:50], np.s_[50:90, 70:110]])


def gradcam_oracle(module: ClassificationModule, images: torch.Tensor) -> np.ndarray:
    """Grad-CAM by its formula (Selvaraju et al.): weights = mean gradient of the predicted
    logit over the feature map, ReLU of the weighted sum, bilinear upsampling, min-max."""
    module.eval()
    with torch.enable_grad():
        features = module.backbone((images - module.mean) / module.std).detach()
        features.requires_grad_(True)
        logits = module.head(features)
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    weights = features.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    high = cam.amax(dim=(1, 2), keepdim=True)
    module.zero_grad(set_to_none=True)
    return ((cam - low) / (high - low)).numpy()


@pytest.mark.parametrize("method", list(xai.METHODS))
def test_heatmaps_2d_shape_range_structure(resnet, images, method):
    maps = xai.heatmaps(resnet, images, method=method)
    assert maps.shape == (2, 96, 128)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.std() > 1e-3 for m in maps)
    # each image's bright square is where its map peaks
    for heat, box in zip(maps, [np.s_[10:40, 20:50], np.s_[50:90, 70:110]], strict=True):
        assert heat[box].mean() > heat.mean()


def test_gradcam_matches_hand_computed_formula(resnet, images):
    maps = xai.heatmaps(resnet, images, method="gradcam")
    np.testing.assert_allclose(maps, gradcam_oracle(resnet, images), atol=1e-3)


def test_heatmaps_leave_the_module_as_found_and_work_in_inference_mode(images):
    module = build("resnet18").train()
    frozen = next(iter(module.backbone.parameters()))
    frozen.requires_grad_(False)
    reference = xai.heatmaps(module, images, targets=[0, 2])
    with torch.inference_mode():
        again = xai.heatmaps(module, images, targets=[0, 2])
    np.testing.assert_allclose(again, reference, atol=1e-6)
    assert module.training
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in module.head.parameters())
    assert all(p.grad is None for p in module.parameters())
    by_name = xai.heatmaps(module, images, targets="c")  # a class name for every image
    np.testing.assert_allclose(by_name[1], reference[1], atol=1e-6)


def test_metadata_is_held_fixed_for_the_image_model(images):
    module = build("resnet18", meta_variables=2)
    metadata = torch.tensor([[0.0, 1.0], [5.0, -5.0]])
    maps = xai.heatmaps(module, images, metadata=metadata, targets=0)
    other = xai.heatmaps(module, images, metadata=-metadata, targets=0)
    assert maps.shape == (2, 96, 128)
    assert np.abs(maps - other).max() > 1e-3  # the metadata reaches the head
    with pytest.raises(ValueError, match="metadata"):
        xai.heatmaps(module, images)


def test_binary_model_explains_either_class(images):
    module = build("resnet18", class_names=("negative", "positive"), task="binary")
    assert module.head.classifier.out_features == 1
    negative = xai.heatmaps(module, images, targets=0)
    positive = xai.heatmaps(module, images, targets=1)
    for maps in (negative, positive):
        assert maps.shape == (2, 96, 128)
        assert all(m.std() > 1e-3 for m in maps)
    # class 0 is the negated logit: its weights are the negated class-1 weights, so the two
    # ReLU'd maps are large in different places
    assert np.abs(negative - positive).max() > 0.5
    module.eval()
    with torch.no_grad():
        predicted = (module(images).sigmoid()[:, 0] >= 0.5).long().tolist()
    default = xai.heatmaps(module, images)
    for i, label in enumerate(predicted):
        np.testing.assert_allclose(default[i], (negative, positive)[label][i], atol=1e-6)


def test_unknown_method_or_class_is_a_config_error(resnet, images):
    with pytest.raises(ConfigError, match=r"xai='gradcm'.*Did you mean: gradcam"):
        xai.heatmaps(resnet, images, method="gradcm")
    with pytest.raises(ConfigError, match="out of range"):
        xai.heatmaps(resnet, images, targets=3)
    with pytest.raises(ConfigError, match="'d' is not a class"):
        xai.heatmaps(resnet, images, targets=["a", "d"])


@pytest.mark.parametrize("channels", [1, 3])
def test_overlay_png_colours_the_heatmap_over_the_image(tmp_path, channels):
    image = squares((48, 64), [np.s_[8:24, 8:24]], channels=channels)[0]
    heat = np.zeros((48, 64), np.float32)
    heat[8:24, 8:24] = 1.0
    path = xai.overlay_png(image, heat, tmp_path / "sub" / "overlay.png")
    picture = np.asarray(Image.open(path))
    assert picture.shape == (48, 64, 3)
    assert picture[16, 16, 0] > picture[16, 16, 2]  # hot: red
    assert picture[40, 50, 2] > picture[40, 50, 0]  # cold: blue
    assert xai.save_heatmap(heat, image.numpy(), tmp_path, "s") == [tmp_path / "s.png"]


def test_3d_heatmap_and_volume_files(tmp_path):
    module = build("3d_resnet18", class_names=("a", "b"), in_chans=1, spatial_dims=3)
    volume = squares((24, 32, 28), [np.s_[4:12, 4:14, 4:14]], channels=1)
    maps = xai.heatmaps(module, volume, method="gradcam")
    assert maps.shape == (1, 24, 32, 28)
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and maps.std() > 1e-3
    npy, png = xai.save_volume(maps[0], volume[0], tmp_path, "case1")
    assert (npy.name, png.name) == ("case1.npy", "case1_mid.png")
    np.testing.assert_array_equal(np.load(npy), maps[0])
    assert Image.open(png).size == (28, 32)
    eigen = xai.heatmaps(module, volume, method="eigencam")
    assert eigen.shape == (1, 24, 32, 28) and eigen.std() > 1e-3


@pytest.mark.parametrize("backbone", ["resnet18", "densenet121", "efficientnetb0", "vgg16"])
def test_target_layer_outputs_the_map_the_head_pools(backbone):
    module = build(backbone, image_size=64)
    layer = xai.target_layer(module)
    seen = {}
    layer.register_forward_hook(lambda mod, args, out: seen.setdefault("layer", out))
    module.head.register_forward_pre_hook(lambda mod, args: seen.setdefault("head", args[0]))
    image = squares((64, 64), [np.s_[8:32, 8:32]])
    maps = xai.heatmaps(module, image)  # the one forward (and backward) pass
    assert seen["layer"] is seen["head"]
    assert seen["layer"].shape[:2] == (1, module.backbone.num_features)
    assert seen["layer"].ndim == 4
    assert maps.shape == (1, 64, 64)
