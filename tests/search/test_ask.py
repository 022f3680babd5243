"""A shared study's trial gets its first heartbeat before the sampler draws its parameters:
a worker killed while the sampler runs leaves a trial whose heartbeat goes stale (and is
retried), not a RUNNING trial nobody ever fails."""

from __future__ import annotations

from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from medclf.search.trials import Trials

SPACE = {
    "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
    "datamodule.batch_size": IntDistribution(8, 64, step=8),
    "loss": CategoricalDistribution(["ce", "focal"]),
}


class Watching(optuna.samplers.RandomSampler):
    """A sampler that notes, for each draw, whether the trial's heartbeat was recorded."""

    def __init__(self, beats: set[int]) -> None:
        super().__init__(seed=0)
        self.beats = beats
        self.drawn: list[tuple[str, bool]] = []

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.drawn.append((param_name, trial.number in self.beats))
        return super().sample_independent(study, trial, param_name, param_distribution)


def _trials(tmp_path: Path) -> Trials:
    return Trials(
        launcher=None,
        config=OmegaConf.create({}),
        sweep_dir=tmp_path,
        storage=None,
        study_name="s",
        pruner=None,
    )


def test_the_first_heartbeat_comes_before_the_sampler_draws(tmp_path: Path) -> None:
    beats: set[int] = set()
    sampler = Watching(beats)
    study = optuna.create_study(sampler=sampler)
    trial = _trials(tmp_path).ask(study, SPACE, {}, started=lambda t: beats.add(t.number))
    assert [name for name, _ in sampler.drawn] == list(SPACE)
    assert all(beaten for _, beaten in sampler.drawn)
    assert set(trial.params) == set(SPACE) and trial.distributions == SPACE


def test_a_queued_retry_keeps_its_parameters(tmp_path: Path) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    fixed = {"optimizer.lr": 0.0123, "datamodule.batch_size": 24, "loss": "focal"}
    study.enqueue_trial(fixed)
    trial = _trials(tmp_path).ask(study, SPACE, {})
    assert trial.params == fixed and trial.distributions == SPACE
