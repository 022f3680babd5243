"""Structured configs of the medclf Optuna sweeper and its samplers.

The keys follow hydra-optuna-sweeper's (``sampler``, ``direction``, ``storage``,
``study_name``, ``n_trials``, ``n_jobs``, ``max_failure_rate``, ``params``,
``custom_search_space``), so its documentation applies; see medclf.search.study for what differs.

No ``from __future__ import annotations`` and typing's ``Optional``: Hydra loads plugin
modules outside sys.modules, where dataclasses need real types, and OmegaConf reads these.
"""
# ruff: noqa: UP006, UP035, UP045

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConfig:
    """optuna.samplers.TPESampler: random for ``n_startup_trials``, then TPE."""

    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True  # built by the sweeper, reseeded when a study resumes
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True


@dataclass
class RandomSamplerConfig:
    """optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"
    _partial_: bool = True
    seed: Optional[int] = None


@dataclass
class MedianPrunerConfig:
    """optuna.pruners.MedianPruner: stop a trial whose value after an epoch is worse than
    the median of the earlier trials' values after that epoch. Steps are epochs (0 is the
    first): nothing is pruned before ``n_startup_trials`` trials finished, nor in the first
    ``n_warmup_steps`` epochs of a trial."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConfig:
    """optuna.pruners.HyperbandPruner: successive halving in brackets; resources are epochs
    (``max_resource: auto`` takes the epochs of the first trial that finishes)."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class NopPrunerConfig:
    """No pruning: every trial trains all its epochs."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.medclf_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    # median | hyperband | none: trials report optimized_metric after each validation and
    # stop when the pruner says so (PRUNED in the study, KILLED + optuna_state=PRUNED in MLflow)
    pruner: Any = MISSING
    # maximize | minimize | null (minimize when optimized_metric names a loss, else maximize)
    direction: Optional[str] = None
    # An Optuna storage URL (sqlite:///PATH.db); null keeps the study in memory (no resume).
    storage: Optional[str] = None
    study_name: Optional[str] = None
    # Trials the study should hold when done, counting those finished in earlier sessions.
    n_trials: int = 20
    # Trials launched at once (a batch; parallel with hydra/launcher=joblib).
    n_jobs: int = 1
    # Fraction of failed trials in a batch above which the sweep stops.
    max_failure_rate: float = 0.0
    # Search space in Hydra's override grammar: KEY: choice(a,b) | interval(lo,hi) |
    # tag(log, interval(lo,hi)) | range(start,stop,step) | a fixed value.
    params: Optional[Dict[str, str]] = None
    # Dotted path of a function (cfg, trial) -> None that suggests conditional parameters.
    custom_search_space: Optional[str] = None
    # With a database server as storage (postgresql+psycopg://...; medclf-server starts one):
    # N | auto (one per visible GPU or group of trainer.devices GPUs): worker processes this
    # command starts, each taking the study's next trial; with hydra/launcher=slurm, the size
    # of the job array. Starting the same command N times (nodes, GPUs) does the same.
    workers: Any = 1
    # Seconds between a running trial's heartbeats; a trial silent for grace_period seconds
    # (its worker died) is failed and run again with its parameters, up to max_retry times.
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: Optional[int] = 3
    # Seconds the workers keep reconnecting to a database that went away (a restart).
    reconnect_timeout: float = 600.0


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="medclf_optuna", node=OptunaSweeperConf, provider="medclf")
store.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig, provider="medclf")
store.store(
    group="hydra/sweeper/sampler", name="random", node=RandomSamplerConfig, provider="medclf"
)
for name, node in (
    ("median", MedianPrunerConfig),
    ("hyperband", HyperbandPrunerConfig),
    ("none", NopPrunerConfig),
):
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="medclf")
