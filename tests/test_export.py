"""Exported ONNX and TorchScript models give the checkpoint's class probabilities, at any
batch size, and describe their inputs and classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_command, tiny_module, write_checkpoint
from medclf.errors import ConfigError
from medclf.inference.export import export
from medclf.models.module import ClassificationModule

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["benign", "malignant", "normal"]
# age (numeric, no gaps) + sex (two categories) → 3 metadata variables
METADATA = [
    {
        "name": "age",
        "kind": "numeric",
        "median": 50.0,
        "mean": 52.0,
        "std": 9.0,
        "indicator": False,
    },
    {"name": "sex", "kind": "categorical", "categories": ["f", "m"]},
]


def _checkpoint(tmp_path: Path, **overrides) -> tuple[Path, ClassificationModule]:
    """A randomly initialised model saved as train.py saves it (no training)."""
    module = tiny_module(**{"class_names": CLASSES, **overrides})
    return write_checkpoint(module, tmp_path / "model.ckpt"), module.eval()


def _logits(module: ClassificationModule, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(*inputs)


def _onnx_run(path: Path, **feed: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_onnx_matches_the_module_at_any_batch_size(tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    ckpt, module = _checkpoint(tmp_path)
    path = export(ckpt, "onnx", output=tmp_path / "out" / "model.onnx", verify=False)
    onnx.checker.check_model(str(path), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.shape == ["batch", 1, 32, 32]
    for batch in (3, 5):
        x = torch.rand(batch, 1, 32, 32)
        expected = torch.softmax(_logits(module, x), dim=1).numpy()
        assert np.ptp(expected, axis=0).max() > 1e-3  # the images give different outputs
        got, chosen = session.run(None, {"image": x.numpy()})
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert chosen.dtype == np.int64  # medclf's decision: the most probable class
        np.testing.assert_array_equal(chosen, np.eye(3, dtype=np.int64)[expected.argmax(1)])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "prediction"]
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == CLASSES and props["task"] == "multiclass"
    assert json.loads(props["inputs"])[0]["shape"] == ["batch", 1, 32, 32]
    sidecar = json.loads((tmp_path / "out" / "model.onnx.json").read_text())
    assert sidecar["class_names"] == CLASSES and sidecar["opset"] == 17


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_the_module(tmp_path: Path) -> None:
    ckpt, module = _checkpoint(tmp_path)
    path = export(ckpt, "torchscript", verify=False)
    assert path == tmp_path / "model.pt"  # default: beside the checkpoint
    extra = {"medclf.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["medclf.json"])["class_names"] == CLASSES
    for batch in (2, 4):
        x = torch.rand(batch, 1, 32, 32)
        with torch.no_grad():
            got = loaded(x)
        torch.testing.assert_close(got, torch.softmax(_logits(module, x), 1), atol=1e-5, rtol=0)
        chosen = loaded.prediction(x)
        assert chosen.tolist() == torch.eye(3, dtype=torch.long)[got.argmax(1)].tolist()


def test_metadata_model_exports_with_two_inputs(tmp_path: Path) -> None:
    ckpt, module = _checkpoint(
        tmp_path, head={"activation": "softmax", "meta_variables": 3}, metadata=METADATA
    )
    path = export(ckpt, "onnx", verify=False)
    spec = json.loads(path.with_name(path.name + ".json").read_text())
    assert [i["name"] for i in spec["inputs"]] == ["image", "metadata"]
    assert spec["inputs"][1]["shape"] == ["batch", 3]
    assert spec["inputs"][1]["features"] == ["age", "sex=f", "sex=m"]
    x, meta = torch.rand(4, 1, 32, 32), torch.randn(4, 3)
    expected = torch.softmax(_logits(module, x, meta), 1).numpy()
    got = _onnx_run(path, image=x.numpy(), metadata=meta.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4)
    other = _onnx_run(path, image=x.numpy(), metadata=(meta + 3).numpy())
    assert np.abs(other - got).max() > 1e-4  # metadata is an input, not a traced constant


def test_binary_model_returns_both_class_probabilities(tmp_path: Path) -> None:
    ckpt, module = _checkpoint(
        tmp_path,
        class_names=["negative", "positive"],
        task="binary",
        head={"activation": "sigmoid"},
    )
    path = export(ckpt, "onnx", verify=False)
    x = torch.rand(3, 1, 32, 32)
    p = torch.sigmoid(_logits(module, x)).numpy()  # (3, 1): the second class
    got = _onnx_run(path, image=x.numpy())
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, np.concatenate([1 - p, p], axis=1), atol=1e-4)


def test_3d_model_exports_to_onnx(tmp_path: Path) -> None:
    ckpt, module = _checkpoint(
        tmp_path,
        backbone={"name": "3d_resnet18", "pretrained": False},
        class_names=["a", "b"],
        spatial_dims=3,
    )
    path = export(ckpt, "onnx", input_size=16, verify=False)
    for batch in (2, 3):
        x = torch.rand(batch, 1, 16, 16, 16)
        got = _onnx_run(path, image=x.numpy())
        np.testing.assert_allclose(got, torch.softmax(_logits(module, x), 1).numpy(), atol=1e-4)


def test_user_errors_name_the_key(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read: the options are checked first")
    with pytest.raises(ConfigError, match="format='onx'.*Did you mean: onnx"):
        export(ckpt, "onx")
    with pytest.raises(ConfigError, match="opset='latest'"):
        export(ckpt, "onnx", opset="latest")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match="output=.*a_file"):
        export(ckpt, "onnx", output=tmp_path / "a_file" / "model.onnx")
    with pytest.raises(ConfigError, match="ckpt_path=.*nope.ckpt: no such file"):
        export(tmp_path / "nope.ckpt")


def _command(*overrides: str):
    """medclf-export as a user runs it."""
    from medclf.cli.export import main

    return run_command(main, ["medclf-export", *overrides])


def test_command_writes_the_model(tmp_path: Path) -> None:
    ckpt, _ = _checkpoint(tmp_path)
    output = tmp_path / "exported" / "m.onnx"
    done = _command(f"ckpt_path={ckpt}", "format=onnx", f"output={output}")
    assert done.returncode == 0, done.stderr
    assert output.is_file() and (tmp_path / "exported" / "m.onnx.json").is_file()
    assert "verified on a random batch" in done.stdout


def test_command_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    done = _command(f"ckpt_path={missing}")
    assert done.returncode != 0 and str(missing) in done.stderr
    assert not list(tmp_path.iterdir())  # and writes nothing
