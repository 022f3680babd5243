"""The image check remembers: a second set-up decodes only new or changed files, a corrupt
file is named in every run, and a DDP rank other than its node's first decodes nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

import medclf.data.inspection as inspection
from medclf.config import CONF_DIR
from medclf.data.checkcache import CheckCache
from medclf.data.datamodule import FolderDataModule
from medclf.errors import DataError


def _setup(folder: Path, cache: Path) -> FolderDataModule:
    datamodule = FolderDataModule(data_dir=folder, image_size=32, batch_size=4, check_cache=cache)
    datamodule.setup()
    return datamodule


def test_a_second_set_up_decodes_no_image_the_cache_covers(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    cache = tmp_path / "cache" / "check.sqlite"
    first = _setup(image_folder, cache)
    assert len(decodes) == 36 and cache.is_file()
    decodes.clear()
    second = _setup(image_folder, cache)
    assert decodes == []
    assert (second.channels, second.spatial_dims) == (first.channels, first.spatial_dims) == (1, 2)


def test_a_changed_or_corrupted_image_is_checked_again_and_named(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    cache = tmp_path / "check.sqlite"
    _setup(image_folder, cache)
    changed = image_folder / "benign" / "benign_03.png"
    Image.new("RGB", (24, 24), (200, 10, 10)).save(changed)
    decodes.clear()
    assert _setup(image_folder, cache).channels == 3  # the RGB file was decoded again
    assert decodes == [str(changed)]
    corrupt = image_folder / "normal" / "normal_05.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    for _ in range(2):  # named again in every run: a failure is never remembered
        decodes.clear()
        with pytest.raises(DataError, match="normal_05.png"):
            _setup(image_folder, cache)
        assert decodes == [str(corrupt)]


def test_a_follower_rank_waits_for_rank_0_and_decodes_nothing(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    cache = CheckCache(tmp_path / "check.sqlite")
    result: dict[str, object] = {}

    def follower() -> None:
        result["found"] = inspection.inspect_images(
            paths, None, check_cache=cache, follower=True, wait=60
        )
        result["decoded"] = [p for p in decodes if p in paths]

    waiting = threading.Thread(target=follower)
    waiting.start()
    time.sleep(1.0)  # the follower is waiting before rank 0 starts
    assert waiting.is_alive() and decodes == []
    leader = inspection.inspect_images(paths, None, check_cache=cache, follower=False)
    waiting.join(30)
    assert result["found"] == leader == (1, 2)
    assert len(decodes) == 36  # rank 0's decodes only


def test_a_follower_without_rank_0_decodes_the_rest_after_waiting(
    image_folder: Path, tmp_path: Path, decodes: list[str], monkeypatch
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    found = inspection.inspect_images(
        paths, None, check_cache=CheckCache(tmp_path / "c.sqlite"), wait=0.2
    )
    assert found == (1, 2) and len(decodes) == 36


def test_an_unreadable_cache_only_costs_a_full_check(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    cache = tmp_path / "check.sqlite"
    cache.write_bytes(b"not a database" * 100)
    assert _setup(image_folder, cache).channels == 1
    assert len(decodes) == 36


def test_the_cache_lives_under_the_root_dir_by_default(tmp_path: Path) -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", "datamodule=folder"])
    assert cfg.datamodule.check_cache == f"{tmp_path}/.cache/image_check.sqlite"


def test_content_hashes_are_kept_with_each_files_stamps(tmp_path: Path, monkeypatch) -> None:
    """The leak check's SHA-1s (byte-identical images in two splits) are kept in the check
    cache: a second run reads no file, a changed file is read again."""
    import hashlib
    import os

    import pandas as pd

    from medclf.data import groups

    files = [tmp_path / f"{i}.bin" for i in range(3)]
    for i, file in enumerate(files):
        file.write_bytes(bytes([i]) * 100)
    frame = pd.DataFrame({"path": [str(f) for f in files]})
    cache = tmp_path / "check.sqlite"
    first = groups.content_hashes(frame, None, cache)
    assert first == [hashlib.sha1(f.read_bytes()).hexdigest() for f in files]
    reads: list[Path] = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or original(self))
    assert groups.content_hashes(frame, None, cache) == first and reads == []
    files[1].write_bytes(b"changed")
    os.utime(files[1], ns=(1, 1))  # a new stamp even on a coarse clock
    again = groups.content_hashes(frame, None, cache)
    assert reads == [files[1]] and again[1] == hashlib.sha1(b"changed").hexdigest()
