"""``medclf-export ckpt_path=PATH format=onnx|torchscript``: a checkpoint as a model file that
needs neither medclf nor Lightning to run.

The exported model takes ``image``, (N, C, H, W) or (N, C, D, H, W) float32 in [0, 1] exactly
as the platform feeds it (the backbone's mean/std normalisation is inside), plus ``metadata``
(N, M) float32, encoded as in training, when the head has a metadata block; it returns
``probabilities`` (N, classes): softmax or per-label sigmoid outputs, a binary one-output head's
p as [1 - p, p] (medclf.models.network.Network, the path every medclf inference takes). It
also gives ``prediction`` (N, classes) int64, 1 where a class is predicted by medclf's
decision rule at the trained threshold (medclf.models.outputs.decide): the ONNX model's
second output, a TorchScript model's ``prediction`` method. The batch axis is dynamic; the
spatial size is the one the model was trained at. A stacked ensemble's folder exports as one
model of its members and metalearner (medclf.inference.export_stack). Class names and the
input spec are written into the ONNX ``metadata_props``, into a TorchScript file's extra file
``medclf.json``, and for both formats beside it as ``<output>.json``.

ONNX uses torch's TorchScript-based exporter (``dynamo=False``). On torch 2.14 the default
torch.export-based exporter needs the extra onnxscript package, cannot write opset 17 (its
conversion down from opset 18 fails) and takes about ten times as long (resnet18: 5 s against
0.4 s) for the same outputs.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError, did_you_mean
from medclf.inference.spec import InputSpec

log = logging.getLogger("medclf.export")

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
VERIFY_ATOL = 1e-4


def exported_model(module: Any) -> Any:
    """``module`` as a plain module: ``forward`` gives the class probabilities, ``prediction``
    the decision rule's 0/1 per class, and ``both`` the pair (the ONNX graph's outputs)."""
    import torch

    from medclf.models.network import Network
    from medclf.models.outputs import decide

    spec = InputSpec.of(module)

    class Exported(Network):
        def prediction(self, image: torch.Tensor, metadata: torch.Tensor | None = None):
            return decide(self.predict_proba(image, metadata), spec.task, spec.threshold).long()

        def both(self, image: torch.Tensor, metadata: torch.Tensor | None = None):
            probs = self.predict_proba(image, metadata)
            return probs, decide(probs, spec.task, spec.threshold).long()

    return Exported(module).eval()


def output_path(ckpt_path: Path, fmt: str, output: str | Path | None) -> Path:
    """Where the export goes (default: beside the checkpoint); its folder exists and is writable."""
    suffix = FORMATS[fmt]
    path = Path(output).expanduser() if output else ckpt_path.with_suffix(suffix)
    if path.is_dir():
        raise ConfigError(
            f"output={path} is a folder; give a file name, e.g. output={path / ckpt_path.stem}"
            f"{suffix}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = "a file has that name" if isinstance(error, FileExistsError) else error.strerror
        raise ConfigError(
            f"output={path}: cannot create its folder {path.parent} ({reason or error}); "
            "give a path in a writable folder."
        ) from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(
            f"output={path} is not writable; give a path in a writable folder with output=..."
        )
    return path


def spatial_size(spec: InputSpec, input_size: Any) -> list[int]:
    """The spatial shape of the exported input: ``input_size`` or what the checkpoint says."""
    from medclf.models.backbones import get_spec

    dims = spec.spatial_dims
    size = spec.spatial_size if input_size is None else input_size
    size = [size] * dims if isinstance(size, int) else list(size)
    example = "[D,H,W]" if dims == 3 else "[H,W]"
    if len(size) != dims or any(isinstance(v, bool) or not isinstance(v, int) for v in size):
        raise ConfigError(
            f"input_size={input_size!r}: give one integer or {example} for this {dims}D model."
        )
    minimum = get_spec(spec.backbone["name"]).min_size
    if min(size) < minimum:
        raise ConfigError(
            f"input_size={size} is too small for backbone {spec.backbone['name']}, which "
            f"needs at least {minimum} per side."
        )
    return size


def describe_io(module: Any, size: list[int], batch_size: int | None) -> dict[str, Any]:
    """The exported model's inputs and output as plain data (the sidecar and metadata_props)."""
    from medclf.data.metadata import MetadataEncoder

    info = InputSpec.of(module)
    batch = batch_size or "batch"
    layout = "NCDHW" if info.spatial_dims == 3 else "NCHW"
    inputs = [
        {
            "name": "image",
            "shape": [batch, info.channels, *size],
            "layout": layout,
            "dtype": "float32",
            "range": [0.0, 1.0],
            "normalization": "inside the model (the backbone's mean and std)",
        }
    ]
    meta_variables = module.head.meta_variables or 0
    if meta_variables:
        features = MetadataEncoder(info.metadata).feature_names() if info.metadata else []
        inputs.append(
            {
                "name": "metadata",
                "shape": [batch, meta_variables],
                "dtype": "float32",
                "features": features,
                "encoding": info.metadata,
            }
        )
    activation = module.head.activation
    classes = len(info.class_names)
    rule = {
        "multiclass": "1 for the most probable class",
        "binary": "1 for the second class when its probability >= threshold, else the first",
        "multilabel": "1 for every label whose probability >= threshold",
    }[info.task]
    return {
        "class_names": info.class_names,
        "task": info.task,
        "threshold": info.threshold,
        "backbone": info.backbone["name"],
        "inputs": inputs,
        "outputs": [
            {
                "name": "probabilities",
                "shape": [batch, classes],
                "dtype": "float32",
                "activation": "sigmoid, as [1 - p, p]" if info.task == "binary" else activation,
            },
            {"name": "prediction", "shape": [batch, classes], "dtype": "int64", "rule": rule},
        ],
        **_sets(info.conformal),
    }


SET_RULES = {
    "lac": "class c is in an image's set when 1 - p_c <= thresholds[j][c]",
    "aps": (
        "class c is in an image's set when the summed probability of the classes ranked at or "
        "above c (ties by class order) <= thresholds[j][c]"
    ),
}


def _sets(state: dict | None) -> dict[str, Any]:
    """The documented post-processing of the probabilities into conformal prediction sets
    (medclf.evaluation.conformal.predict_sets), for a model fitted with them."""
    if not state:
        return {}
    problems = (
        "one problem per label j on its probabilities [1 - p_j, p_j] (absent, present): the "
        "label is 'yes' when only present is in its set, 'no' when only absent, else 'unsure'"
        if state["task"] == "multilabel"
        else "one problem (j = 0) on the probabilities output"
    )
    return {
        "prediction_sets": {
            "rule": f"{SET_RULES[state['score']]}; a null threshold admits every class; "
            f"{problems}; abstain (refer the case) when a set is not exactly one class or a "
            "label is unsure",
            "tolerance": 1e-10,
            **state,
        }
    }


def export(
    ckpt_path: str | Path,
    format: str = "onnx",
    output: str | Path | None = None,
    opset: int = 17,
    batch_size: int | None = None,
    input_size: Any = None,
    verify: bool = True,
) -> Path:
    """Export checkpoint ``ckpt_path`` as ``format``; returns the written file."""
    from medclf.models.checkpoint import load_module

    if format not in FORMATS:
        raise ConfigError(
            f"format={format!r} is not an export format.{did_you_mean(format, FORMATS)} "
            f"Use format=onnx or format=torchscript."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(
            f"batch_size={batch_size!r}: give a positive integer, or null for any batch size."
        )
    if format == "onnx" and (isinstance(opset, bool) or not isinstance(opset, int)):
        raise ConfigError(f"opset={opset!r}: give an ONNX opset version such as opset=17.")
    ckpt_path = Path(ckpt_path).expanduser()
    from medclf.inference.stacking import is_ensemble

    stacked = is_ensemble(ckpt_path)  # a stacked ensemble (medclf-ensemble): one model of all
    if not stacked and not ckpt_path.is_file():  # before importing torch: answered at once
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such file. Give the .ckpt written by train.py (its run "
            "directory's checkpoints/ folder)."
        )
    path = output_path(ckpt_path / "model" if stacked else ckpt_path, format, output)
    if stacked:
        from medclf.inference.export_stack import stacked_model

        module, model, described = stacked_model(ckpt_path)
    else:
        module = load_module(ckpt_path)
        model, described = exported_model(module), {}
    size = spatial_size(InputSpec.of(module), input_size)
    spec = describe_io(module, size, batch_size)
    spec.update(**described, format=format, checkpoint=str(ckpt_path))
    if stacked:  # a member's prediction sets do not hold for the ensemble's probabilities
        spec.pop("prediction_sets", None)
    example = _random_inputs(spec, batch_size or 2)
    try:
        if format == "onnx":
            spec["opset"] = _export_onnx(model, example, path, spec, opset, batch_size is None)
        else:
            _export_torchscript(model, example, path, spec)
        sidecar = path.with_name(path.name + ".json")
        sidecar.write_text(json.dumps(spec, indent=2) + "\n")
    except OSError as error:
        raise ConfigError(
            f"output={path}: cannot write it ({error.strerror or error}); give a path in a "
            "writable folder with enough space."
        ) from None
    if verify:
        _verify(model if stacked else module, path, spec, format, batch_size or 3)
    names = ", ".join(spec["class_names"])
    shapes = ", ".join(f"{i['name']} {i['shape']}" for i in spec["inputs"])
    log.info("exported %s → %s (%s; classes: %s)", ckpt_path, path, shapes, names)
    log.info("model description: %s", sidecar)
    return path


def _random_inputs(spec: dict[str, Any], batch: int) -> tuple:
    import torch

    generator = torch.Generator().manual_seed(0)
    return tuple(
        torch.rand(batch, *item["shape"][1:], generator=generator) for item in spec["inputs"]
    )


def _export_onnx(model, example, path: Path, spec, opset: Any, dynamic: bool) -> int:
    """TorchScript-based ONNX export; class names and the spec go into metadata_props."""
    import onnx
    import torch

    class BothOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor):
            return self.model.both(*inputs)

    names = [item["name"] for item in spec["inputs"]]
    outputs = [item["name"] for item in spec["outputs"]]
    axes = {name: {0: "batch"} for name in [*names, *outputs]} if dynamic else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX")
        try:
            torch.onnx.export(
                BothOutputs().eval(),
                example,
                str(path),
                input_names=names,
                output_names=outputs,
                opset_version=opset,
                dynamic_axes=axes,
                dynamo=False,
            )
        except RuntimeError as error:
            if "opset" not in str(error).lower():
                raise
            raise ConfigError(
                f"opset={opset}: {str(error).splitlines()[0]}. Use a version torch "
                f"{torch.__version__} supports, e.g. opset=17."
            ) from None
    proto = onnx.load(str(path))
    props = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in spec.items()
        if key != "format"
    }
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = f"medclf {spec['backbone']} classifier: {', '.join(spec['class_names'])}"
    onnx.save(proto, str(path))
    return opset


def _export_torchscript(model, example, path: Path, spec) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        traced = torch.jit.trace_module(model, {"forward": example, "prediction": example})
        torch.jit.save(traced, str(path), _extra_files={"medclf.json": json.dumps(spec)})


def _verify(module, path: Path, spec, fmt: str, batch: int) -> None:
    """Run the written file on a random batch: its probabilities must be the module's."""
    import numpy as np
    import torch

    inputs = _random_inputs(spec, batch)
    with torch.no_grad():
        expected = module.predict_proba(*inputs).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {item["name"]: x.numpy() for item, x in zip(spec["inputs"], inputs, strict=True)}
        got = session.run(["probabilities"], feed)[0]
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
            loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = loaded(*inputs).numpy()
    diff = float(np.abs(got - expected).max())
    if got.shape != expected.shape or diff > VERIFY_ATOL:
        raise RuntimeError(
            f"{path} does not reproduce the PyTorch model: outputs {got.shape} vs "
            f"{expected.shape}, max difference {diff:.2e}; please report this backbone."
        )
    log.info("verified on a random batch of %d: max difference to PyTorch %.1e", batch, diff)


def run(cfg: DictConfig) -> Path:
    """Export as configured (conf/export.yaml)."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(
            "ckpt_path is required: medclf-export ckpt_path=PATH/TO/checkpoint.ckpt "
            "(the .ckpt written by train.py, in its run directory's checkpoints/ folder)."
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    return export(
        ckpt_path=str(plain["ckpt_path"]),
        format=str(plain["format"]),
        output=plain.get("output"),
        opset=plain.get("opset", 17),
        batch_size=plain.get("batch_size"),
        input_size=plain.get("input_size"),
        verify=bool(plain.get("verify", True)),
    )
