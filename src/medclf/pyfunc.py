"""The MLflow model of a run whose head has a metadata block: ``mlflow.pyfunc``.

The pytorch flavour feeds a model one tensor; a metadata model needs two. This pyfunc model
takes ``{"image": (N, C, *spatial) float32 in [0, 1], "metadata": (N, M) float32}`` (the
metadata already encoded as in training: standardised numbers, missing flags, one-hot
categories; see medclf.data.metadata) and returns one probability per class. Its artifact
holds only hyperparameters and weights, loaded back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch


class MetadataModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the ClassificationModule from its saved hyperparameters and weights."""

    def load_context(self, context) -> None:
        from medclf.models.module import ClassificationModule

        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.module = ClassificationModule(**saved["hparams"]).eval()
        self.module.load_state_dict(saved["state_dict"])

    def predict(self, context, model_input, params=None):  # no type hint: MLflow would validate it
        image = torch.as_tensor(np.asarray(model_input["image"], dtype=np.float32))
        metadata = torch.as_tensor(np.asarray(model_input["metadata"], dtype=np.float32))
        with torch.no_grad():
            probs = self.module.head.activate(self.module(image, metadata))
            return self.module.class_probabilities(probs).numpy()


def save_weights(module, directory: Path) -> Path:
    """The module's hyperparameters and state dict, as plain data for weights_only loading."""
    path = directory / "weights.pt"
    torch.save({"hparams": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path
