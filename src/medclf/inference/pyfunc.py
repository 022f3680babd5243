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
and weights, loaded back with ``torch.load(weights_only=True)``. A model with an
out-of-distribution gate (``ood.method``, the default) answers ``{"output": "ood_score"}``
and ``{"output": "ood"}`` (the score above the validation split's quantile).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch

from medclf.console import TYPE_HINT_ADVICE, without_warning

PARAMS = {"output": "probabilities", "threshold": -1.0}  # -1: the trained threshold
OUTPUTS = "probabilities, prediction, set, abstain, ood_score or ood"


def _inputs(model_input) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image, metadata) tensors from images or ``{"image": ..., "metadata": ...}``."""
    if isinstance(model_input, dict):
        image = torch.as_tensor(np.asarray(model_input["image"], dtype=np.float32))
        metadata = torch.as_tensor(np.asarray(model_input["metadata"], dtype=np.float32))
        return image, metadata
    return torch.as_tensor(np.asarray(model_input, dtype=np.float32)), None


def _ood(module, image, metadata, output: str) -> np.ndarray:
    """The module's out-of-distribution scores (``ood_score``) or flags (``ood``)."""
    from medclf.audit import ood

    if module.ood is None:
        raise ValueError("this model has no out-of-distribution gate: train with ood.method")
    with torch.no_grad():
        features, logits = module.features_and_logits(image, metadata)
    scores = ood.score(module.ood, logits.float().numpy(), features.float().numpy())
    return scores if output == "ood_score" else ood.flags(module.ood, scores)


def _labels(probs: np.ndarray, names: list[str], task: str, trained, threshold: float):
    from medclf.models.outputs import predicted_labels

    threshold = trained if threshold < 0 else threshold  # as trained (one per label, if so)
    return np.asarray(predicted_labels(probs, names, task, threshold))


with without_warning(TYPE_HINT_ADVICE):  # its input is images or a dict: no type hint fits

    class ClassifierModel(mlflow.pyfunc.PythonModel):
        """Rebuilds the ClassificationModule from its saved hyperparameters and weights."""

        def load_context(self, context) -> None:
            from medclf.models.module import ClassificationModule

            saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
            hparams = {**saved["hparams"], "compile": False, "channels_last": False}
            self.module = ClassificationModule(**hparams).eval()
            self.module.load_state_dict(saved["state_dict"])

        def predict(self, context, model_input, params=None):  # no type hint: MLflow validates
            image, metadata = _inputs(model_input)
            params = {**PARAMS, **(params or {})}
            output, module = params["output"], self.module
            if output in ("ood_score", "ood"):
                return _ood(module, image, metadata, output)
            with torch.no_grad():
                probs = module.predict_proba(image, metadata).numpy()
            if output == "probabilities":
                return probs
            if output in ("set", "abstain"):
                from medclf.inference.table import set_columns

                if module.conformal is None:
                    raise ValueError(
                        "this model has no prediction sets: train with conformal.alpha"
                    )
                return np.asarray(set_columns(probs, module.class_names, module.conformal)[output])
            if output != "prediction":
                raise ValueError(f"params output={output!r}: use {OUTPUTS}")
            names, task = module.class_names, module.task
            return _labels(probs, names, task, module.threshold, float(params["threshold"]))

    class EnsembleModel(ClassifierModel):
        """A stacked ensemble (medclf.inference.stacking): its members' probabilities, each
        averaged over its folds, combined by its metalearner; the same inputs and ``params``
        as :class:`ClassifierModel`. ``ood_score``/``ood`` are the first member's gate (it
        asks whether an image is like the training data, which the members share);
        ``set``/``abstain`` are refused: the members' sets are calibrated for their own
        probabilities, not the metalearner's. The artifact holds the ensemble's folder: its
        spec, the metalearner's rows (plain arrays) and the member checkpoints, loaded with
        ``weights_only``."""

        def load_context(self, context) -> None:
            from medclf.inference.predict import load_models
            from medclf.inference.stacking import load_ensemble

            self.ensemble = load_ensemble(context.artifacts["ensemble"])
            models, _ = load_models(self.ensemble.checkpoints())
            self.groups = self.ensemble.groups(models)

        def predict(self, context, model_input, params=None):  # no type hint: MLflow validates
            from medclf.inference.stacking import predict_stacked

            image, metadata = _inputs(model_input)
            params = {**PARAMS, **(params or {})}
            output, ensemble = params["output"], self.ensemble
            if output in ("ood_score", "ood"):
                return _ood(self.groups[0][0], image, metadata, output)
            if output in ("set", "abstain"):
                raise ValueError(
                    f"params output={output!r}: a stacked ensemble has no prediction sets (its "
                    "members' are calibrated for their own probabilities, not the "
                    "metalearner's); use probabilities, prediction, ood_score or ood"
                )
            probs = predict_stacked(ensemble, self.groups, image, metadata)
            if output == "probabilities":
                return probs
            if output != "prediction":
                raise ValueError(f"params output={output!r}: use {OUTPUTS}")
            names, task = ensemble.class_names, ensemble.task
            return _labels(probs, names, task, ensemble.threshold, float(params["threshold"]))


def save_weights(module, directory: Path) -> Path:
    """The module's hyperparameters and state dict, as plain data for weights_only loading."""
    path = directory / "weights.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save({"hparams": dict(module.hparams), "state_dict": state}, path)
    return path
