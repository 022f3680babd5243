"""A stacked ensemble as one torch module for ``medclf-export ckpt_path=<stacked_ensemble
folder>`` (medclf.inference.export): every member network, each member's folds averaged, and
the metalearner written as torch operations, so the exported file needs neither medclf nor
scikit-learn. Inputs, outputs and the description sidecar are those of a single model's
export, plus the ensemble's members and metalearner.

The metalearners with a closed form export: ``logistic`` (softmax or sigmoid of a linear
map), ``naive_bayes`` (Gaussian log-likelihoods), ``best`` and ``weighted_mean`` (a weighted
sum of the members' probabilities). Trees, kernels and neighbours (``svm``,
``random_forest``, ``gradient_boosting``, ``knn``) do not: a ConfigError says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclf.errors import ConfigError
from medclf.inference.metalearners import Metalearner

EXPORTABLE = ("logistic", "naive_bayes", "best", "weighted_mean")


def _tensor(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def _scatter(classes: np.ndarray, k: int) -> torch.Tensor:
    """(C, K) 0/1: the estimator's classes (a subset, in its order) → the K class columns."""
    matrix = np.zeros((len(classes), k), dtype=np.float32)
    matrix[np.arange(len(classes)), classes.astype(int)] = 1.0
    return torch.from_numpy(matrix)


class LinearHead(nn.Module):
    """Logistic regression: softmax over C classes, one sigmoid for two classes, or one
    sigmoid per label (multi-label)."""

    def __init__(self, weight, bias, mode: str, scatter: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", _tensor(weight))
        self.register_buffer("bias", _tensor(bias))
        self.register_buffer("scatter", scatter if scatter is not None else torch.zeros(1))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.weight.T + self.bias
        if self.mode == "labels":
            return torch.sigmoid(z)
        if self.mode == "binary":
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], dim=1) @ self.scatter
        return torch.softmax(z, dim=1) @ self.scatter


class GaussianHead(nn.Module):
    """Gaussian naive Bayes: log prior plus the features' normal log-likelihoods, softmax.
    ``theta``/``var`` (P, C, F), ``prior`` (P, C): P problems (1, or one per label)."""

    def __init__(self, theta, var, prior, scatter: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("theta", _tensor(theta))
        self.register_buffer("var", _tensor(var))
        self.register_buffer("log_prior", torch.log(_tensor(prior)))
        self.register_buffer("scatter", scatter if scatter is not None else torch.zeros(1))
        self.labels = scatter is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x[:, None, None, :] - self.theta[None]  # (N, P, C, F)
        jll = self.log_prior[None] - 0.5 * (
            torch.log(2 * torch.pi * self.var).sum(-1)[None] + (diff**2 / self.var[None]).sum(-1)
        )
        probs = torch.softmax(jll, dim=-1)  # (N, P, C)
        if self.labels:
            return probs[:, :, 1]
        return probs[:, 0, :] @ self.scatter


class WeightedHead(nn.Module):
    """A weighted sum of the members' probability blocks (best member: one weight 1)."""

    def __init__(self, weights, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("weights", _tensor(weights))
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.reshape(x.shape[0], -1, self.n_classes)
        return (blocks * self.weights[None, :, None]).sum(1)


def torch_head(meta: Metalearner) -> nn.Module:
    """The metalearner as a torch module: features (N, M * K) → (N, K) probabilities."""
    k = len(meta.class_names)
    est = meta.estimator
    if meta.name not in EXPORTABLE:
        raise ConfigError(
            f"metalearner={meta.name} has no ONNX or TorchScript form here (only "
            f"{', '.join(EXPORTABLE)}); stack with one of those to export, or serve this "
            "ensemble with medclf-predict or its MLflow model."
        )
    if meta.name in ("best", "weighted_mean"):
        weights = (
            est.weights_ if meta.name == "weighted_mean" else np.eye(meta.n_members)[est.member_]
        )
        return WeightedHead(weights, k)
    if meta.task == "multilabel":
        parts = est.estimators_
        if meta.name == "logistic":
            return LinearHead(
                np.concatenate([p.coef_ for p in parts]),
                [p.intercept_[0] for p in parts],
                "labels",
                None,
            )
        return GaussianHead(
            [p.theta_ for p in parts],
            [p.var_ for p in parts],
            [p.class_prior_ for p in parts],
            None,
        )
    scatter = _scatter(est.classes_, k)
    if meta.name == "logistic":
        mode = "binary" if len(est.classes_) == 2 else "softmax"
        return LinearHead(est.coef_, est.intercept_, mode, scatter)
    return GaussianHead([est.theta_], [est.var_], [est.class_prior_], scatter)


class StackedNetwork(nn.Module):
    """Members (each a list of fold networks, averaged) and the metalearner in torch:
    ``forward``/``predict_proba`` give the ensemble's probabilities, ``prediction`` the
    decision rule's 0/1 per class, ``both`` the pair (the ONNX outputs)."""

    def __init__(self, ensemble, groups: list[list[Any]]) -> None:
        from medclf.models.network import Network

        super().__init__()
        self.members = nn.ModuleList(
            nn.ModuleList(Network(model).eval() for model in group) for group in groups
        )
        self.head = torch_head(ensemble.meta)
        self.task = ensemble.task
        self.threshold = ensemble.threshold

    def predict_proba(self, image: torch.Tensor, metadata: torch.Tensor | None = None):
        per = [
            torch.stack([net(image, metadata) for net in group]).mean(0) for group in self.members
        ]
        return self.head(torch.cat(per, dim=1))

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None):
        return self.predict_proba(image, metadata)

    def prediction(self, image: torch.Tensor, metadata: torch.Tensor | None = None):
        from medclf.models.outputs import decide

        return decide(self.predict_proba(image, metadata), self.task, self.threshold).long()

    def both(self, image: torch.Tensor, metadata: torch.Tensor | None = None):
        from medclf.models.outputs import decide

        probs = self.predict_proba(image, metadata)
        return probs, decide(probs, self.task, self.threshold).long()


def stacked_model(folder: str | Path) -> tuple[Any, StackedNetwork, dict[str, Any]]:
    """(a member module: the input spec, the network to export, what the description says
    of the ensemble) for medclf.inference.export."""
    from medclf.inference.predict import load_models
    from medclf.inference.stacking import load_ensemble

    ensemble = load_ensemble(Path(folder).expanduser())
    models, _ = load_models(ensemble.checkpoints())
    network = StackedNetwork(ensemble, ensemble.groups(models)).eval()
    backbones = sorted({str(m.hparams["backbone"]["name"]) for m in models})
    described = {
        "class_names": ensemble.class_names,
        "task": ensemble.task,
        "threshold": ensemble.threshold,
        "backbone": "stacked ensemble of " + ", ".join(backbones),
        "ensemble": {
            "members": [m.name for m in ensemble.members],
            "metalearner": ensemble.meta.name,
            "models_per_member": [len(m.checkpoints) for m in ensemble.members],
        },
    }
    return models[0], network, described
