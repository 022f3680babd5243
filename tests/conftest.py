"""Shared fixtures: small generated image data sets and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tiny_backbone  # noqa: F401  (registers backbone "tiny" for this process)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (and for the processes it starts): two workers on two cores,
    # instead of four threads spinning for two cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("benign", "malignant", "normal")


def class_image(label: int, rng: np.random.Generator, size: int = 24, rgb: bool = False):
    """An 8-bit image whose bright quadrant encodes its class (learnable in one epoch)."""
    image = rng.integers(0, 60, (size, size), dtype=np.uint8)
    half = size // 2
    rows, cols = divmod(label, 2)
    image[rows * half : (rows + 1) * half, cols * half : (cols + 1) * half] += 150
    return np.stack([image] * 3, axis=-1) if rgb else image


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Every path a data set-up decodes (the image check and the decoded cache's fill both
    read through medclf.data.inspection.read_raw)."""
    import medclf.data.inspection as inspection

    seen: list[str] = []
    original = inspection.read_raw

    def counting(path, **kwargs):
        seen.append(str(path))
        return original(path, **kwargs)

    monkeypatch.setattr(inspection, "read_raw", counting)
    return seen


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """tmp/images/<class>/<i>.png: 3 classes x 12 greyscale PNGs of 24 px."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(class_image(label, rng)).save(root / name / f"{name}_{i:02d}.png")
    return root


@pytest.fixture
def image_csv(tmp_path: Path) -> Path:
    """tmp/table/labels.csv (columns file, diagnosis) with RGB JPEGs in tmp/table/img/."""
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "table"
    (root / "img").mkdir(parents=True)
    rows = ["file,diagnosis"]
    for label, name in enumerate(CLASSES):
        for i in range(12):
            file = f"img/{name}_{i:02d}.jpg"
            Image.fromarray(class_image(label, rng, rgb=True)).save(root / file, quality=95)
            rows.append(f"{file},{name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, object]:
    """The untrained 1-channel resnet18 (seed 0, the three CLASSES, 32 px) that the predict,
    eval and export tests read, written once: (checkpoint path, the module in eval mode).
    Tests must not write next to it."""
    import torch

    from helpers import tiny_module, write_checkpoint

    torch.manual_seed(0)
    module = tiny_module(CLASSES)
    path = write_checkpoint(module, tmp_path_factory.mktemp("tiny") / "m.ckpt")
    return path, module.eval()


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """The default run (digits, resnet18), trained once per session in this process with the
    model logged to MLflow: (root, its MLflow run as a row, its run directory). The tests of
    the run's records, of every inference path and of the out-of-distribution gate read it:
    two full epochs (validation shortened), enough for features that tell digits from other
    images."""
    from helpers import run_train, search_runs

    root = tmp_path_factory.mktemp("digits")
    short = ("trainer.max_epochs=2", "trainer.limit_val_batches=2")
    result = run_train(root, *short, "logger.mlflow.save_model=true")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = search_runs(root)
    assert len(runs) == 1
    (run_dir,) = root.glob("logs/runs/*")
    return root, runs.iloc[0], run_dir, result


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory):
    """A 2 x 2 grid multirun (resnet18, mobilenetv2 x ce, focal), run once per session in
    this process: (store root, result). The sweep tests and the notebook test read it."""
    from helpers import FAST, run_train

    root = tmp_path_factory.mktemp("grid")
    result = run_train(
        root,
        "-m",
        "backbone=resnet18,mobilenetv2",
        "loss=ce,focal",
        "trainer.limit_test_batches=1",
        *FAST,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules holding slow (end-to-end) tests first: with two workers the short ones
    then fill the gaps instead of one long test running alone at the end. A module stays
    in one piece, so its module-scoped fixtures are set up once."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)
