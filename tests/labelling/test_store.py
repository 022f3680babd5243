"""The labels file: exactly what ``datamodule=csv`` reads, written at every change from the
server's state, never losing a label to another tab or server, and an existing file that
does not match refused before anything is overwritten."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medclf.errors import ConfigError, DataError
from medclf.labelling.store import LabelStore, scan_images


def _folder(root: Path, names: list[str]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 128).save(path)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _folder(tmp_path / "imgs", ["img10.png", "img2.png", "sub/img1.png", "sub/x.jpg"])


def test_the_folder_in_natural_order_without_hidden_files_or_links_out(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", ["b10.png", "b9.png", "a/c.png", ".hidden/h.png", ".h.png"])
    (root / "notes.txt").write_text("x")
    outside = _folder(tmp_path / "out", ["o.png"])
    (root / "out.png").symlink_to(outside / "o.png")
    (root / "inside.png").symlink_to(root / "b9.png")
    assert scan_images(root) == ["a/c.png", "b9.png", "b10.png", "inside.png"]


def test_single_label_file_is_image_label_with_relative_paths(folder: Path) -> None:
    store = LabelStore(folder, ["cat", "dog"])
    store.assign("sub/img1.png", ["dog"])
    store.assign("img2.png", ["cat"])
    written = (folder / "labels.csv").read_text()
    assert written == "image,label\nimg2.png,cat\nsub/img1.png,dog\n"
    assert store.counts() == {"cat": 1, "dog": 1}
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(ValueError, match="exactly one class"):
        store.assign("img2.png", ["cat", "dog"])
    with pytest.raises(ValueError, match="unknown classes"):
        store.assign("img2.png", ["bird"])
    with pytest.raises(KeyError):
        store.assign("../img2.png", ["cat"])


def test_multi_label_file_has_one_01_column_per_class(folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "elsewhere" / "multi.csv"
    store = LabelStore(folder, ["effusion", "nodule", "mass"], multi_label=True, output=output)
    store.assign("img2.png", ["nodule", "effusion"])
    store.assign("img10.png", [])  # looked at: none of the findings
    table = pd.read_csv(output)
    assert list(table.columns) == ["image", "effusion", "nodule", "mass"]
    assert table.to_dict("records") == [
        {"image": "img2.png", "effusion": 1, "nodule": 1, "mass": 0},
        {"image": "img10.png", "effusion": 0, "nodule": 0, "mass": 0},
    ]
    assert "'datamodule.label_columns=[effusion,nodule,mass]'" in store.train_command()


def test_undo_and_a_new_session_continues_where_it_stopped(folder: Path) -> None:
    store = LabelStore(folder, ["cat", "dog"])
    store.assign("img2.png", ["cat"])
    store.assign("img2.png", ["dog"])
    store.assign("img10.png", ["cat"])
    assert store.undo() == "img10.png"
    assert store.undo() == "img2.png"
    assert store.labels == {"img2.png": ("cat",)}
    again = LabelStore(folder)  # the classes from the file
    assert again.classes == ["cat", "dog"] and again.classes_from.endswith("labels.csv")
    assert again.labels == {"img2.png": ("cat",)}
    assert again.undo() is None


def test_two_servers_on_one_folder_never_lose_a_label(folder: Path) -> None:
    first, second = LabelStore(folder, ["cat", "dog"]), LabelStore(folder, ["cat", "dog"])
    images = first.images
    threads = [
        threading.Thread(target=lambda s=s, i=i: s.assign(i, ["dog"]))
        for k, i in enumerate(images)
        for s in ([first] if k % 2 else [second])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert LabelStore(folder).labels == dict.fromkeys(images, ("dog",))
    second.assign(images[0], ["cat"])
    first.assign(images[1], ["cat"])  # first re-reads the file before writing
    final = LabelStore(folder).labels
    assert final[images[0]] == ("cat",) and final[images[1]] == ("cat",)


def test_classes_from_sub_folders_or_refused_without_any(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", ["normal/a.png", "pneumonia/b.png"])
    assert LabelStore(root).classes == ["normal", "pneumonia"]
    flat = _folder(tmp_path / "flat", ["a.png"])
    with pytest.raises(ConfigError, match="classes=\\[normal,pneumonia\\]"):
        LabelStore(flat)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        LabelStore(flat, ["only"])
    with pytest.raises(ConfigError, match="more than once"):
        LabelStore(flat, ["a", "a"])
    with pytest.raises(ConfigError, match="not a folder"):
        LabelStore(tmp_path / "missing", ["a", "b"])


@pytest.mark.parametrize(
    ("content", "multi", "message"),
    [
        ("image,label\nimg2.png,bird\n", False, "unknown classes 'bird'"),
        ("image,label\nimg2.png,cat\ngone.png,dog\n", False, "not in the folder: 'gone.png'"),
        ("image,label\nimg2.png,cat\nimg2.png,dog\n", False, "more than once: 'img2.png'"),
        ("file,label\nimg2.png,cat\n", False, "no 'image' column"),
        ("image,cat,dog\nimg2.png,1,0\n", False, "multi_label=true"),
        ("image,cat,bird\nimg2.png,1,0\n", True, "unknown classes \\(columns\\) 'bird'"),
        ("image,cat,dog\nimg2.png,1,2\n", True, "0 or 1"),
    ],
)
def test_a_labels_file_that_does_not_match_is_named_and_kept(
    folder: Path, content: str, multi: bool, message: str
) -> None:
    path = folder / "labels.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as raised:
        LabelStore(folder, ["cat", "dog"], multi_label=multi)
    assert str(path) in str(raised.value) and "output=OTHER.csv" in str(raised.value)
    assert path.read_text() == content


def test_every_class_comes_back_though_the_file_shows_only_those_used(folder: Path) -> None:
    LabelStore(folder, ["normal", "pneumonia", "covid"]).assign("img2.png", ["covid"])
    assert (folder / "labels.csv").read_text() == "image,label\nimg2.png,covid\n"
    assert LabelStore(folder).classes == ["normal", "pneumonia", "covid"]
    (folder / ".labels.csv.classes.json").unlink()  # a file from elsewhere: its own classes
    (folder / "labels.csv").write_text("image,label\nimg2.png,b\nimg10.png,a\n")
    assert LabelStore(folder).classes == ["a", "b"]
    store = LabelStore(folder, model_classes=["c", "b", "a"])  # the model's, in its order
    assert store.classes == ["c", "b", "a"] and store.classes_from.endswith("and the model")
    store = LabelStore(folder, model_classes=["b", "z"])
    assert store.classes == ["a", "b", "z"]


def test_the_command_names_a_mismatched_file_at_start_and_keeps_it(folder: Path) -> None:
    from helpers import run_command
    from medclf.cli.label import main

    path = folder / "labels.csv"
    path.write_text("image,label\nimg2.png,cat\nimg99.png,dog\n")
    argv = ["medclf-label", f"data_dir={folder}", "classes=[cat,dog]", "port=0"]
    argv.append(f"paths.root_dir={folder.parent}")
    result = run_command(main, argv)
    assert result.returncode == 2
    assert f"error: {path} does not match this labelling" in result.stderr
    assert "'img99.png'" in result.stderr and "http://" not in result.stdout
    assert path.read_text() == "image,label\nimg2.png,cat\nimg99.png,dog\n"
