"""Resume a run from its checkpoint: same run directory, same MLflow run, same results.

``medclf-train <the same overrides> ckpt_path=last`` continues this command's own run
directory when it already holds checkpoints (a run started with ``hydra.run.dir=DIR``, as
SLURM jobs are), else the newest run under ``logs/`` whose overrides are this command's
(``ckpt_path`` aside); from the run's newest complete checkpoint (``last.ckpt``, written
every epoch, or an epoch checkpoint when the run was killed before writing it).
``ckpt_path=<file>`` continues the run that wrote the file. Training goes on in that run's
directory (its checkpoints, best score and early-stopping state carry on) and logs into
the MLflow run recorded in the checkpoint, which is set back to RUNNING.

Results equal an uninterrupted run's because nothing random depends on history: the train
order and augmentation are functions of (seed, epoch) (medclf.data.sampling), and
:class:`ResumeState` reseeds torch, numpy and random at every epoch start (dropout and any
other draw). The checkpoint stores the MLflow run id and the run directory; it is read with
``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from medclf.errors import ConfigError
from medclf.models.checkpoint import read_checkpoint
from medclf.tracking import names

log = logging.getLogger(__name__)

# keys whose value may differ between a run and its resumption
IGNORED_OVERRIDES = (
    "ckpt_path",
    "check_only",
    "paths.root_dir",
    "hydra.run.dir",
    "hydra.sweep.dir",
)


class ResumeState(Callback):
    """Reseeds the global generators at each train epoch start from (seed, epoch); writes
    the MLflow run id and the run directory into every checkpoint."""

    def __init__(self, seed: int, run_dir: str | Path) -> None:
        self.seed = int(seed)
        self.run_dir = str(run_dir)
        self.trackers: list = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        from medclf.tracking.logger import mlflow_loggers

        self.trackers = mlflow_loggers(trainer.loggers)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import numpy as np
        import torch

        from medclf.data.sampling import derived_seed

        seed = derived_seed(self.seed, trainer.current_epoch, 0x5EED)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        tracker = self.trackers[0] if self.trackers else None
        return {
            "mlflow_run_id": tracker.run_id if tracker is not None else None,
            "mlflow_tracking_uri": tracker.tracking_uri if tracker is not None else None,
            "run_dir": self.run_dir,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: :func:`plan` read the state before the run started."""


@dataclass
class Resume:
    ckpt_path: Path
    run_dir: Path | None  # the run directory to continue in (None: this run's own)
    mlflow_run_id: str | None
    epoch: int
    hparams: dict[str, Any]


def plan(
    ckpt_path: str,
    log_dir: str | Path,
    overrides: list[str],
    train: bool,
    own_dir: str | Path | None = None,
) -> Resume:
    """Resolve ``ckpt_path`` (``last`` or a file) and read what resuming needs from it;
    ``own_dir`` is this command's run directory, looked at first for ``last``."""
    if ckpt_path == "last":
        if not train:
            raise ConfigError("ckpt_path=last resumes training; with train=false give a file.")
        path = find_last(Path(log_dir), overrides, own_dir)
    else:
        path = Path(ckpt_path).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path={ckpt_path}: no such file. Give a .ckpt from a run directory's "
                "checkpoints/ folder, or ckpt_path=last to resume the newest run with these "
                "overrides."
            )
    checkpoint = read_checkpoint(path)
    state = (checkpoint.get("callbacks") or {}).get("ResumeState") or {}
    run_dir = None
    if train:
        recorded = state.get("run_dir")
        candidate = Path(recorded) if recorded else path.parent.parent
        folder = candidate / names.CHECKPOINTS_DIR
        if folder.is_dir() and path.parent.samefile(folder):
            run_dir = candidate
    return Resume(
        ckpt_path=path,
        run_dir=run_dir,
        mlflow_run_id=state.get("mlflow_run_id") if train else None,
        epoch=int(checkpoint.get("epoch", 0)),
        hparams=dict(checkpoint.get("hyper_parameters") or {}),
    )


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(
        str(o) for o in overrides if str(o).split("=", 1)[0].lstrip("+~") not in IGNORED_OVERRIDES
    )


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint in ``run_dir/checkpoints``: every ``.ckpt`` there is complete
    (Lightning and medclf write to a temporary file and rename it), so the newest one holds
    the latest state, ``last.ckpt`` or an epoch checkpoint written before a kill."""
    folder = run_dir / names.CHECKPOINTS_DIR
    files = [p for p in folder.glob("*.ckpt") if p.exists()] if folder.is_dir() else []
    if not files:
        return None
    # newest first; on a tie (a link and its target) the link's name, last.ckpt, wins
    return max(files, key=lambda p: (os.stat(p).st_mtime, p.name == "last.ckpt"))


def find_last(log_dir: Path, overrides: list[str], own_dir: str | Path | None = None) -> Path:
    """The checkpoint ``ckpt_path=last`` resumes: the newest one in this command's own run
    directory ``own_dir`` when it has any (``hydra.run.dir`` named a killed run's
    directory), else that of the newest run under ``log_dir`` (runs and multirun jobs)
    started with these overrides."""
    if own_dir is not None:
        own = newest_checkpoint(Path(own_dir))
        if own is not None:
            return own
    wanted = _comparable(overrides)
    found: list[tuple[float, Path, list[str]]] = []
    for pattern in ("runs/*", "multiruns/*/*"):
        for run_dir in log_dir.glob(pattern):
            checkpoint = newest_checkpoint(run_dir)
            if checkpoint is None:
                continue
            try:
                listed = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
            except (OSError, yaml.YAMLError):
                continue
            found.append((os.stat(checkpoint).st_mtime, checkpoint, _comparable(listed or [])))
    found.sort(key=lambda item: item[0], reverse=True)
    for _, checkpoint, listed in found:
        if listed == wanted:
            return checkpoint
    shown = "\n  ".join(
        f"{checkpoint}  ({' '.join(listed) or 'no overrides'})"
        for _, checkpoint, listed in found[:5]
    )
    own = f"{own_dir} (this command's run directory) has no checkpoint, and " if own_dir else ""
    raise ConfigError(
        f"ckpt_path=last: {own}no run under {log_dir} with the overrides "
        f"[{' '.join(wanted) or 'none'}] has a checkpoint"
        + (
            f". Newest runs that have one:\n  {shown}\nGive ckpt_path=<file> to resume one of "
            "them, or hydra.run.dir=<its run directory>."
            if found
            else "; nothing to resume."
        )
    )


def check_fits(resume: Resume, model) -> None:
    """The checkpoint's model must be this config's: same classes, channels, backbone, task."""
    hp = resume.hparams
    ours = model.hparams
    checks = [
        ("classes", list(hp.get("class_names") or []), list(ours["class_names"])),
        ("input channels", hp.get("in_chans"), ours["in_chans"]),
        ("task", hp.get("task"), ours["task"]),
        ("backbone", (hp.get("backbone") or {}).get("name"), ours["backbone"]["name"]),
    ]
    for what, theirs, mine in checks:
        if theirs != mine:
            raise ConfigError(
                f"ckpt_path={resume.ckpt_path} was trained with {what} {theirs!r}, but this "
                f"config and data give {mine!r}; resume with the config and data it was trained "
                "with, or leave ckpt_path=null to train a new model."
            )
