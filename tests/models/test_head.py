"""AUCMEDI's classification head: layer structure and parameter counts by formula."""

from __future__ import annotations

import pytest
import torch

from medclf.models.head import ClassificationHead


def dense(n_in: int, n_out: int) -> int:
    """Parameters of Keras Dense(n_out) on n_in inputs: weights + biases."""
    return (n_in + 1) * n_out


@pytest.mark.parametrize("fcl_dropout", [True, False])
@pytest.mark.parametrize("meta", [None, 7])
def test_parameter_count_matches_aucmedi_formula(fcl_dropout: bool, meta: int | None) -> None:
    features, n_labels = 1024, 5
    head = ClassificationHead(features, n_labels, fcl_dropout=fcl_dropout, meta_variables=meta)
    width = features
    expected = 0
    if fcl_dropout:
        expected += dense(width, 512)
        width = 512
    if meta:
        expected += dense(width + meta, 512) + dense(512, 256)
        width = 256
    expected += dense(width, n_labels)
    assert sum(p.numel() for p in head.parameters()) == expected


def test_layer_order_and_dropout_rate() -> None:
    head = ClassificationHead(64, 3, fcl_dropout=True, meta_variables=2)
    layers = [type(m).__name__ for m in head.modules() if not list(m.children())]
    assert layers == [
        "Linear",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert all(m.p == 0.3 for m in head.modules() if isinstance(m, torch.nn.Dropout))
    assert not any(isinstance(m, torch.nn.ReLU) for m in head.fcl.modules())


def test_global_average_pooling_2d_and_3d() -> None:
    head = ClassificationHead(8, 2, fcl_dropout=False).eval()
    x2 = torch.rand(3, 8, 5, 4)
    x3 = torch.rand(3, 8, 2, 5, 4)
    torch.testing.assert_close(head(x2), head.classifier(x2.mean(dim=(2, 3))))
    torch.testing.assert_close(head(x3), head.classifier(x3.mean(dim=(2, 3, 4))))


def test_metadata_is_concatenated_after_fcl() -> None:
    head = ClassificationHead(8, 2, fcl_dropout=True, meta_variables=3).eval()
    features, meta = torch.rand(4, 8, 2, 2), torch.rand(4, 3)
    pooled = head.fcl(features.mean(dim=(2, 3)))
    expected = head.classifier(head.meta(torch.cat([pooled, meta], dim=1)))
    torch.testing.assert_close(head(features, meta), expected)
    with pytest.raises(ValueError, match="metadata"):
        head(features)


def test_activation_softmax_and_sigmoid() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5]])
    soft = ClassificationHead(4, 3, activation="softmax").activate(logits)
    sig = ClassificationHead(4, 3, activation="sigmoid").activate(logits)
    torch.testing.assert_close(soft.sum(), torch.tensor(1.0))
    torch.testing.assert_close(sig, 1 / (1 + torch.exp(-logits)))
