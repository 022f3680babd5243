"""Load a trained model from its Lightning checkpoint, with nothing else needed.

A checkpoint's hyperparameters hold everything about the model (class names, channels,
image size, volume size, DICOM window, spatial dims, task, threshold, metadata encoding,
backbone and head config; see medclf.models.module), so eval, predict, export and Grad-CAM
read only the file (medclf.inference.spec.InputSpec). It is loaded with
``torch.load(weights_only=True)``: tensors and plain values, never code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from medclf.errors import ConfigError


def load_module(path: str | Path) -> Any:
    """The ClassificationModule of checkpoint ``path``, on the CPU, in eval mode, uncompiled."""
    from medclf.models.module import ClassificationModule

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file. Give the .ckpt written by train.py (its run "
            "directory's checkpoints/ folder, or the MLflow run's 'checkpoints' artifacts)."
        )
    try:
        module = ClassificationModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, compile=False
        )
    except (
        pickle.UnpicklingError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        EOFError,
    ) as error:
        raise ConfigError(
            f"ckpt_path={path} is not a medclf checkpoint that loads safely "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300]}). Only files written "
            "by train.py load; nothing else in a checkpoint is ever run."
        ) from error
    return module.eval()


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's plain contents (tensors memory-mapped), loaded with weights_only."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise ConfigError(
            f"ckpt_path={path} is not a checkpoint that loads safely ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300]}). Give a .ckpt written by train.py."
        ) from error
