"""The training step's own cost: a bare PyTorch step against the platform's step (Lightning's
loop, the module's metrics and logging, the platform's callbacks, the progress bar, an MLflow
logger), alternating in one process so that other load on a shared machine hits both.

The model, loss, optimizer and batches are the same (benchmarks/throughput.py's in-memory
data module and bare loop, from the composed config); each round times ``--steps`` steps of
each after ``--warmup``, as wall time and as this process's CPU time (less disturbed by other
processes). Prints, per measure, the median step of (a) and (b), their difference (the
platform's overhead per step) and the ratio (b)/(a).

    python benchmarks/step_overhead.py [--backbone resnet18] [--image-size 32]
        [--batch-size 64] [--rounds 5] [--steps 20] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402


class Clock(L.Callback):
    """Wall and CPU time at the end of each training step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def _cfg(args, root: Path):
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR

    overrides = [
        *throughput.overrides(args),
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
    ]
    from medclf.models.registry import import_plugins

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    import_plugins(list(cfg.imports))  # e.g. imports=[tiny_backbone] for the tests' backbones
    return cfg


def bare(args, cfg) -> tuple[list[float], list[float]]:
    """(a): step end times (wall, CPU) of the bare loop."""
    from omegaconf import OmegaConf

    from medclf.pipeline.build import build_model

    L.seed_everything(cfg.seed, verbose=False)
    kwargs = OmegaConf.to_container(cfg.datamodule, resolve=True)
    kwargs.pop("_target_")
    datamodule = throughput.InMemoryDataModule(**kwargs)
    datamodule.setup()
    model = build_model(cfg, datamodule).train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    wall, cpu = [], []
    for batch in datamodule.train_dataloader():
        optimizer.zero_grad(set_to_none=True)
        model.criterion(model(batch["image"]).float(), batch["target"]).backward()
        optimizer.step()
        wall.append(time.perf_counter())
        cpu.append(time.process_time())
    return wall, cpu


def platform(args, cfg) -> tuple[list[float], list[float]]:
    """(b): step end times (wall, CPU) of ``trainer.fit`` with the run's module, callbacks
    and loggers as medclf.pipeline.train builds them."""
    from medclf.pipeline.build import (
        build_model,
        instantiate_callbacks,
        instantiate_loggers,
        make_datamodule,
        make_trainer,
    )

    L.seed_everything(cfg.seed, verbose=False)
    datamodule = make_datamodule(cfg)
    model = build_model(cfg, datamodule)
    loggers = instantiate_loggers(cfg.get("logger"), "step overhead")
    callbacks = instantiate_callbacks(cfg.callbacks, {"config_digest": "0" * 64, "command": ""})
    clock = Clock()
    trainer = make_trainer(cfg.trainer, loggers, [*callbacks, clock])
    trainer.fit(model, datamodule=datamodule)
    for logger in loggers:
        if hasattr(logger, "end_run"):
            logger.end_run("FINISHED")
    return clock.wall, clock.cpu


def _steps(ends: list[float], warmup: int) -> np.ndarray:
    return np.diff(np.asarray(ends[warmup - 1 :]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    args.precision, args.channels_last, args.compile = "32-true", False, False
    times: dict[str, dict[str, list]] = {k: {"wall": [], "cpu": []} for k in ("a", "b")}
    # the run's background writers may still be closing files when the folder goes
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        cfg = _cfg(args, Path(tmp))
        for _ in range(args.rounds):
            for key, run in (("a", bare), ("b", platform)):
                wall, cpu = run(args, cfg)
                times[key]["wall"].append(_steps(wall, args.warmup))
                times[key]["cpu"].append(_steps(cpu, args.warmup))
    print(
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, CPU, "
        f"{torch.get_num_threads()} threads; {args.rounds} rounds of {args.steps} steps "
        f"after {args.warmup}, (a) and (b) alternating; median step, ms\n"
    )
    print("| measure | (a) bare | (b) platform | (b) - (a) | (b)/(a) |")
    print("|---|---:|---:|---:|---:|")
    for measure in ("wall", "cpu"):
        a = 1000 * float(np.median(np.concatenate(times["a"][measure])))
        b = 1000 * float(np.median(np.concatenate(times["b"][measure])))
        print(f"| {measure} | {a:.1f} | {b:.1f} | {b - a:+.1f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
