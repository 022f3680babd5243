"""The training DataLoader with and without the decoded cache, on sources at real sizes:

- ``png8``: 1,024² 8-bit grey PNG (a chest X-ray downsampled)
- ``png16``: 2,048² 16-bit grey PNG (a chest X-ray)
- ``dicom``: 512² 16-bit CT slices (DICOM, rescale slope/intercept, a [40, 400] window)
- ``jpeg``: 600×450 RGB JPEG (dermoscopy)
- ``nifti``: 256³ int16 NIfTI volumes (CT), fitted to 128³

For each, a FolderDataModule (2 classes) at 224 px (128³ for the volume) with the default
augmentation (``augment=default``) feeds its train split through its training DataLoader
(``_loader(..., lightning=True)``: what Lightning reads, uint8 batches where the cache holds
8-bit images) with ``--workers`` persistent workers and a sampler that draws ``(epoch, row)``
keys with replacement (each sample's augmentation reseeded, as in training; the time, not
the data set, bounds the measurement); images/s are counted from the moment every worker
has delivered a batch, for ``--seconds``, and divided by the workers: images/s per core.

- ``none``: ``datamodule.cache=none`` (the image check cache knows the files: no decoding in
  set-up; every sample decoded, resized and augmented in the loop).
- ``first``: ``datamodule.cache=disk`` on an empty cache: set-up decodes every image once
  (its seconds and images/s), then the loop reads the store.
- ``later``: a second data module on the same store: set-up reads and checks it.

Also: the cache's size on disk, the later set-up as a share of the first, the speed-up of
the cached loop over the uncached one, and (2D) the cached loop without augmentation (what
reading, collating and passing batches between processes cost alone).

    python benchmarks/loader.py [--sources png8,png16,dicom,jpeg,nifti] [--images 300]
        [--workers 2] [--seconds 6]

Generated data goes to a temporary folder (``--tmp``), deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import write_dicom  # noqa: E402  (the tests' minimal DICOM writer)

SOURCES = ("png8", "png16", "dicom", "jpeg", "nifti")


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], top: int) -> np.ndarray:
    """A smooth random field with fine noise (compresses like a radiograph), 0..top."""
    coarse = rng.random(tuple(max(s // 32, 2) for s in shape))
    import torch

    field = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None, None].float(),
        size=shape,
        mode="bilinear" if len(shape) == 2 else "trilinear",
    )[0, 0].numpy()
    field = field + rng.normal(0, 0.02, shape)
    return (np.clip(field, 0, 1) * top).astype(np.uint16 if top > 255 else np.uint8)


def generate(kind: str, folder: Path, count: int) -> Path:
    """``count`` files of ``kind`` in folder/<a|b>/."""
    import nibabel as nib
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / ("a" if i % 2 else "b")
        target.mkdir(parents=True, exist_ok=True)
        if kind == "png8":
            Image.fromarray(_smooth(rng, (1024, 1024), 255)).save(target / f"{i}.png")
        elif kind == "png16":
            Image.fromarray(_smooth(rng, (2048, 2048), 65535)).save(target / f"{i}.png")
        elif kind == "dicom":
            pixels = _smooth(rng, (512, 512), 2000)
            write_dicom(target / f"{i}.dcm", pixels, RescaleSlope=1, RescaleIntercept=-1024)
        elif kind == "jpeg":
            rgb = np.stack([_smooth(rng, (450, 600), 255) for _ in range(3)], -1)
            Image.fromarray(rgb).save(target / f"{i}.jpg", quality=90)
        else:
            volume = _smooth(rng, (256, 256, 256), 3000).astype(np.int16) - 1024
            nib.save(nib.Nifti1Image(volume, np.eye(4)), target / f"{i}.nii.gz")
    return folder


def _augment(augment: bool = True):
    import hydra
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["datamodule=folder", "augment=default"])
    if not augment:
        return None, None
    return hydra.utils.instantiate(cfg.augment.image), hydra.utils.instantiate(cfg.augment.volume)


def datamodule(folder: Path, cache: str, root: Path, workers: int, augment: bool = True):
    """A set-up FolderDataModule and its set-up seconds (folder named by the source)."""
    from medclf.data.datamodule import FolderDataModule

    image, volume = _augment(augment)
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    fraction = max(0.05, 2 / count)  # each split holds both classes
    dm = FolderDataModule(
        data_dir=folder,
        image_size=224,
        volume_size=[128, 128, 128],
        batch_size=2 if folder.name == "nifti" else 32,
        num_workers=workers,
        val_fraction=fraction,
        test_fraction=fraction,
        augment=image,
        volume_augment=volume,
        dicom_window=[40, 400],
        cache=cache,
        cache_dir=root / "decoded",
        check_cache=root / "check.sqlite",
    )
    start = time.perf_counter()
    dm.setup()
    return dm, time.perf_counter() - start


class Keys:
    """A sampler drawing train rows with replacement as the train split's EpochSampler
    yields them, ``(epoch, row)`` (each sample's augmentation seeded from them)."""

    def __init__(self, rows: int, epoch: int = 0) -> None:
        self.rows, self.epoch = rows, epoch

    def __len__(self) -> int:
        return 10**7

    def __iter__(self):
        rng = np.random.default_rng(self.epoch)
        while True:
            for row in rng.integers(0, self.rows, 4096):
                yield self.epoch, int(row)


def loader_rate(dm, workers: int, seconds: float) -> float:
    """Images/s of the train DataLoader (the datamodule's own, as Lightning gets it, with
    persistent workers and a sampler that does not run out), counted after every worker's
    first batch, for ``seconds``."""
    dm.num_workers, dm.persistent_workers = workers, workers > 0
    loader = dm._loader("train", sampler=Keys(len(dm.datasets["train"])), lightning=True)
    images, start = 0, None
    for i, batch in enumerate(loader, start=1):
        if start is None:
            if i >= max(workers, 1):
                start = time.perf_counter()
            continue
        images += len(batch["target"])
        if time.perf_counter() - start >= seconds:
            break
    rate = images / (time.perf_counter() - start)
    del loader
    return rate


def one_core_decode(folder: Path, count: int = 10) -> float:
    """Images/s of decoding and fitting alone, in this process (one core)."""
    from medclf.data.io import read_raw
    from medclf.data.transforms import fit_input

    paths = sorted(p for p in folder.rglob("*") if p.is_file())[:count]
    start = time.perf_counter()
    for path in paths:
        fit_input(read_raw(path, [40, 400]), 224, [128, 128, 128])
    return len(paths) / (time.perf_counter() - start)


def bench(kind: str, tmp: Path, count: int, workers: int, seconds: float) -> dict:
    folder = generate(kind, tmp / kind, count)
    root = tmp / f"cache-{kind}"
    row = {"source": kind, "files": count}
    row["file MB"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    row["decode 1 core"] = one_core_decode(folder)
    first, row["first setup s"] = datamodule(folder, "disk", root, workers)
    row["cached"] = loader_rate(first, workers, seconds) / workers
    later, row["later setup s"] = datamodule(folder, "disk", root, workers)
    assert later.cache_stats["decoded"] == 0, later.cache_stats
    row["later cached"] = loader_rate(later, workers, seconds) / workers
    stats = first.cache_stats
    row["build images/s"] = stats["images_per_s"]
    row["dtype"] = "/".join(stats["dtypes"])
    row["cache MB"] = sum(p.stat().st_size for p in (root / "decoded").rglob("*")) / 2**20
    if kind != "nifti":
        lean, _ = datamodule(folder, "disk", root, workers, augment=False)
        row["cached, no augmentation"] = loader_rate(lean, workers, seconds) / workers
    plain, _ = datamodule(folder, "none", root, workers)
    row["none"] = loader_rate(plain, workers, seconds) / workers
    shutil.rmtree(folder)
    shutil.rmtree(root)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--images", type=int, default=300, help="files per 2D source")
    parser.add_argument("--volumes", type=int, default=12, help="NIfTI volumes")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--tmp", default=None, help="where to generate (default: a temp dir)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="medclf-loader-", dir=args.tmp))
    rows = []
    try:
        for kind in args.sources.split(","):
            count = args.volumes if kind == "nifti" else args.images
            rows.append(bench(kind, tmp, count, args.workers, args.seconds))
            print(f"{kind}: {rows[-1]}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{os.cpu_count()} cores, {args.workers} loader workers; images/s per core (÷ workers) "
        "through the train DataLoader, 224 px (volumes 128³), augment=default\n"
    )
    columns = [
        "source",
        "files",
        "file MB",
        "decode 1 core",
        "none",
        "first setup s",
        "build images/s",
        "cached",
        "later setup s",
        "later cached",
        "cached, no augmentation",
        "speed-up",
        "later/first setup",
        "dtype",
        "cache MB",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        row["speed-up"] = f"{row['later cached'] / row['none']:.0f}x"
        row["later/first setup"] = f"{100 * row['later setup s'] / row['first setup s']:.1f}%"
        cells = []
        for key in columns:
            value = row.get(key, "")
            cells.append(f"{value:.1f}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
