"""Starting the workers of a study on a database server: ``hydra.sweeper.workers=N`` (or
``auto``: one per visible GPU, or per group of ``trainer.devices`` GPUs) processes on this
node, each pinned to its own GPUs (on CPU: the cores shared out as torch threads), or, with
``hydra/launcher=slurm``, a SLURM job array of N workers (``array_parallelism`` at once).

Each worker is this very command with ``hydra.sweeper.workers=1`` (and the basic launcher
inside an array task): it opens the shared study and takes trials until the study is done
(medclf.search.shared). Kept free of Optuna and torch at import: an array task imports this
module to start its worker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError

log = logging.getLogger("medclf.search")

WORKER_ENV = "MEDCLF_SWEEP_WORKER"  # "i/N" in a worker started here (its parent reports)
ARRAY_LAUNCHERS = {"SlurmLauncher": "slurm", "LocalLauncher": "local"}  # hydra-submitit's


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else all."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def devices_per_worker(config: DictConfig) -> int:
    """The devices one trial trains on: ``trainer.devices`` when a count, else 1."""
    devices = OmegaConf.select(config, "trainer.devices")
    return devices if isinstance(devices, int) and devices > 0 else 1


def worker_environments(
    count: int, gpus: Sequence[str], per_worker: int, cores: int
) -> list[dict[str, str]]:
    """Each worker's environment: its own group of ``per_worker`` GPUs, or on CPU
    ``cores // (count × per_worker)`` threads (unless OMP_NUM_THREADS is set already)."""
    envs = []
    for index in range(count):
        env = {WORKER_ENV: f"{index}/{count}"}
        if gpus:
            group = list(gpus[index * per_worker : (index + 1) * per_worker])
            if len(group) < per_worker:
                raise ConfigError(
                    f"hydra.sweeper.workers={count} with trainer.devices={per_worker} needs "
                    f"{count * per_worker} GPUs, {len(gpus)} are visible "
                    f"({','.join(gpus)}): use fewer workers or hydra.sweeper.workers=auto."
                )
            env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        elif "OMP_NUM_THREADS" not in os.environ:
            threads = str(max(1, cores // (count * per_worker)))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        envs.append(env)
    return envs


def worker_command(argv: Sequence[str], array: bool = False) -> list[str]:
    """This command as one worker runs it: ``hydra.sweeper.workers=1`` and, in an array
    task, the basic launcher (the task is the worker)."""
    dropped = ("hydra.sweeper.workers=", "hydra/launcher=", "hydra.launcher.")
    kept = [a for a in argv if not a.lstrip("+~").startswith(dropped if array else dropped[:1])]
    extra = ["hydra.sweeper.workers=1"] + (["hydra/launcher=basic"] if array else [])
    return [sys.executable, "-m", "medclf.cli.train", *kept, *extra]


def shown(command: Sequence[str]) -> str:
    """The command for a log line, with the storage's password hidden."""
    from medclf.search.storage import redact

    key = "hydra.sweeper.storage="
    return " ".join(
        f"{key}{redact(part[len(key) :])}" if part.startswith(key) else part for part in command
    )


def run_command(command: list[str], env: dict[str, str]) -> int:
    """An array task: run the worker command here (DDP ranks, if any, are started by the
    worker itself, not by SLURM tasks); a failure raises, so submitit reports it."""
    environment = {**os.environ, **env}
    for name in ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE"):  # Lightning: no SLURM-run ranks
        environment.pop(name, None)
    code = subprocess.call(command, env=environment)
    if code != 0:
        raise RuntimeError(f"the worker exited with status {code}")
    return code


@dataclass
class LocalWorkers:
    """N worker processes on this node."""

    command: list[str]
    envs: list[dict[str, str]]

    def run(self) -> list[str]:
        """Start them, wait for all; a Ctrl-C reaches them too (one process group) and
        each hands its trial back; SIGTERM is passed on. Returns a line per failed one."""
        log.info("starting %d workers: %s", len(self.envs), shown(self.command))
        processes = [subprocess.Popen(self.command, env={**os.environ, **env}) for env in self.envs]

        def forward(signum, frame):
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        try:
            codes = [process.wait() for process in processes]
        except KeyboardInterrupt:
            for process in processes:
                try:
                    process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    process.kill()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return [
            f"worker {i} (pid {p.pid}, {_pinned(env)}) ended with {_status(code)}"
            for i, (p, env, code) in enumerate(zip(processes, self.envs, codes, strict=True))
            if code != 0
        ]


def _pinned(env: dict[str, str]) -> str:
    if "CUDA_VISIBLE_DEVICES" in env:
        return f"GPUs {env['CUDA_VISIBLE_DEVICES']}"
    return f"{env.get('OMP_NUM_THREADS', os.environ.get('OMP_NUM_THREADS', '?'))} CPU threads"


def _status(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def array_parameters(launcher: DictConfig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(cluster, executor arguments, job parameters) for submitit from the composed
    ``hydra.launcher`` of hydra-submitit-launcher, as that launcher maps them; each array
    task is one worker on one node (one task: the worker starts its own DDP ranks)."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = OmegaConf.to_container(launcher, resolve=True)
    cluster = ARRAY_LAUNCHERS[str(params.pop("_target_")).rsplit(".", 1)[-1]]
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    params.update(nodes=1, tasks_per_node=1)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    return cluster, init, {k if k in shared else f"{cluster}_{k}": v for k, v in params.items()}


@dataclass
class ArrayWorkers:
    """N workers as one submitit job array (SLURM, or local processes)."""

    launcher: DictConfig
    command: list[str]
    count: int
    env: dict[str, str] = field(default_factory=dict)

    def run(self) -> list[str]:
        import submitit

        cluster, init, params = array_parameters(self.launcher)
        executor = submitit.AutoExecutor(cluster=cluster, **init)
        executor.update_parameters(**params)
        envs = [{**self.env, WORKER_ENV: f"{i}/{self.count}"} for i in range(self.count)]
        jobs = executor.map_array(run_command, [self.command] * self.count, envs)
        log.info(
            "submitted %d workers as %s job array %s: %s",
            self.count,
            cluster,
            jobs[0].job_id.split("_")[0] if jobs else "-",
            shown(self.command),
        )
        failed = []
        for index, job in enumerate(jobs):
            try:
                job.result()
            except Exception as exc:
                failed.append(f"worker {index} (job {job.job_id}) failed: {exc}")
        return failed


def plan_workers(
    workers: int | str, config: DictConfig, n_trials: int
) -> LocalWorkers | ArrayWorkers | None:
    """The workers this command starts for a study on a server, or None when it is the one
    worker itself (``workers=1`` without a job-array launcher, or ``auto`` finding no GPU)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    argv = sys.argv[1:]
    per_worker = devices_per_worker(config)
    if target.rsplit(".", 1)[-1] in ARRAY_LAUNCHERS:
        if (OmegaConf.select(config, "trainer.num_nodes") or 1) > 1:
            raise ConfigError(
                "hydra.sweeper.workers: the workers of a job array train on one node each, "
                "not trainer.num_nodes>1; use trainer.devices for a node's GPUs, or a "
                "database-less study (hydra.sweeper.storage=sqlite:///...) for multi-node jobs."
            )
        parallel = OmegaConf.select(config, "hydra.launcher.array_parallelism") or n_trials
        count = min(n_trials, parallel) if workers == "auto" else int(workers)
        return ArrayWorkers(config.hydra.launcher, worker_command(argv, array=True), count)
    if workers == 1:
        return None
    gpus = visible_gpus()
    count = max(1, len(gpus) // per_worker) if workers == "auto" else int(workers)
    if count == 1 and workers == "auto":
        log.info("hydra.sweeper.workers=auto: %d GPU(s) visible, one worker", len(gpus))
        return None
    cores = len(os.sched_getaffinity(0))
    envs = worker_environments(count, gpus, per_worker, cores)
    return LocalWorkers(worker_command(argv), envs)
