"""The MLflow model of a run: an ``mlflow.pyfunc`` model over the trained network.

``mlflow.pyfunc.load_model(uri).predict(images)`` takes images (N, C, *spatial) float32 in
[0, 1], or ``{"image": images, "metadata": encoded}`` for a model with a metadata block (the
metadata encoded as in training: standardised numbers, missing flags, one-hot categories;
see medclf.data.metadata), and returns one probability per class (N, classes), through the
same ``predict_proba`` as every other medclf inference. ``params={"output": "prediction"}``
returns the predicted class names instead (medclf.models.outputs, at the trained threshold
unless ``params={"threshold": t}``); for a model with conformal prediction sets
(``conformal.alpha``), ``{"output": "set"}`` returns each image's set (``;``-joined class
names; multi-label: the labels decided yes) and ``{"output": "abstain"}`` whether it should
be referred (medclf.inference.table.set_columns). The artifact holds only hyperparameters
and weights, loaded back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch

PARAMS = {"output": "probabilities", "threshold": -1.0}  # -1: the trained threshold


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the ClassificationModule from its saved hyperparameters and weights."""

    def load_context(self, context) -> None:
        from medclf.models.module import ClassificationModule

        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        hparams = {**saved["hparams"], "compile": False, "channels_last": False}
        self.module = ClassificationModule(**hparams).eval()
        self.module.load_state_dict(saved["state_dict"])

    def predict(self, context, model_input, params=None):  # no type hint: MLflow would validate it
        from medclf.models.outputs import predicted_labels

        if isinstance(model_input, dict):
            image = torch.as_tensor(np.asarray(model_input["image"], dtype=np.float32))
            metadata = torch.as_tensor(np.asarray(model_input["metadata"], dtype=np.float32))
        else:
            image, metadata = torch.as_tensor(np.asarray(model_input, dtype=np.float32)), None
        with torch.no_grad():
            probs = self.module.predict_proba(image, metadata).numpy()
        params = {**PARAMS, **(params or {})}
        if params["output"] == "probabilities":
            return probs
        if params["output"] in ("set", "abstain"):
            from medclf.inference.table import set_columns

            if self.module.conformal is None:
                raise ValueError("this model has no prediction sets: train with conformal.alpha")
            columns = set_columns(probs, self.module.class_names, self.module.conformal)
            return np.asarray(columns[params["output"]])
        if params["output"] != "prediction":
            raise ValueError(
                f"params output={params['output']!r}: use probabilities, prediction, set or abstain"
            )
        threshold = float(params["threshold"])
        if threshold < 0:
            threshold = self.module.threshold  # as trained (one per label, if so chosen)
        names = self.module.class_names
        return np.asarray(predicted_labels(probs, names, self.module.task, threshold))


class EnsembleModel(ClassifierModel):
    """A stacked ensemble (medclf.inference.stacking): its members' probabilities, each
    averaged over its folds, combined by its metalearner; the same inputs and ``params`` as
    :class:`ClassifierModel` (``output`` probabilities or prediction, ``threshold``). The
    artifact holds the ensemble's folder: its spec, the metalearner's rows (plain arrays)
    and the member checkpoints, loaded with ``weights_only``."""

    def load_context(self, context) -> None:
        from medclf.inference.predict import load_models
        from medclf.inference.stacking import load_ensemble

        self.ensemble = load_ensemble(context.artifacts["ensemble"])
        models, _ = load_models(self.ensemble.checkpoints())
        self.groups = self.ensemble.groups(models)

    def predict(self, context, model_input, params=None):  # no type hint: MLflow would validate it
        from medclf.inference.stacking import predict_stacked
        from medclf.models.outputs import predicted_labels

        if isinstance(model_input, dict):
            image = torch.as_tensor(np.asarray(model_input["image"], dtype=np.float32))
            metadata = torch.as_tensor(np.asarray(model_input["metadata"], dtype=np.float32))
        else:
            image, metadata = torch.as_tensor(np.asarray(model_input, dtype=np.float32)), None
        probs = predict_stacked(self.ensemble, self.groups, image, metadata)
        params = {**PARAMS, **(params or {})}
        if params["output"] == "probabilities":
            return probs
        if params["output"] != "prediction":
            raise ValueError(f"params output={params['output']!r}: use probabilities or prediction")
        threshold = float(params["threshold"])
        threshold = self.ensemble.threshold if threshold < 0 else threshold
        names = self.ensemble.class_names
        return np.asarray(predicted_labels(probs, names, self.ensemble.task, threshold))


def save_weights(module, directory: Path) -> Path:
    """The module's hyperparameters and state dict, as plain data for weights_only loading."""
    path = directory / "weights.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save({"hparams": dict(module.hparams), "state_dict": state}, path)
    return path
