"""medclf-audit end to end (medclf.pipeline.audit), once for the module: a learnable CSV set
with labels flipped in train and val, and near-copies of train images placed in the test
split (resized, JPEG-re-encoded, noised). The audit's cross-validation finds the flipped
labels, the hashes and the fold model's features the copies; the page opens in Chromium;
the labelling page puts the suspects first; bad input stops before anything is written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import class_image

from helpers import TINY, open_in_chromium, run_train, search_runs

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("audit_run")]
CLASSES = ("benign", "malignant", "normal")
FLIPPED = 6  # of 84 train and val images
COPIES = 4
AUDIT = (
    *TINY,
    "datamodule=csv",
    "datamodule.image_size=24",
    "datamodule.batch_size=8",
    "datamodule.split_column=split",
    "augment=none",  # the class is where the bright quadrant is: a flip would change it
    "trainer.max_epochs=4",
    "audit.folds=3",
    "eval.bootstrap=0",
)


def _write(root: Path) -> tuple[Path, list[str], list[tuple[str, str]]]:
    """labels.csv (image, label, split) over img/*.png; the flipped images and the (train
    original, test copy) pairs."""
    from PIL import Image

    rng = np.random.default_rng(11)
    (root / "img").mkdir(parents=True)
    rows, flipped, copies = [], [], []
    for i in range(96):
        label = i % 3
        name = f"img/s{i:03d}.png"
        Image.fromarray(class_image(label, rng, size=32)).save(root / name)
        split = "test" if i >= 84 else ("val" if i % 7 == 0 else "train")
        given = CLASSES[label]
        if split != "test" and len(flipped) < FLIPPED and i % 13 == 5:
            given = CLASSES[(label + 1) % 3]
            flipped.append(name)
        rows.append((name, given, split))
    for k in range(COPIES):  # copies of train images, in the test split
        source = root / f"img/s{1 + 7 * k:03d}.png"
        image = Image.open(source)
        if k == 0:
            image = image.resize((48, 48))
        elif k == 1:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=70)
            image = Image.open(buffer)
        elif k == 2:
            noisy = np.asarray(image, float) + rng.normal(0, 5, (32, 32))
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        copy = f"img/copy{k}.png"
        image.save(root / copy)
        label = rows[1 + 7 * k][1]
        rows.append((copy, label, "test"))
        copies.append((rows[1 + 7 * k][0], copy))
    path = root / "labels.csv"
    pd.DataFrame(rows, columns=["image", "label", "split"]).to_csv(path, index=False)
    return path, flipped, copies


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    csv, flipped, copies = _write(root / "data")
    result = run_train(
        root,
        "audit_only=true",
        f"datamodule.csv_path={csv}",
        f"datamodule.image_dir={csv.parent}",
        *AUDIT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (page,) = root.glob("logs/runs/*/audit.html")
    return {"root": root, "csv": csv, "flipped": flipped, "copies": copies, "dir": page.parent}


def test_flipped_labels_are_found_from_out_of_fold_probabilities(audited) -> None:
    issues = pd.read_csv(audited["dir"] / "label_issues.csv")
    flagged = set(issues.loc[issues["flagged"], "sample"])
    found = flagged & set(audited["flipped"])
    assert len(found) / FLIPPED >= 0.6, (flagged, audited["flipped"])  # recall
    assert len(found) / max(len(flagged), 1) >= 0.7, (flagged, audited["flipped"])  # precision
    for name in found:  # the suggestion is the image's true class
        row = issues.set_index("sample").loc[name]
        assert row["given_name"] != row["suggested_name"]


def test_copies_across_splits_are_flagged(audited) -> None:
    pairs = pd.read_csv(audited["dir"] / "duplicates.csv")
    found = {frozenset(p) for p in zip(pairs["a"], pairs["b"], strict=True)}
    for original, copy in audited["copies"]:
        assert frozenset((original, copy)) in found, (original, copy)
    high = pairs[pairs["severity"] == "high"]
    assert len(high) >= COPIES and set(high["split_b"]) | set(high["split_a"]) >= {"test"}


def test_the_page_and_the_run(audited) -> None:
    shown = open_in_chromium(audited["dir"] / "audit.html")
    assert not shown["requests"] and not shown["problems"] and shown["scripts"] == 0
    assert shown["images"] and all(done and width > 0 for _, done, width in shown["images"])
    assert {"overview", "duplicates", "labels"} <= set(shown["headings"])
    runs = search_runs(audited["root"])
    audit = runs[runs["tags.audit"].notna()]
    assert len(audit) == 1 and audit.iloc[0]["status"] == "FINISHED"
    cv = audit.iloc[0]["tags.audit_cv_run"]
    assert runs.loc[runs["run_id"] == cv, "tags.cv_folds"].iloc[0] == "3"
    # the audit's set-up decodes each image once into the decoded cache; the folds read it
    summary = json.loads((audited["dir"] / "audit.json").read_text())
    cache = summary["decoded_cache"]
    assert cache["mode"] == "disk" and cache["images"] == len(pd.read_csv(audited["csv"])), cache
    assert cache["decoded_by_folds"] == {f"fold_{k}": 0 for k in range(3)}, cache


def test_the_labelling_page_opens_the_suspects_first(audited) -> None:
    from medclf.labelling.app import open_session

    session = open_session(
        audited["csv"].parent,
        classes=list(CLASSES),
        output=audited["root"] / "relabel.csv",
        order="audit",
        audit=audited["dir"],
    )
    images = session.state()["images"]
    issues = pd.read_csv(audited["dir"] / "label_issues.csv")
    suspects = list(issues.loc[issues["flagged"], "sample"])
    assert images[: len(suspects)] == suspects
    assert sorted(images) == sorted(session.store.images)


def test_bad_input_stops_before_anything_is_written(audited, tmp_path: Path) -> None:
    """A CV run of another data set (its out-of-fold samples are not this data's), a
    corrupt image, data without a validation split: each a clear error, no audit.html."""
    root = audited["root"]
    runs = search_runs(root)
    cv = runs.loc[runs["tags.cv_folds"].notna(), "run_id"].iloc[0]
    other = tmp_path / "other"
    csv, _, _ = _write(other)
    table = pd.read_csv(csv)
    table["image"] = table["image"].str.replace("s0", "t0")
    for name in table["image"]:
        if not (other / name).exists():
            (other / name.replace("t0", "s0")).rename(other / name)
    table.to_csv(csv, index=False)
    common = (f"datamodule.csv_path={csv}", f"datamodule.image_dir={other}", *AUDIT)
    result = run_train(root, "audit_only=true", f"audit.run_id={cv}", *common)
    assert result.returncode == 2 and "another data set" in result.stderr
    broken = other / table["image"].iloc[3]
    kept = broken.read_bytes()
    broken.write_bytes(b"not a png")
    result = run_train(root, "audit_only=true", *common)
    assert result.returncode == 2 and "cannot read" in result.stderr
    broken.write_bytes(kept)
    table[table["split"] != "val"].to_csv(csv, index=False)
    result = run_train(root, "audit_only=true", *common, "datamodule.val_fraction=0")
    assert result.returncode == 2 and "val split is empty" in result.stderr
    assert len(list(root.glob("logs/runs/*/audit.html"))) == 1  # the module's own only
