"""The trained model in its MLflow run: an ``mlflow.pyfunc`` model (medclf.inference.pyfunc)
with a signature and an input example; its URI is the run's ``model_uri`` tag.

It is logged as MLflow's "model from code" (a three-line script naming the model class) with
the weights as an artifact, so nothing in it is a pickle."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch

from medclf.tracking import names
from medclf.tracking.logger import MLflowRunLogger

MODEL_CODE = """from mlflow.models import set_model

from medclf.inference.pyfunc import ClassifierModel

set_model(ClassifierModel())
"""


ENSEMBLE_CODE = """from mlflow.models import set_model

from medclf.inference.pyfunc import EnsembleModel

set_model(EnsembleModel())
"""


def _eager():
    """Run a ``model.compile=true`` module without compiling it again (for one example on the
    CPU)."""
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    return set_stance("force_eager") if set_stance else contextlib.nullcontext()


def log_model(
    tracker: MLflowRunLogger, module, example: torch.Tensor, metadata: torch.Tensor | None = None
) -> str:
    """Log ``module`` with a signature and an input example; returns the model URI, also set
    as the run's ``model_uri`` tag. The model takes images (and, with a metadata block,
    ``{"image", "metadata"}``) and returns class probabilities."""
    from medclf.inference.pyfunc import save_weights

    module = module.cpu().eval()
    image = example[:1].cpu().float().numpy()
    inputs = image
    meta = None
    if metadata is not None:
        meta = metadata[:1].cpu().float()
        inputs = {"image": image, "metadata": meta.numpy()}
    with torch.no_grad(), _eager():
        output = module.predict_proba(torch.from_numpy(image), meta).numpy()
    return _log_pyfunc(
        tracker, MODEL_CODE, lambda tmp: {"weights": str(save_weights(module, tmp))}, inputs, output
    )


def log_ensemble_model(tracker: MLflowRunLogger, folder: Path) -> str:
    """Log a stacked ensemble (its ``ensemble`` folder) as an MLflow model over images, with
    a signature and an input example of the members' input shape; returns the model URI,
    also the run's ``model_uri`` tag."""
    import numpy as np

    from medclf.inference.predict import load_models
    from medclf.inference.stacking import load_ensemble, predict_stacked

    ensemble = load_ensemble(folder)
    models, spec = load_models(ensemble.checkpoints())
    image = np.zeros((1, spec.channels, *spec.spatial_size), dtype=np.float32)
    width = models[0].head.meta_variables or 0
    meta = torch.zeros(1, width) if width else None
    inputs = image if meta is None else {"image": image, "metadata": meta.numpy()}
    output = predict_stacked(ensemble, ensemble.groups(models), torch.from_numpy(image), meta)
    return _log_pyfunc(tracker, ENSEMBLE_CODE, lambda _: {"ensemble": str(folder)}, inputs, output)


def _log_pyfunc(tracker: MLflowRunLogger, code_text: str, artifacts, inputs, output) -> str:
    """Log a models-from-code pyfunc (``code_text``) into the tracker's run with the
    ``artifacts`` (a function of the temporary folder) and a signature from the example
    ``inputs`` and ``output``; returns the model URI, also the run's ``model_uri`` tag."""
    import mlflow
    from mlflow.models import infer_signature

    from medclf.compat import mlflow_requirement_check_without_module_map
    from medclf.inference.pyfunc import PARAMS

    requirements = [f"torch=={torch.__version__.split('+')[0]}", "medclf"]
    mlflow.set_tracking_uri(tracker.tracking_uri)
    with (
        mlflow.start_run(run_id=tracker.run_id),  # the caller sets the final status after
        tempfile.TemporaryDirectory() as tmp,
        mlflow_requirement_check_without_module_map(requirements),
    ):
        code = Path(tmp) / "medclf_model.py"
        code.write_text(code_text)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts=artifacts(Path(tmp)),
            signature=infer_signature(inputs, output, params=PARAMS),
            input_example=inputs,
            pip_requirements=requirements,
        )
    tracker.set_tags({names.MODEL_URI: info.model_uri})
    return info.model_uri
