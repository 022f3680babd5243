"""The distributed process group as the rest of medclf sees it: world size and rank, object
gathering, and the DDP environment variables of a process that runs several jobs.

(How ranks are started inside Hydra multiruns is medclf.pipeline.ddp.)
"""

from __future__ import annotations

import os

import torch


def initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world() -> tuple[int, int]:
    """(world size, rank) of this process; (1, 0) outside a distributed run."""
    if initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` outside distributed runs)."""
    if not initialized():
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
    if initialized():
        torch.distributed.destroy_process_group()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
