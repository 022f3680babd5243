"""A trained model's help: suggestions equal predict.py's probabilities, ``order=uncertainty``
puts the unlabelled images by ascending margin, Enter stores the suggested class, the
predictions are cached; and the file the page writes trains with ``datamodule=csv``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from labelling_helpers import ThreadServer, post, request

from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.labelling.app import open_session
from medclf.labelling.assist import Assistant, margins

CLASSES = ["benign", "malignant", "normal"]  # tests/conftest.py's image_folder and model
PROBS = [f"prob_{c}" for c in CLASSES]


def _predicted(checkpoint: Path, folder: Path, output: Path) -> pd.DataFrame:
    """predict.py's table for the folder (the oracle), indexed by image."""
    from medclf.inference.predict import predict

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict", overrides=[f"ckpt_path={checkpoint}", f"input={folder}", f"output={output}"]
        )
    predict(cfg)
    return pd.read_csv(output).set_index("sample")


@pytest.fixture
def session(tiny_checkpoint, image_folder: Path, tmp_path: Path):
    """A session over image_folder with the tests' 3-class model, two images labelled."""
    checkpoint, _ = tiny_checkpoint
    (image_folder / "labels.csv").write_text(
        "image,label\nbenign/benign_00.png,benign\nnormal/normal_03.png,normal\n"
    )
    opened = open_session(
        image_folder, ckpt_paths=[str(checkpoint)], order="uncertainty", cache_dir=tmp_path / "c"
    )
    opened.assistant.wait(120)
    assert opened.assistant.status == "done", opened.assistant.error
    return opened


def test_margins_follow_the_formula() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(margins(probs, "multiclass", 0.5), [0.2, 0.05])
    binary = np.array([[0.3, 0.7], [0.55, 0.45]])
    np.testing.assert_allclose(margins(binary, "binary", 0.5), [0.4, 0.1])
    np.testing.assert_allclose(margins(binary, "binary", 0.6), [0.2, 0.3])
    labels = np.array([[0.9, 0.45], [0.1, 0.2]])
    np.testing.assert_allclose(margins(labels, "multilabel", [0.5, 0.3]), [0.3, 0.2])


def test_suggestions_are_predict_pys_and_the_least_sure_come_first(
    session, tiny_checkpoint, image_folder: Path, tmp_path: Path
) -> None:
    oracle = _predicted(tiny_checkpoint[0], image_folder, tmp_path / "p.csv")
    state = session.state()
    assert state["assist"]["status"] == "done" and state["assist"]["done"] == 36
    suggested = state["suggestions"]
    assert sorted(suggested) == sorted(oracle.index)
    for image, row in oracle.iterrows():
        assert suggested[image]["labels"] == [row["prediction"]]
        assert suggested[image]["probability"] == pytest.approx(row[PROBS].max(), abs=1e-5)
    top = np.sort(oracle[PROBS].to_numpy(), axis=1)
    margin = dict(zip(oracle.index, top[:, -1] - top[:, -2], strict=True))
    order = state["images"]
    labelled = ["benign/benign_00.png", "normal/normal_03.png"]
    assert order[-2:] == labelled
    ranked = [margin[image] for image in order[:-2]]
    assert ranked == sorted(ranked)
    assert len(set(ranked)) > 20  # the order is not that of names by accident
    assert sorted(margin, key=lambda i: (margin[i], order.index(i)))[:5] == order[:5]


def test_enter_stores_the_suggested_class(session, image_folder: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    from test_label_page import ARTIFACTS, _chromium

    server = ThreadServer(session)
    first = session.state()["images"][0]
    suggested = session.state()["suggestions"][first]["labels"][0]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=_chromium(), headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(server.url)
            expect(page.locator("#name")).to_have_text(first)
            expect(page.locator("#suggestion")).to_contain_text(f"model: {suggested}")
            page.keyboard.press("Enter")
            expect(page.locator("#progress-text")).to_have_text("3 / 36 labelled")
            expect(page.locator("#name")).not_to_have_text(first)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "label-page-model.png"))
            browser.close()
    finally:
        server.stop()
    labels = pd.read_csv(image_folder / "labels.csv").set_index("image")["label"]
    assert labels[first] == suggested and len(labels) == 3


def test_predictions_are_cached_and_a_changed_image_is_predicted_again(
    session, image_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    from PIL import Image

    before = session.assistant.suggestions()
    changed = "malignant/malignant_05.png"
    Image.new("L", (24, 24), 255).save(image_folder / changed)
    predicted: list[list[str]] = []
    original = Assistant._predict
    monkeypatch.setattr(
        Assistant, "_predict", lambda self, chunk: (predicted.append(chunk), original(self, chunk))
    )
    again = open_session(image_folder, ckpt_paths=session.assistant.paths, cache_dir=tmp_path / "c")
    again.assistant.wait(60)
    assert predicted == [[changed]]
    after = again.assistant.suggestions()
    for image in before:
        if image != changed:
            assert after[image]["margin"] == pytest.approx(before[image]["margin"], abs=1e-6)


def test_a_model_of_other_classes_or_no_model_for_uncertainty_is_refused(
    tiny_checkpoint, image_folder: Path
) -> None:
    with pytest.raises(ConfigError, match="model's classes"):
        open_session(image_folder, ["cat", "dog"], ckpt_paths=[str(tiny_checkpoint[0])])
    with pytest.raises(ConfigError, match="order=uncertainty needs a model"):
        open_session(image_folder, ["cat", "dog"], order="uncertainty")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        open_session(image_folder, ckpt_paths=[str(image_folder / "missing.ckpt")])


def test_the_file_the_page_writes_trains_with_datamodule_csv(image_folder: Path, tmp_path) -> None:
    from helpers import TINY, run_train, search_runs

    session = open_session(image_folder)  # classes from the sub-folders
    assert session.store.classes == CLASSES
    server = ThreadServer(session)
    try:
        for image in session.store.images:
            post(server.base, server.token, "label", image=image, labels=[image.split("/")[0]])
        status, _, body = request(server.base, "/api/state", server.token)
        command = json.loads(body)["command"]
    finally:
        server.stop()
    assert command == (
        f"python train.py datamodule=csv datamodule.csv_path={image_folder / 'labels.csv'} "
        f"datamodule.image_dir={image_folder}"
    )
    overrides = command.split()[2:]
    root = tmp_path / "run"
    result = run_train(
        root,
        *overrides,
        *TINY,
        "trainer.max_epochs=1",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = search_runs(root).iloc[0]
    assert (
        int(run["params.data.train.samples"])
        + int(run["params.data.val.samples"])
        + int(run["params.data.test.samples"])
        == 36
    )
    assert run["params.data.train.class.malignant"] != "0"
