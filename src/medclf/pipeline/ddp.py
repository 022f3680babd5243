"""Distributed training with Hydra: every rank runs its job's exact config, once.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the command line. Inside a
Hydra multirun that command is the whole sweep, so each child would run every job (and,
with a sampling sweeper, train other hyperparameters than its rank 0). :func:`install`
makes a multirun job's children run ``python -m medclf.cli.train`` on the job's own
resolved ``config.yaml`` in the job's directory instead. :class:`ConfigFingerprint` checks
at fit start that all ranks hold the same config (it stops every rank if not) and records
each rank's hash in ``<run dir>/ranks/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from medclf import compat
from medclf.distributed import initialized


def relaunch_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and working directory) that starts DDP rank ``local_rank`` of this job.

    In a multirun: this job's resolved config, from its directory, in run mode. Otherwise
    Lightning's own command (the user's command line with the run directory pinned)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return compat.lightning_relaunch_command(local_rank)
    job_dir = Path(hydra_cfg.runtime.output_dir)
    command = [
        sys.executable,
        "-m",
        "medclf.cli.train",
        "--config-path",
        str(job_dir),
        "--config-name",
        "config",
        f'hydra.run.dir="{job_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def install() -> None:
    """Route Lightning's DDP child launch through :func:`relaunch_command` (idempotent)."""
    compat.route_ddp_relaunch(relaunch_command)


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
    """At setup, gather every rank's config hash; write ``ranks/rank<N>.json`` (with what
    the rank's image check decoded); stop all ranks together if any differs from rank 0's."""

    def __init__(self, output_dir: str | Path, config_digest: str) -> None:
        self.digest = config_digest
        self.output_dir = Path(output_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        digests = [self.digest]
        if initialized():
            digests = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(digests, self.digest)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "config_sha256": self.digest,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            # images known to the check cache / decoded to check them (ranks > 0 wait)
            "image_check": getattr(trainer.datamodule, "image_check", None),
            # images the decoded cache held intact / decoded now (ranks > 0 read rank 0's)
            "decoded_cache": {
                key: (getattr(trainer.datamodule, "cache_stats", None) or {}).get(key)
                for key in ("mode", "images", "known", "decoded")
            },
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
