"""A command searches its study's space (medclf.search.spaces.check_space)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from medclf.errors import ConfigError
from medclf.search.spaces import SPACE_ATTR, check_space

LR = FloatDistribution(1e-4, 1e-2, log=True)


def test_the_first_session_records_the_space_and_later_ones_must_search_it() -> None:
    study = optuna.create_study(study_name="s")
    check_space(study, {"optimizer.lr": LR}, "db")
    assert set(study.user_attrs[SPACE_ATTR]) == {"optimizer.lr"}
    check_space(study, {"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)}, "db")
    other = {"optimizer.lr": FloatDistribution(1e-3, 1e-1, log=True)}
    with pytest.raises(ConfigError, match=r"optimizer\.lr is FloatDistribution\(high=0\.1"):
        check_space(study, other, "sqlite:///x.db")
    more = {"optimizer.lr": LR, "loss": CategoricalDistribution(["ce", "focal"])}
    with pytest.raises(ConfigError, match=r"loss is searched here, not in the study"):
        check_space(study, more, "db")
    with pytest.raises(ConfigError, match=r"optimizer\.lr is searched in the study, not here"):
        check_space(study, {}, "db")


def test_a_study_from_before_the_record_is_compared_with_its_trials() -> None:
    study = optuna.create_study()
    trial = study.ask({"optimizer.lr": LR})
    study.tell(trial, 0.5)
    with pytest.raises(ConfigError, match="the search space differs from that of study"):
        check_space(study, {"optimizer.lr": FloatDistribution(0.1, 0.5)}, "db")
    assert SPACE_ATTR not in study.user_attrs
    check_space(study, {"optimizer.lr": LR}, "db")  # the same: recorded from now on
    assert study.user_attrs[SPACE_ATTR] == {
        "optimizer.lr": optuna.distributions.distribution_to_json(LR)
    }
