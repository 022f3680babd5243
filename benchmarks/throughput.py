"""Training throughput: a bare PyTorch loop against ``python train.py``, and the input
pipeline alone, for one backbone, image size, batch size and device.

    python benchmarks/throughput.py --backbone resnet18 --image-size 64 --batch-size 32
    python benchmarks/throughput.py --backbone resnet50 --image-size 224 --batch-size 128 \\
        --device cuda --precision bf16-mixed --channels-last [--compile]
    python benchmarks/throughput.py --smoke      # for CI: only checks the table

Prints a markdown table (images per second, the ratio (b)/(a)) and the start-up times.
Extra ``KEY=VALUE`` arguments are Hydra overrides for both (a) and (b), e.g. ``optimizer=sgd``.

What is timed, and why (a) and (b) compare fairly:

(a) bare loop, in a fresh process (this script with ``--bare-only``): the model that
    ``medclf.pipeline.build.build_model`` (what training uses) builds for the same composed
    config as (b), its loss (``module.criterion``) and the optimizer of its
    ``configure_optimizers``.
    A step copies the batch to the device, zeroes the gradients, runs forward and loss (under
    ``torch.autocast`` for mixed precision, with a GradScaler for 16-mixed on a GPU),
    backward and the optimizer step. Nothing else.
(b) ``python train.py`` in a fresh process: the default callbacks (checkpoint, early stopping,
    rich progress bar drawn on a pseudo-terminal, learning-rate monitor), train metrics and
    MLflow logging to a fresh SQLite store, plus one callback, ``StepTimer``, that takes
    the timestamps (``test=false``: the run ends after fit).

Both read the same batches: ``InMemoryDataModule`` is the platform's datamodule whose random
images are resized and transformed once in ``setup`` and then served from memory, through the
same DataLoader in the main process (no decoding or augmentation in the timed steps). Both
time the same window: wall clock from the end of step ``--warmup`` to the end of step
``--warmup + --steps`` (the GPU synchronised at both ends), so compilation, cuDNN autotuning
and first allocations fall in the warm-up (on CPU the first 4 or so steps of a process take
seconds each); images/s = steps x batch size / window. A second column gives the rate at
the median step (batch size / median time between consecutive step ends), which other load
on a shared machine disturbs less; on a quiet machine the two agree (on a GPU, where the
loop may run ahead of the device between the window's ends, trust the window). Inside the
window (b) does all the platform does per step (Lightning's loop, metric updates, logging
every ``trainer.log_every_n_steps``, progress bar, callback hooks); its once-per-epoch work
(validation, epoch metrics, writing the checkpoint) comes after the window and is reported in
seconds. (a) runs before and after (b) (``--rounds N``: a, b, a, ... with N runs of (b)),
and the runs are averaged, so drifting machine load hits both.
(Both run in fresh processes: the same loop inside this longer-lived process measured 5-8 %
slower here.)

(c) the input pipeline alone: ``--pipeline-images`` JPEG files (smooth random images of
``--file-size`` px) in a temporary folder, read by the platform's FolderDataModule with the
default augmentation (``augment=default``) through its train DataLoader: decode, resize,
augment, to tensor, collate. With 1 worker and with the default ``datamodule.num_workers``;
timed from the arrival of each worker's first batch to the last batch (start-up excluded).

Start-up: ``python train.py --help`` (best of 3), and from (b) the time from starting the
command to its first training step (imports, config, data, model, MLflow run, sanity check).

``--smoke`` (what the tests run) checks that the table comes out, not the numbers: tiny
settings, (a) once and in this process, ``--help`` once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medclf.data.datamodule import ClassificationDataModule
from medclf.data.sources import SampleTable
from medclf.data.transforms import image_hw

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class CycledItems(Dataset):
    """A split's items, transformed once and kept as tensors; ``length`` items cycle them."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        items = [dataset[i] for i in range(len(dataset))]
        self.images = torch.stack([item["image"] for item in items])
        self.targets = torch.stack([torch.as_tensor(item["target"]) for item in items])
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        i = key[1] if isinstance(key, tuple) else key  # the train sampler yields (epoch, i)
        j = i % len(self.images)
        return {"image": self.images[j], "target": self.targets[j], "index": j}


class InMemoryDataModule(ClassificationDataModule):
    """Random RGB images in ``classes`` classes, served from memory: ``train_batches``
    batches per epoch and ``eval_batches`` for validation and test."""

    def __init__(
        self, train_batches: int = 20, eval_batches: int = 1, classes: int = 10, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.classes = classes

    def load_table(self) -> SampleTable:
        height, width = image_hw(self.image_size)
        sizes = {"train": max(self.batch_size, min(4 * self.batch_size, 512))}
        sizes["val"] = sizes["test"] = self.batch_size
        n = sum(sizes.values())
        rng = np.random.default_rng(self.seed)
        arrays = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
        frame = pd.DataFrame(
            {
                "sample": [f"random_{i:05d}" for i in range(n)],
                "path": np.arange(n),
                "label": rng.integers(0, self.classes, n),
                "split": [split for split, size in sizes.items() for _ in range(size)],
            }
        )
        return SampleTable(frame, [str(c) for c in range(self.classes)], arrays=arrays)

    def setup(self, stage: str | None = None) -> None:
        if self.frame is not None:
            return
        super().setup(stage)
        lengths = {"train": self.train_batches, "val": self.eval_batches}
        for split in ("train", "val", "test"):
            length = lengths.get(split, self.eval_batches) * self.batch_size
            self.datasets[split] = CycledItems(self.datasets[split], length)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mark_step(ends: list[float], done: int, warmup: int, steps: int, device) -> None:
    """After step ``done``: note the time at the end of steps warmup … warmup + steps,
    synchronising the GPU at the first and the last (the window's ends)."""
    if warmup <= done <= warmup + steps:
        if done in (warmup, warmup + steps):
            _synchronize(device)
        ends.append(time.perf_counter())


def rates(ends: list[float], batch_size: int) -> tuple[float, float]:
    """Images/s over the window (steps x batch / its duration) and at the median step
    (batch / median step-to-step time: robust to other load on a shared machine)."""
    cycles = np.diff(ends)
    return len(cycles) * batch_size / (ends[-1] - ends[0]), batch_size / float(np.median(cycles))


def median_rate(runs: list[list[float]], batch_size: int) -> float:
    """Images/s at the median step over several runs' step end times."""
    return batch_size / float(np.median(np.concatenate([np.diff(ends) for ends in runs])))


class StepTimer(L.Callback):
    """In train.py: wall-clock time of the first step's start (to compare with the command's
    start), ``perf_counter`` at the end of steps ``warmup`` … ``warmup + steps`` and at the
    end of fit; written to ``path`` as JSON when fit ends."""

    def __init__(self, path: str, warmup: int, steps: int) -> None:
        self.path = path
        self.warmup = warmup
        self.steps = steps
        self.done = 0
        self.record: dict = {"ends": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.record.setdefault("first_step_start", time.time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done += 1
        mark_step(self.record["ends"], self.done, self.warmup, self.steps, pl_module.device)

    def on_train_end(self, trainer, pl_module) -> None:
        _synchronize(pl_module.device)
        self.record["train_end"] = time.perf_counter()
        self.record["batch_size"] = trainer.datamodule.batch_size
        Path(self.path).write_text(json.dumps(self.record))


def overrides(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides that (a) composes and (b) passes to train.py."""
    return [
        f"backbone={args.backbone}",
        f"datamodule.image_size={args.image_size}",
        f"datamodule.batch_size={args.batch_size}",
        "datamodule.num_workers=0",
        "datamodule._target_=throughput.InMemoryDataModule",
        "datamodule.cache=none",  # its own arrays, served from the host (not digits' on_device)
        "datamodule.on_device=false",
        f"+datamodule.train_batches={args.warmup + args.steps}",
        "+datamodule.eval_batches=1",
        f"trainer.precision={args.precision}",
        f"model.channels_last={str(args.channels_last).lower()}",
        f"model.compile={str(args.compile).lower()}",
        *args.overrides,
    ]


def bare_loop(args: argparse.Namespace, device: torch.device) -> list[float]:
    """(a) in this process: set up the model, loss and optimizer, run the warm-up and timed
    steps; the end times of steps warmup … warmup + steps."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from medclf.config import CONF_DIR
    from medclf.pipeline.build import build_model

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides(args))
    L.seed_everything(cfg.seed, verbose=False)
    kwargs = OmegaConf.to_container(cfg.datamodule, resolve=True)
    kwargs.pop("_target_")
    datamodule = InMemoryDataModule(**kwargs)
    datamodule.setup()
    model = build_model(cfg, datamodule).to(device).train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    precision = args.precision
    if precision == "16-mixed" and device.type == "cpu":
        precision = "bf16-mixed"  # as Lightning does: no float16 autocast on CPU
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None

    def step(batch: dict) -> None:
        image = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            loss = model.criterion(model(image).float(), target)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    ends = []
    for done, batch in enumerate(datamodule.train_dataloader(), start=1):
        step(batch)
        mark_step(ends, done, args.warmup, args.steps, device)
    return ends


def bare_run(args: argparse.Namespace, root: Path) -> list[float]:
    """(a) in a fresh process, as (b) is: this script with ``--bare-only``."""
    path = root / "bare.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--bare-only", str(path), *args.argv]
    subprocess.run(command, cwd=REPO, check=True)
    return json.loads(path.read_text())["ends"]


def platform_run(args: argparse.Namespace, root: Path) -> dict:
    """(b): ``python train.py`` with the same overrides and a StepTimer; its record."""
    record_path = root / "steps.json"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        *overrides(args),
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger.mlflow.save_model=false",
        "+callbacks.step_timer._target_=throughput.StepTimer",
        f"+callbacks.step_timer.path={record_path}",
        f"+callbacks.step_timer.warmup={args.warmup}",
        f"+callbacks.step_timer.steps={args.steps}",
    ]
    path = os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, MEDCLF_ROOT=str(root), PYTHONPATH=path, HF_HUB_OFFLINE="1")
    env.update(NO_ALBUMENTATIONS_UPDATE="1", COLUMNS="120", LINES="40")
    log_path = root / "train.log"
    start = time.time()
    returncode = _run_on_terminal(command, env, log_path)
    wall = time.time() - start
    if returncode != 0 or not record_path.exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"python train.py failed ({returncode}):\n{tail}")
    record = json.loads(record_path.read_text())
    record["to_first_step_s"] = record["first_step_start"] - start
    record["epoch_end_s"] = record["train_end"] - record["ends"][-1]
    record["wall_s"] = wall
    return record


def _run_on_terminal(command: list[str], env: dict, log_path: Path) -> int:
    """Run with stdout and stderr on a pseudo-terminal (the rich progress bar draws as for a
    user), copied to ``log_path``; plain pipes where there is no pty (Windows)."""
    try:
        import fcntl
        import pty
        import struct
        import termios
    except ImportError:
        with open(log_path, "wb") as log:
            return subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=log).returncode
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)

    def copy() -> None:
        with open(log_path, "wb") as log:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                log.write(data)

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    returncode = process.wait()
    reader.join(timeout=10)
    os.close(master)
    return returncode


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` smooth random RGB JPEGs (quality 90) in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        image = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.int16)
        image = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
        label = f"class_{i % 2}"
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / label / f"{i:05d}.jpg", quality=90)


def pipeline_images(args: argparse.Namespace) -> int:
    """``--pipeline-images``, raised so that every worker delivers at least 3 batches after
    its first (the timing starts once each worker has delivered one)."""
    workers = max(2, args.workers or 0)
    needed = args.batch_size * (4 * workers + 1) / 0.9  # 10 % go to val and test
    return max(args.pipeline_images, int(np.ceil(needed)))


def input_pipeline(args: argparse.Namespace, folder: Path) -> tuple[dict[int, float], int]:
    """(c): images/s of the train DataLoader over the JPEG folder by worker count (1, the
    default ``datamodule.num_workers``, ``--workers``), and that default."""
    import hydra
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.data.datamodule import FolderDataModule
    from medclf.data.dataset import auto_workers

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["datamodule=folder", "augment=default"])
    default_workers = cfg.datamodule.num_workers
    if default_workers == "auto":
        default_workers = auto_workers(on_gpu=args.device == "cuda")
    default_workers = max(int(default_workers), 1)
    results = {}
    for workers in sorted({1, default_workers, args.workers or default_workers}):
        datamodule = FolderDataModule(
            data_dir=folder,
            image_size=args.image_size,
            batch_size=args.batch_size,
            num_workers=workers,
            val_fraction=0.05,
            test_fraction=0.05,
            verify_images=False,
            augment=hydra.utils.instantiate(cfg.augment.image),
        )
        datamodule.setup()
        images, start = 0, None
        for i, batch in enumerate(datamodule.train_dataloader(), start=1):
            if i == workers:  # each worker has delivered its first batch
                start = time.perf_counter()
            elif start is not None:
                images += len(batch["target"])
        if start is None or images == 0:
            raise SystemExit(
                f"(c): {len(datamodule.train_dataloader())} batches are too few for {workers} "
                "workers; raise --pipeline-images"
            )
        results[workers] = images / (time.perf_counter() - start)
    return results, default_workers


def help_seconds(repeats: int = 3) -> float:
    """Best wall time of ``python train.py --help``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(REPO / "train.py"), "--help"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return min(times)


def describe(args: argparse.Namespace, device: torch.device) -> str:
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return (
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, {device.type} "
        f"({hardware}), {args.precision}, channels_last={args.channels_last}, "
        f"compile={args.compile}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"warm-up {args.warmup} + {args.steps} timed steps"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=PRECISIONS)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="(b) runs, between (a) runs")
    parser.add_argument("--workers", type=int, default=None, help="(c) also with this many")
    parser.add_argument("--pipeline-images", type=int, default=1024)
    parser.add_argument("--file-size", type=int, default=None, help="JPEG side (image size)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, for CI")
    parser.add_argument("--bare-only", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for (a) and (b)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.image_size, args.batch_size, args.steps, args.warmup = 32, 8, 2, 1
        args.pipeline_images = 48
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.bare_only:
        Path(args.bare_only).write_text(json.dumps({"ends": bare_loop(args, device)}))
        return
    print(describe(args, device), flush=True)
    bare_ends, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:  # the table, not the numbers: (a) once, in this process
            bare_ends.append(bare_loop(args, device))
            runs.append(platform_run(args, Path(tmp)))
        else:
            bare_ends.append(bare_run(args, Path(tmp)))
        for _ in range(0 if args.smoke else args.rounds):  # a, b, a, b, ..., a
            runs.append(platform_run(args, Path(tmp)))
            bare_ends.append(bare_run(args, Path(tmp)))
    bare_each = [rates(ends, args.batch_size)[0] for ends in bare_ends]
    full_each = [rates(run["ends"], args.batch_size)[0] for run in runs]
    bare, full = float(np.mean(bare_each)), float(np.mean(full_each))
    bare_median = median_rate(bare_ends, args.batch_size)
    full_median = median_rate([run["ends"] for run in runs], args.batch_size)
    print()
    print("| measurement | images/s | at the median step | note |")
    print("| --- | ---: | ---: | --- |")
    print(
        f"| (a) bare PyTorch loop | {bare:.1f} | {bare_median:.1f} | model step only; "
        f"runs: {', '.join(f'{r:.1f}' for r in bare_each)} |"
    )
    print(
        f"| (b) `python train.py` | {full:.1f} | {full_median:.1f} | (b)/(a) = "
        f"{full / bare:.3f}, at the median step {full_median / bare_median:.3f}; "
        f"runs: {', '.join(f'{r:.1f}' for r in full_each)} |",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(folder, pipeline_images(args), args.file_size or args.image_size)
        pipeline, workers = input_pipeline(args, folder)
    others = "".join(f"{w} worker(s): {v:.1f}; " for w, v in pipeline.items() if w != workers)
    print(
        f"| (c) input pipeline, {workers} workers (default) | {pipeline[workers]:.1f} | | "
        f"{pipeline[workers] / workers:.1f} per worker; {others}"
        f"(c)/(a) = {pipeline[workers] / bare:.2f} |"
    )
    print()
    repeats = 1 if args.smoke else 3
    print(
        f"start-up: `python train.py --help` {help_seconds(repeats):.2f} s (best of {repeats}); "
        f"command to first training step {_mean(runs, 'to_first_step_s'):.1f} s"
    )
    print(
        f"(b) once per epoch after the timed steps (validation of 1 batch, epoch metrics, "
        f"checkpoint): {_mean(runs, 'epoch_end_s'):.2f} s; whole command "
        f"{_mean(runs, 'wall_s'):.1f} s"
    )


def _mean(runs: list[dict], key: str) -> float:
    return float(np.mean([run[key] for run in runs]))


if __name__ == "__main__":
    main()
