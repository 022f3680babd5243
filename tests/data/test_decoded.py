"""The decoded cache: the same bytes as decoding each time for every format, decoded once
(a changed file again, a deleted one dropped), never read when broken, a clear error when
the disk is too small, shared RAM for loader workers, and a DDP follower that decodes
nothing."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import medclf.data.cachefill as cachefill
import medclf.data.decoded as decoded_module
import medclf.data.inspection as inspection
from helpers import check_datamodule, write_dicom
from medclf.data.cachefill import CacheFill
from medclf.data.datamodule import DigitsDataModule, FolderDataModule
from medclf.data.dataset import ImageDataset
from medclf.data.decoded import DiskStore, ShardWriter
from medclf.data.io import read_raw
from medclf.data.transforms import fit_input, input_transform
from medclf.errors import ConfigError, DataError

RNG = np.random.default_rng(7)
WINDOW = [40, 400]


def _write(folder: Path, kind: str, i: int) -> Path:
    """One file of ``kind`` with random content (sizes unlike the input size: resized)."""
    if kind == "png8":
        path = folder / f"{i}.png"
        Image.fromarray(RNG.integers(0, 256, (30, 20), dtype=np.uint8)).save(path)
    elif kind == "png16":
        path = folder / f"{i}.png"
        Image.fromarray(RNG.integers(0, 65536, (30, 20), dtype=np.uint16)).save(path)
    elif kind == "jpeg":
        path = folder / f"{i}.jpg"
        Image.fromarray(RNG.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(path)
    elif kind == "tiff":
        path = folder / f"{i}.tif"
        tifffile.imwrite(path, RNG.integers(0, 65536, (30, 20), dtype=np.uint16))
    elif kind == "dicom":
        stored = RNG.integers(0, 1500, (30, 20), dtype=np.uint16)
        path = write_dicom(folder / f"{i}.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024)
    elif kind == "nifti":
        path = folder / f"{i}.nii.gz"
        nib.save(nib.Nifti1Image(RNG.normal(0, 100, (9, 8, 7)).astype(np.float32), np.eye(4)), path)
    else:
        path = folder / f"{i}.npy"
        np.save(path, RNG.normal(0, 3, (30, 20)).astype(np.float32))
    return path


STORED = {
    "png8": "uint8",
    "png16": "uint16",
    "jpeg": "uint8",
    "tiff": "uint16",
    "dicom": "float32",
    "nifti": "float32",
    "npy": "float32",
}


@pytest.mark.parametrize("kind", list(STORED))
def test_decoded_arrays_equal_the_uncached_path_bit_for_bit(tmp_path: Path, kind: str) -> None:
    """Each format: what a second set-up reads back from the store is what decoding the file
    and fitting it gives (the same dtype and bytes), and the augmented items are equal."""
    folder = tmp_path / "data"
    folder.mkdir()
    paths = [str(_write(folder, kind, i)) for i in range(3)]
    settings = {"image_size": [12, 10], "volume_size": [5, 6, 4]}
    for _ in range(2):  # build, then read back
        with CacheFill("disk", tmp_path / "cache", **settings, follower=False) as fill:
            inspection.inspect_images(paths, None, fill, dicom_window=WINDOW)
    assert fill.stats["decoded"] == 0 and fill.stats["dtypes"] == [STORED[kind]]
    cached = fill.arrays(paths)
    dims = 3 if kind == "nifti" else 2
    augment = A.Affine(rotate=(-30, 30), p=1.0) if dims == 2 else None
    frame = __import__("pandas").DataFrame({"path": paths})
    items = []
    for decoded in (cached, None):
        transform = input_transform(dims, augment=augment, seed=0, channels=3, **settings)
        dataset = ImageDataset(
            frame, None, 3, transform, np.zeros(3, int), None, WINDOW, decoded, 5
        )
        items.append([dataset[(1, i)]["image"] for i in range(3)])
    for i, path in enumerate(paths):
        expected = fit_input(read_raw(path, WINDOW), **settings)
        assert cached[i].dtype == expected.dtype and np.array_equal(cached[i], expected), path
        assert torch.equal(items[0][i], items[1][i])
    assert items[0][0].shape[0] == 3 and items[0][0].dtype == torch.float32


def _setup(folder: Path, cache_dir: Path, **kwargs) -> FolderDataModule:
    dm = FolderDataModule(
        data_dir=folder,
        image_size=16,
        batch_size=4,
        cache_dir=cache_dir,
        **{"cache": "disk", **kwargs},
    )
    dm.setup()
    return dm


def test_a_second_set_up_decodes_nothing_and_a_changed_file_is_decoded_again(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    first = _setup(image_folder, tmp_path / "c")
    assert len(decodes) == 36 and first.cache_stats["decoded"] == 36
    assert first.cache_stats["dtypes"] == ["uint8"] and first.cache_stats["bytes"] == 36 * 16 * 16
    decodes.clear()
    second = _setup(image_folder, tmp_path / "c")
    assert decodes == [] and second.cache_stats["known"] == 36
    changed = image_folder / "benign" / "benign_03.png"
    Image.new("L", (24, 24), 200).save(changed)
    deleted = image_folder / "normal" / "normal_00.png"
    deleted.unlink()
    decodes.clear()
    third = _setup(image_folder, tmp_path / "c")
    assert decodes == [str(changed)]
    row = third.frame.index[third.frame["path"] == str(changed)][0]
    split = third.frame.loc[row, "split"]
    index = third.split_frame(split)["path"].tolist().index(str(changed))
    assert (third.datasets[split].decoded[index] == 200).all()
    (store,) = (tmp_path / "c").iterdir()
    assert set(DiskStore(store).entries()) == {str(p) for p in image_folder.rglob("*.png")}
    (image_folder / "normal" / "normal_01.png").unlink()  # only a deletion: still dropped
    decodes.clear()
    _setup(image_folder, tmp_path / "c")
    assert decodes == []
    assert set(DiskStore(store).entries()) == {str(p) for p in image_folder.rglob("*.png")}


def _batches(dm) -> list[dict]:
    """An epoch's train batches, then val and test, as the model gets them (a cached 8-bit
    set's batches travel as uint8 and are scaled once on the device)."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    batches = list(loader) + list(dm.val_dataloader()) + list(dm.test_dataloader())
    assert {b["image"].dtype for b in batches} == {torch.uint8 if dm.compact else torch.float32}
    return [dm.on_after_batch_transfer(batch, 0) for batch in batches]


def test_a_broken_cache_is_rebuilt_and_never_read(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    """Truncated shard, flipped bytes, a half-written shard of a killed build, an unreadable
    index: each is found, the files are decoded again, and the batches equal uncached ones."""
    augment = {"augment": A.Affine(rotate=(-30, 30), p=1.0)}
    plain = _batches(_setup(image_folder, tmp_path / "c", cache="none", **augment))
    _setup(image_folder, tmp_path / "c")
    (folder,) = (tmp_path / "c").iterdir()
    (shard,) = folder.glob("shard-*.bin")
    shard.write_bytes(shard.read_bytes()[: 20 * 256])  # truncated after 20 of 36 images
    (folder / "shard-killed.bin.tmp").write_bytes(b"\1" * 4096)
    decodes.clear()
    dm = _setup(image_folder, tmp_path / "c", **augment)
    assert len(decodes) == 16 and dm.cache_stats["known"] == 20
    assert not list(folder.glob("*.tmp")) and len(list(folder.glob("shard-*.bin"))) == 2
    for a, b in zip(_batches(dm), plain, strict=True):
        assert torch.equal(a["image"], b["image"])
    entry = next(iter(DiskStore(folder).entries().values()))
    with open(folder / entry.shard, "r+b") as file:  # one flipped byte
        file.seek(entry.offset + 5)
        byte = file.read(1)
        file.seek(entry.offset + 5)
        file.write(bytes([byte[0] ^ 0xFF]))
    decodes.clear()
    _setup(image_folder, tmp_path / "c")
    assert decodes == [entry.path]
    (folder / "index.sqlite").write_bytes(b"garbage" * 100)
    decodes.clear()
    dm = _setup(image_folder, tmp_path / "c", **augment)
    assert len(decodes) == 36
    for a, b in zip(_batches(dm), plain, strict=True):
        assert torch.equal(a["image"], b["image"])


def test_a_later_set_up_reads_no_shard_unless_it_was_written_since(
    image_folder: Path, tmp_path: Path, decodes: list[str], monkeypatch
) -> None:
    """A shard is trusted by its stamp from when its entries were known good: a later set-up
    computes no CRC (it would read the whole cache). A byte flipped with the modification
    time set back is still found (the status-change time moved), and a store from before the
    stamps were kept is checked once, then trusted."""
    crcs: list[int] = []

    def counting(data, *args):
        crcs.append(len(data))
        return zlib.crc32(data, *args)

    monkeypatch.setattr(decoded_module, "zlib", SimpleNamespace(crc32=counting))
    _setup(image_folder, tmp_path / "c")
    assert len(crcs) == 36  # computed once, as each array is written
    crcs.clear()
    assert _setup(image_folder, tmp_path / "c").cache_stats["known"] == 36
    assert crcs == []
    (folder,) = (tmp_path / "c").iterdir()
    store = DiskStore(folder)
    entry = next(iter(store.entries().values()))
    shard = folder / entry.shard
    before = shard.stat()
    with open(shard, "r+b") as file:  # one flipped byte, the file's times then set back
        file.seek(entry.offset + 5)
        byte = file.read(1)
        file.seek(entry.offset + 5)
        file.write(bytes([byte[0] ^ 0xFF]))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    decodes.clear()
    _setup(image_folder, tmp_path / "c")
    assert decodes == [entry.path]
    crcs.clear()
    _setup(image_folder, tmp_path / "c")  # the checked shard is trusted again
    assert crcs == []
    with sqlite3.connect(store.index) as connection:  # a store from before the stamps
        connection.execute("DELETE FROM verified")
    connection.close()
    _setup(image_folder, tmp_path / "c")
    assert len(crcs) == 36
    crcs.clear()
    decodes.clear()
    _setup(image_folder, tmp_path / "c")
    assert crcs == [] and decodes == []


def test_a_disk_too_small_is_a_clear_error_and_auto_falls_back(
    image_folder: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(cachefill, "disk_free", lambda folder: (4096, 10**12))
    with pytest.raises(DataError) as error:
        _setup(image_folder, tmp_path / "c")
    message = str(error.value)
    assert "not enough disk space" in message and str(tmp_path / "c") in message
    assert "11.2 KB" in message and "datamodule.cache=none" in message  # 36 x (256 + 64) B
    with caplog.at_level(logging.WARNING):
        dm = _setup(image_folder, tmp_path / "c", cache="auto")
    assert dm.cache_stats["mode"] == "memory" and "too little disk space" in caplog.text
    monkeypatch.undo()

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardWriter, "add", full)
    with pytest.raises(DataError, match="not enough disk space for the decoded cache"):
        _setup(image_folder, tmp_path / "d")
    assert not list((tmp_path / "d").rglob("shard-*"))


def test_memory_is_one_shared_buffer_that_loader_workers_read(
    image_folder: Path, tmp_path: Path
) -> None:
    import shutil

    dm = _setup(image_folder, None, cache="memory", num_workers=2)
    decoded = dm.datasets["train"].decoded
    (buffer,) = decoded.buffers
    assert buffer.is_shared() and decoded.buffers is dm.datasets["test"].decoded.buffers
    with pytest.raises(ValueError, match="read-only"):
        decoded[0][0, 0] = 1  # no transform can change the cache in place
    shutil.rmtree(image_folder)  # the workers need no file
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.datasets["train"]) // 4
    assert all(b["image"].shape == (4, 1, 16, 16) for b in batches)


def test_cache_values_and_the_deprecated_booleans(caplog) -> None:
    with pytest.raises(ConfigError, match="datamodule.cache='yes': use auto, disk, memory, none"):
        check_datamodule(cache="yes")
    check_datamodule(cache=True)
    with pytest.raises(ConfigError, match="on_device=true .* needs datamodule.cache=memory"):
        check_datamodule(cache="disk", on_device=True)
    with caplog.at_level(logging.WARNING):
        dm = DigitsDataModule(image_size=12, cache=True)
    assert dm.cache == "memory"
    assert "datamodule.cache=true is deprecated: use auto" in caplog.text
    assert "disk, memory or none" in caplog.text
    dm.setup()  # arrays in memory: memory keeps them resized
    assert dm.cache_stats["images"] == 1797 and dm.datasets["val"].decoded[0].shape == (12, 12, 1)
    assert DigitsDataModule(cache=False).cache == "none"


def test_a_follower_rank_reads_rank_0s_cache_and_decodes_nothing(
    image_folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    result: dict = {}

    def follower() -> None:
        with CacheFill("auto", tmp_path / "c", 16, [4, 4, 4], follower=True, wait=30) as fill:
            inspection.inspect_images(paths, None, fill)
        result["fill"] = fill

    waiting = threading.Thread(target=follower)
    waiting.start()
    time.sleep(1.0)  # the follower waits before rank 0 starts
    assert waiting.is_alive() and decodes == []
    with CacheFill("auto", tmp_path / "c", 16, [4, 4, 4], follower=False) as leader:
        inspection.inspect_images(paths, None, leader)
    waiting.join(30)
    assert len(decodes) == 36  # rank 0's only
    fill = result["fill"]
    assert fill.stats["known"] == 36 and fill.stats["decoded"] == 0
    for a, b in zip(fill.arrays(paths), leader.arrays(paths), strict=True):
        assert np.array_equal(a, b)


def test_a_compact_batch_mixing_uint8_and_float_images_collates_as_float() -> None:
    """An augmentation that returned floats for some samples: their batch is float32, the
    uint8 images scaled as the device would scale them."""
    from medclf.data.loaders import collate_compact

    bytes_ = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    floats = torch.tensor([[[0.5, 0.25, 1.0]]])
    mixed = collate_compact([{"image": bytes_, "target": 0}, {"image": floats, "target": 1}])
    assert mixed["image"].dtype == torch.float32
    assert torch.equal(mixed["image"][0], bytes_.float() / 255) and torch.equal(
        mixed["image"][1], floats
    )
    same = collate_compact([{"image": bytes_, "target": 0}, {"image": bytes_, "target": 1}])
    assert same["image"].dtype == torch.uint8 and same["target"].tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_batch_never_holds_the_caches_own_bytes(dtype) -> None:
    """A read-only cache entry (a memory map, or the shared memory buffer) leaves the
    transform as a copy: torch warns about tensors over read-only arrays, and an in-place
    change of the batch would change the cache."""
    from medclf.data.transforms import build_transform

    entry = np.ones((16, 16, 1), dtype=dtype)
    entry.flags.writeable = False
    for compact in (False, True):
        transform = build_transform(16)
        transform.compact = compact
        image = transform(image=entry)["image"]
        assert not np.shares_memory(image.numpy(), entry)
