"""Distributed training with Hydra: every rank runs its job's exact config, once.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the command line. Inside a
Hydra multirun that command is the whole sweep, so each child would run every job (and,
with a sampling sweeper, train other hyperparameters than its rank 0). :func:`install`
makes a multirun job's children run ``python -m medclf.train`` on the job's own resolved
``config.yaml`` in the job's directory instead. :class:`ConfigFingerprint` checks at fit
start that all ranks hold the same config (it stops every rank if not) and records each
rank's hash in ``<run dir>/ranks/``. :class:`EvalSampler` gives each rank its share of the
validation or test set without the padding of Lightning's DistributedSampler, so metrics
count each sample exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DistributedSampler

_LAUNCHER_MODULES = (
    "lightning.fabric.strategies.launchers.subprocess_script",
    "lightning.pytorch.strategies.launchers.subprocess_script",
)


def relaunch_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and working directory) that starts DDP rank ``local_rank`` of this job.

    In a multirun: this job's resolved config, from its directory, in run mode. Otherwise
    Lightning's own command (the user's command line with the run directory pinned)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return _lightning_command(local_rank)
    job_dir = Path(hydra_cfg.runtime.output_dir)
    command = [
        sys.executable,
        "-m",
        "medclf.train",
        "--config-path",
        str(job_dir),
        "--config-name",
        "config",
        f'hydra.run.dir="{job_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def _lightning_command(local_rank: int) -> tuple[list[str], str]:
    import lightning.fabric.strategies.launchers.subprocess_script as fabric_launcher

    original = getattr(fabric_launcher, "_medclf_original", fabric_launcher._hydra_subprocess_cmd)
    return original(local_rank=local_rank)


def install() -> None:
    """Route Lightning's DDP child launch through :func:`relaunch_command` (idempotent)."""
    import importlib

    for name in _LAUNCHER_MODULES:
        module = importlib.import_module(name)
        if module._hydra_subprocess_cmd is not relaunch_command:
            if name.startswith("lightning.fabric"):
                module._medclf_original = module._hydra_subprocess_cmd
            module._hydra_subprocess_cmd = relaunch_command


def config_hash(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config with the run directory written as ``<run dir>``
    (under torchrun each rank names its own; Lightning uses rank 0's for checkpoints)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    text = json.dumps(plain, sort_keys=True, default=str)
    run_dir = (plain.get("paths") or {}).get("output_dir")
    if run_dir:
        text = text.replace(json.dumps(str(run_dir))[1:-1], "<run dir>")
    return hashlib.sha256(text.encode()).hexdigest()


class ConfigFingerprint(Callback):
    """At setup, gather every rank's config hash; write ``ranks/rank<N>.json``; stop all
    ranks together if any differs from rank 0's."""

    def __init__(self, digest: str, output_dir: str | Path) -> None:
        self.digest = digest
        self.output_dir = Path(output_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        digests = [self.digest]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            digests = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(digests, self.digest)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "config_sha256": self.digest,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        folder = Path(trainer.strategy.broadcast(str(self.output_dir))) / "ranks"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=1))
        differing = [rank for rank, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise RuntimeError(
                f"DDP ranks {differing} run another config than rank 0 (hashes in {folder}); "
                "every rank must be started with the same overrides."
            )


class EvalSampler(DistributedSampler):
    """Rank r of N takes samples r, r+N, r+2N, ... in order: no padding, no repeats, so the
    synchronised metrics and the gathered predictions cover each sample once."""

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


def eval_sampler(dataset) -> EvalSampler | None:
    """An :class:`EvalSampler` when running distributed (world size > 1), else None."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world = torch.distributed.get_world_size()
    if world == 1:
        return None
    return EvalSampler(dataset, world, torch.distributed.get_rank())


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` outside distributed runs)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def ddp_environment() -> dict[str, str | None]:
    """The DDP variables of this process's environment (Lightning's launcher sets them)."""
    return {key: os.environ.get(key) for key in DDP_ENV}


def release(before: dict[str, str | None]) -> None:
    """After a job in a process that runs several (a sweep): drop the process group and
    restore the DDP variables as they were, else the next job would take LOCAL_RANK for
    an external launcher and wait for ranks nobody starts."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
