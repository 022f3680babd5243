"""predict.py: one row per image with the checkpoint's class names, test-time augmentation,
channel conversion, metadata models, 3D volumes and ensembles."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CLASSES
from hydra import compose, initialize_config_dir

from helpers import run_command, tiny_module, write_checkpoint
from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.inference.predict import predict
from medclf.models.module import ClassificationModule

PROBS = [f"prob_{name}" for name in CLASSES]


def save_checkpoint(path: Path, **kwargs) -> ClassificationModule:
    torch.manual_seed(kwargs.pop("seed", 0))
    module = tiny_module(**{"class_names": CLASSES, **kwargs})
    write_checkpoint(module, path)
    return module.eval()


def run_predict(tmp_path: Path, *overrides: str) -> pd.DataFrame:
    output = tmp_path / "out" / "preds.csv"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=[f"output={output}", *overrides])
    predict(cfg)
    return pd.read_csv(output)


def prepared(path: Path, size: int = 32, channels: int = 1) -> torch.Tensor:
    """The image as the model sees it (decoded, resized like the validation split)."""
    from medclf.data.io import read_raw
    from medclf.data.transforms import build_transform

    return build_transform(size, channels=channels)(image=read_raw(path))["image"][None]


def test_folder_rows_columns_and_probabilities(tmp_path, image_folder, tiny_checkpoint) -> None:
    ckpt, module = tiny_checkpoint
    table = run_predict(tmp_path, f"ckpt_path={ckpt}", f"input={image_folder}")
    assert list(table.columns) == ["sample", "prediction", *PROBS]  # as test_predictions.csv
    assert len(table) == 36
    assert np.allclose(table[PROBS].sum(1), 1.0, atol=1e-5)
    first = image_folder / table["sample"][0]
    with torch.no_grad():
        expected = module.head.activate(module(prepared(first)))[0].numpy()
    assert table.loc[0, PROBS].to_numpy(float) == pytest.approx(expected, abs=1e-5)
    assert table["prediction"][0] == CLASSES[int(expected.argmax())]


def test_tta_one_equals_none_and_more_views_average(tmp_path, image_folder, tiny_checkpoint):
    from medclf.inference.inputs import tta_views

    base = [f"ckpt_path={tiny_checkpoint[0]}", f"input={image_folder}"]
    plain = run_predict(tmp_path, *base)
    one = run_predict(tmp_path, *base, "tta=1")
    eight = run_predict(tmp_path, *base, "tta=8")
    pd.testing.assert_frame_equal(plain, one)
    assert not np.allclose(eight[PROBS], plain[PROBS], atol=1e-4)
    assert np.allclose(eight[PROBS].sum(1), 1.0, atol=1e-5)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = tta_views(x, 8)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # all distinct
    assert len(tta_views(torch.zeros(1, 1, 4, 6), 4)) == 4  # non-square: flips only
    with pytest.raises(ConfigError, match="tta=5"):
        tta_views(torch.zeros(1, 1, 4, 6), 5)


def test_rgb_model_given_grey_images_converts_with_a_warning(tmp_path, image_folder, caplog):
    save_checkpoint(tmp_path / "rgb.ckpt", in_chans=3)
    with caplog.at_level(logging.WARNING):
        table = run_predict(tmp_path, f"ckpt_path={tmp_path / 'rgb.ckpt'}", f"input={image_folder}")
    assert len(table) == 36
    assert "36 of 36 images had another channel count" in caplog.text


def test_csv_input_with_metadata(tmp_path, image_folder) -> None:
    metadata = [
        {
            "name": "age",
            "kind": "numeric",
            "median": 50.0,
            "mean": 50.0,
            "std": 10.0,
            "indicator": False,
        },
        {"name": "site", "kind": "categorical", "categories": ["a", "b"]},
    ]
    module = save_checkpoint(
        tmp_path / "meta.ckpt",
        head={"activation": "softmax", "meta_variables": 3},
        metadata=metadata,
    )
    files = sorted(image_folder.rglob("*.png"))[:4]
    csv = tmp_path / "new.csv"
    pd.DataFrame(
        {"path": [str(f) for f in files], "age": [30, 40, None, 90], "site": ["a", "b", "b", "z"]}
    ).to_csv(csv, index=False)
    table = run_predict(tmp_path, f"ckpt_path={tmp_path / 'meta.ckpt'}", f"input={csv}")
    assert len(table) == 4
    meta = torch.tensor([[-2.0, 1.0, 0.0]])  # age 30 → z = -2, site a
    with torch.no_grad():
        expected = module.head.activate(module(prepared(files[0]), meta))[0].numpy()
    assert table.loc[0, PROBS].to_numpy(float) == pytest.approx(expected, abs=1e-5)
    pd.DataFrame({"path": [str(f) for f in files]}).to_csv(csv, index=False)
    with pytest.raises(ConfigError, match="lacks"):
        run_predict(tmp_path, f"ckpt_path={tmp_path / 'meta.ckpt'}", f"input={csv}")


def test_ensemble_mean_of_two_models(tmp_path, image_folder) -> None:
    save_checkpoint(tmp_path / "a.ckpt", seed=1)
    save_checkpoint(tmp_path / "b.ckpt", seed=2)
    a = run_predict(tmp_path, f"ckpt_path={tmp_path / 'a.ckpt'}", f"input={image_folder}")
    b = run_predict(tmp_path, f"ckpt_path={tmp_path / 'b.ckpt'}", f"input={image_folder}")
    both = f"ckpt_path=[{tmp_path / 'a.ckpt'},{tmp_path / 'b.ckpt'}]"
    mean = run_predict(tmp_path, both, f"input={image_folder}")
    cols = PROBS
    assert np.allclose(mean[cols], (a[cols] + b[cols]) / 2, atol=1e-6)
    vote = run_predict(tmp_path, both, f"input={image_folder}", "ensemble=vote")
    assert set(np.unique(vote[cols].to_numpy())) <= {0.0, 0.5, 1.0}


def test_3d_volumes(tmp_path) -> None:
    save_checkpoint(
        tmp_path / "v.ckpt",
        backbone={"name": "3d_resnet18", "pretrained": False},
        spatial_dims=3,
        volume_size=[16, 16, 16],
    )
    folder = tmp_path / "vols"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(folder / f"v{i}.npy", rng.random((12, 20, 20, 1), dtype=np.float32))
    table = run_predict(tmp_path, f"ckpt_path={tmp_path / 'v.ckpt'}", f"input={folder}", "tta=4")
    assert len(table) == 3 and np.allclose(table[PROBS].sum(1), 1.0, atol=1e-5)


def test_command_line_and_its_errors(tmp_path, image_folder, tiny_checkpoint) -> None:
    """medclf-predict (python predict.py): exit 0 and the CSV; a missing checkpoint: exit 2
    and its name."""
    from medclf.cli.predict import main

    out = tmp_path / "p.csv"
    command = ["medclf-predict", f"input={image_folder}"]
    done = run_command(
        main,
        [
            *command,
            f"ckpt_path={tiny_checkpoint[0]}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_csv(out)) == 36
    bad = run_command(
        main,
        [*command, f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'r2'}"],
    )
    assert bad.returncode == 2 and "missing.ckpt" in bad.stderr


def test_gradcam_overlays_per_image(tmp_path, image_folder, tiny_checkpoint) -> None:
    from PIL import Image

    files = sorted(image_folder.rglob("*.png"))[:3]
    small = tmp_path / "few"
    small.mkdir()
    for f in files:
        (small / f.name).write_bytes(f.read_bytes())
    maps = tmp_path / "maps"
    base = [f"ckpt_path={tiny_checkpoint[0]}", f"input={small}", f"xai_dir={maps}"]
    run_predict(tmp_path, *base, "xai=gradcam++")
    written = sorted(p.name for p in maps.iterdir())
    assert written == sorted(f.stem + ".png" for f in files)
    assert Image.open(maps / written[0]).size == (32, 32)
    with pytest.raises(ConfigError, match="gradcam"):
        run_predict(tmp_path, *base, "xai=gradcm")
