"""The search space: Hydra's sweep grammar as Optuna distributions, the check that a
command searches its study's space, and conditional spaces for
``hydra.sweeper.custom_search_space`` (functions ``(cfg, trial) -> None`` that suggest
parameters depending on others)."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from medclf.errors import ConfigError
from medclf.search.storage import redact

FIXED_ATTR = "fixed_params"  # trial user attribute: the sweep's fixed overrides


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of a sweep override (``choice(...)``, ``range(...)``,
    ``interval(lo, hi)``, ``tag(log, interval(lo, hi))``), or a plain override's value."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    if override.is_interval_sweep():
        value = override.value()
        return FloatDistribution(value.start, value.end, log="log" in value.tags)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if override.is_range_sweep() and not override.value().shuffle:
        step = override.value().step
        if all(isinstance(v, int) for v in (*values, step)):
            return IntDistribution(values[0], values[-1], step=step)
        return FloatDistribution(values[0], values[-1], step=step)
    return CategoricalDistribution(values)


def search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Split overrides into the searched distributions and the fixed values; a later
    override of the same key (the command line after ``params``) wins."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        name = override.get_key_element()
        value = distribution(override)
        space.pop(name, None)
        fixed.pop(name, None)
        if isinstance(value, BaseDistribution):
            space[name] = value
        else:
            fixed[name] = value
    return space, fixed


SPACE_ATTR = "search_space"  # the study's user attribute: its searched distributions (JSON)


def _space_json(space: dict[str, BaseDistribution]) -> dict[str, str]:
    return {name: distribution_to_json(space[name]) for name in sorted(space)}


def check_space(study: optuna.Study, space: dict[str, BaseDistribution], storage: str) -> None:
    """The command searches the study's space: the first session (or worker) records it in
    the study, every later one must search the same (a study created before this check was
    recorded is compared with its trials' distributions)."""
    mine = _space_json(space)
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        stored = {}
        for trial in study.get_trials(deepcopy=False):
            for name, dist in trial.distributions.items():
                if name in space:
                    stored.setdefault(name, distribution_to_json(dist))
        if all(stored[name] == mine[name] for name in stored):
            study.set_user_attr(SPACE_ATTR, mine)
            return
        stored = {**mine, **stored}
    differences = []
    for name in sorted(set(stored) | set(mine)):
        there, here = stored.get(name), mine.get(name)
        if there == here:
            continue
        if there is None:
            differences.append(f"{name} is searched here, not in the study")
        elif here is None:
            differences.append(f"{name} is searched in the study, not here")
        else:
            study_dist = optuna.distributions.json_to_distribution(there)
            differences.append(f"{name} is {space[name]} here, {study_dist} in the study")
    if differences:
        raise ConfigError(
            f"hydra.sweeper.params: the search space differs from that of study "
            f"{study.study_name!r} in {redact(storage)}: {'; '.join(differences)}. Search the "
            "study's space, or start another study with hydra.sweeper.study_name=NAME."
        )


def focal_gamma(cfg: DictConfig, trial: optuna.Trial) -> None:
    """Conditional space of conf/hparams_search/optuna.yaml: the focal loss's gamma, searched
    only in trials that use ``loss=focal`` (cross-entropy has no gamma)."""
    fixed = trial.user_attrs.get(FIXED_ATTR, {})
    loss = trial.params.get("loss") or fixed.get("loss") or OmegaConf.select(cfg, "loss.name")
    if loss == "focal" and "loss.gamma" not in fixed:
        trial.suggest_float("loss.gamma", 0.5, 5.0)
