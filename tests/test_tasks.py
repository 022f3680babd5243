"""Task and activation from head config + data; backbone and metadata width vs. the data."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from medclf.errors import ConfigError
from medclf.pipeline.rules import check_model_fits_data, resolve_activation, resolve_task

# --- resolve_task -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "data_task", "n_classes", "expected"),
    [
        ({}, "multiclass", 3, ("multiclass", "softmax")),
        ({"activation": "auto"}, "multilabel", 14, ("multilabel", "sigmoid")),
        ({"activation": "sigmoid"}, "multilabel", 5, ("multilabel", "sigmoid")),
        ({"activation": "sigmoid"}, "multiclass", 3, ("multiclass", "sigmoid")),
        ({"n_outputs": 3, "activation": "auto"}, "multiclass", 3, ("multiclass", "softmax")),
        ({"n_outputs": 1}, "multiclass", 2, ("binary", "sigmoid")),
        ({"n_outputs": 1, "activation": "sigmoid"}, "multiclass", 2, ("binary", "sigmoid")),
        ({"n_outputs": None, "activation": "auto"}, "multiclass", 2, ("multiclass", "softmax")),
    ],
)
def test_resolve_task(head, data_task, n_classes, expected):
    """multi-label → sigmoid; one output for two classes → binary sigmoid; else per class."""
    assert resolve_task(head, data_task, n_classes) == expected
    assert resolve_task(OmegaConf.create(head), data_task, n_classes) == expected


def test_softmax_with_multilabel_data_is_an_error():
    with pytest.raises(ConfigError, match="head.activation=softmax"):
        resolve_task({"activation": "softmax"}, "multilabel", 4)
    with pytest.raises(ConfigError, match="head.activation=softmax"):
        resolve_activation("softmax", "multilabel")


@pytest.mark.parametrize(
    ("head", "n_classes", "match"),
    [
        ({"n_outputs": 1}, 3, "3 classes"),
        ({"n_outputs": 1, "activation": "softmax"}, 2, "softmax"),
        ({"n_outputs": 4}, 3, "n_outputs=4"),
        ({"n_outputs": 2}, 3, "3 classes"),
    ],
)
def test_bad_n_outputs(head, n_classes, match):
    """n_outputs=1 needs 2 classes and no softmax; otherwise it must equal the class count."""
    with pytest.raises(ConfigError, match=match):
        resolve_task(head, "multiclass", n_classes)


def test_n_outputs_with_multilabel_must_match_label_count():
    assert resolve_task({"n_outputs": 5}, "multilabel", 5) == ("multilabel", "sigmoid")
    with pytest.raises(ConfigError, match="n_outputs=1"):
        resolve_task({"n_outputs": 1}, "multilabel", 5)


# --- check_model_fits_data ----------------------------------------------------------------


class _Encoder:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def feature_names(self) -> list[str]:
        return self.names


def _data(spatial_dims: int = 2, features: list[str] | None = None) -> SimpleNamespace:
    """A set-up datamodule as far as check_model_fits_data looks at it."""
    encoder = _Encoder(features) if features else None
    return SimpleNamespace(
        spatial_dims=spatial_dims,
        meta_variables=len(features) if features else None,
        meta_encoder=encoder,
    )


def _cfg(backbone: str = "resnet18", meta_variables: int | None = None):
    return OmegaConf.create(
        {"backbone": {"name": backbone}, "head": {"meta_variables": meta_variables}}
    )


def test_matching_model_and_data_pass():
    check_model_fits_data(_cfg("resnet18"), _data(2))
    check_model_fits_data(_cfg("3d_resnet18"), _data(3))
    check_model_fits_data(_cfg("resnet18", 3), _data(2, ["age", "sex=F", "sex=M"]))
    check_model_fits_data(_cfg("resnet18", None), _data(2, ["age", "sex=F", "sex=M"]))


def test_2d_backbone_with_3d_data_suggests_a_3d_backbone():
    with pytest.raises(ConfigError, match=r"resnet18.*2D images.*3D volumes.*3d_"):
        check_model_fits_data(_cfg("resnet18"), _data(3))


def test_3d_backbone_with_2d_data_is_an_error():
    with pytest.raises(ConfigError, match=r"3d_resnet18.*3D volumes.*2D images.*2D backbone"):
        check_model_fits_data(_cfg("3d_resnet18"), _data(2))


def test_meta_variables_without_metadata_is_an_error():
    with pytest.raises(ConfigError, match=r"head.meta_variables=4.*no metadata"):
        check_model_fits_data(_cfg("resnet18", 4), _data(2))


def test_meta_variables_mismatch_names_both_numbers():
    with pytest.raises(ConfigError, match=r"meta_variables=5.*encode to 3 variables") as info:
        check_model_fits_data(_cfg("resnet18", 5), _data(2, ["age", "sex=F", "sex=M"]))
    assert "age, sex=F, sex=M" in str(info.value)
