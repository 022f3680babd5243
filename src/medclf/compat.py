"""Every use of another library's private API, in one place, each with a test
(tests/test_compat.py) that fails when an upgrade moves or changes what it relies on.

Nothing else in medclf touches a name starting with ``_`` of Lightning, torchmetrics, timm,
MONAI, MLflow or OmegaConf. The libraries are imported inside the functions, so importing
this module stays cheap (``--help`` imports neither torch nor Lightning).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

# Lightning's DDP launcher starts ranks 1..N-1 with the command this function returns (a
# module-level function of both launcher modules, looked up at call time).
_LAUNCHER_MODULES = (
    "lightning.fabric.strategies.launchers.subprocess_script",
    "lightning.pytorch.strategies.launchers.subprocess_script",
)
_RELAUNCH_FUNCTION = "_hydra_subprocess_cmd"


def lightning_relaunch_command(local_rank: int) -> tuple[list[str], str]:
    """Lightning's own command (and working directory) for DDP rank ``local_rank`` of a Hydra
    app: the user's command line with the run directory pinned."""
    import importlib

    module = importlib.import_module(_LAUNCHER_MODULES[0])
    original = getattr(module, "_medclf_original", getattr(module, _RELAUNCH_FUNCTION))
    return original(local_rank=local_rank)


def route_ddp_relaunch(command: Callable[[int], tuple[list[str], str]]) -> None:
    """Make Lightning start DDP ranks > 0 with ``command(local_rank)`` (idempotent)."""
    import importlib

    for name in _LAUNCHER_MODULES:
        module = importlib.import_module(name)
        current = getattr(module, _RELAUNCH_FUNCTION)
        if current is command:
            continue
        if not hasattr(module, "_medclf_original"):
            module._medclf_original = current
        setattr(module, _RELAUNCH_FUNCTION, command)


def epochs_processed(trainer: Any) -> int:
    """The epoch the fit loop runs next: epochs whose training has been processed, which a
    checkpoint taken at validation end counts before the epoch is marked completed."""
    return int(trainer.fit_loop.epoch_progress.current.processed)


@functools.cache
def rich_progress_bar_class() -> type:
    """Lightning's RichProgressBar with a public hook, ``read_metrics_now(trainer)``, deciding
    whether its private ``_update_metrics`` reads the logged metrics at this call."""
    from lightning.pytorch.callbacks import RichProgressBar

    class HookedRichProgressBar(RichProgressBar):
        def read_metrics_now(self, trainer: Any) -> bool:
            return True

        def _update_metrics(self, trainer: Any, pl_module: Any) -> None:
            if self.read_metrics_now(trainer):
                super()._update_metrics(trainer, pl_module)

    return HookedRichProgressBar


def lightning_logs_this_step(module: Any) -> bool:
    """Whether Lightning's logger connector writes step metrics at the step the module's
    trainer runs now (every ``trainer.log_every_n_steps``; a value logged at another step is
    never written); True for a module without a trainer."""
    trainer = getattr(module, "_trainer", None)
    return trainer is None or bool(trainer._logger_connector.should_update_logs)


def mlflow_run_started(logger: Any) -> bool:
    """Whether Lightning's MLFlowLogger has created (or attached to) its run; asking for
    ``run_id`` would create one."""
    return bool(logger._initialized)


def multiclass_counts_update(metric: Any, preds: Any, target: Any) -> None:
    """Update a torchmetrics multiclass stat-scores metric (precision, recall, F1) from
    one-hot comparisons instead of its ``torch.bincount`` (which synchronises a GPU):
    torchmetrics' own input formatting, then its private state update."""
    import torch
    from torchmetrics.functional.classification.stat_scores import (
        _multiclass_stat_scores_format,
    )

    preds, target = _multiclass_stat_scores_format(preds, target, 1)
    classes = torch.arange(metric.num_classes, device=target.device)
    predicted = preds.reshape(-1, 1) == classes
    actual = target.reshape(-1, 1) == classes
    tp = (predicted & actual).sum(0)
    fp = predicted.sum(0) - tp
    fn = actual.sum(0) - tp
    metric._update_state(tp, fp, len(actual) - tp - fp - fn, fn)


def timm_feature_take_indices(num_features: int, indices: Any) -> tuple[list[int], int]:
    """timm's helper resolving ``forward_intermediates`` indices (not exported publicly)."""
    from timm.models._features import feature_take_indices

    return feature_take_indices(num_features, indices)


def monai_efficientnet_features(net: Any) -> OrderedDict:
    """The parts ``monai.networks.nets.EfficientNetBN.forward`` runs before its pooling, by
    their (private) attribute names: stem, blocks, head convolution, batch norm, swish."""
    return OrderedDict(
        _conv_stem_padding=net._conv_stem_padding,
        _conv_stem=net._conv_stem,
        _bn0=net._bn0,
        _swish0=net._swish,
        _blocks=net._blocks,
        _conv_head_padding=net._conv_head_padding,
        _conv_head=net._conv_head,
        _bn1=net._bn1,
        _swish=net._swish,
    )


def share_hydra_group_listing() -> None:
    """Make Hydra's ``--help`` list the config groups from one copy of its config repository.

    Hydra's help lists every group's options with ``ConfigLoaderImpl.get_group_options``,
    which deep-copies the whole repository for each of the ~130 groups it visits (5 s with
    the backbone registry's 63 options in the ConfigStore). A listing without a config name
    or overrides always builds the same copy, so it is built once here."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    if getattr(original, "medclf_shared", False):
        return

    @functools.wraps(original)
    def shared(self, config_name, overrides):
        if config_name is not None or overrides:
            return original(self, config_name, overrides)
        if getattr(self, "_medclf_listing", None) is None:
            self._medclf_listing = original(self, config_name, overrides)
        return self._medclf_listing

    shared.medclf_shared = True
    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = shared


@contextlib.contextmanager
def mlflow_requirement_check_without_module_map(requirements: list[str]) -> Iterator[None]:
    """Let ``mlflow.pyfunc.log_model(pip_requirements=...)`` check ``requirements`` against
    the environment without first mapping every installed distribution to its modules.

    MLflow's check looks each requirement's version up with ``importlib.metadata.version``
    and uses the module map (``importlib.metadata.packages_distributions()``, 1.5–3.6 s
    with this project's environment) only for a distribution without metadata, to import
    its module instead. For the duration of the block the map holds just the requirements'
    own names; it is unset again afterwards, so a later requirement inference builds the
    full map as before."""
    from mlflow.utils import requirements_utils

    if requirements_utils._MODULES_TO_PACKAGES is not None:
        yield
        return
    names = [re.split(r"[\s\[<>=!~;@]", r.strip(), maxsplit=1)[0] for r in requirements]
    requirements_utils._MODULES_TO_PACKAGES = {
        name.replace("-", "_"): [name] for name in names if name
    }
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None


def albumentations_seed(pipeline: Any, seed: int | None) -> None:
    """Seed an albumentations pipeline so that its transforms draw from one random stream.

    albumentations 2's ``set_random_seed`` (and ``Compose(seed=...)``) gives the pipeline and
    each transform in it generators of their own, all seeded with ``seed``: every transform
    then draws the same numbers, so decisions that should be independent coincide. With
    HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) either both flips happen or neither, never
    one (2.0.8: 209 and 191 of 400 seeds); a flip, a quarter turn and a brightness change
    likewise. Here the pipeline and every transform in it (through OneOf and nested
    pipelines) share one ``numpy.random.Generator`` and one ``random.Random`` seeded with
    ``seed``: the transforms' draws follow one another, and the same seed still gives the
    same augmentation. ``None``: a fresh, unseeded stream. New generators cost about 13 µs,
    a quarter of albumentations' per-transform ones (a train sample is reseeded each time)."""
    import random

    import numpy as np

    generator, python = np.random.default_rng(seed), random.Random(seed)
    stack = [pipeline]
    while stack:
        node = stack.pop()
        node.seed = seed
        node.random_generator = generator
        node.py_random = python
        stack.extend(getattr(node, "transforms", []) or [])


# Optuna's storage methods that reach the database: BaseStorage's and BaseHeartbeat's abstract
# ones (the latter include the private ``_get_stale_trial_ids``, which Optuna's public
# ``fail_stale_trials`` calls) and the queries RDBStorage answers itself.
_OPTUNA_QUERIES = (
    "get_best_trial",
    "get_n_trials",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "get_trial_params",
    "get_trial_system_attrs",
    "get_trial_user_attrs",
    "remove_session",
)


def retrying_optuna_storage(backend: Any, retry: Callable[[Callable[[], Any], str], Any]) -> Any:
    """An Optuna storage that runs each call of ``backend`` (an RDBStorage) as
    ``retry(call, method_name)``. Given an RDBStorage, Optuna wraps it in its private
    ``_CachedStorage``, which calls the backend's private methods; this proxy is a
    ``BaseStorage`` and ``BaseHeartbeat`` of its own (Optuna uses it as it is), delegating
    every method that reaches the database."""
    from optuna.storages import BaseStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    names = sorted(
        set(BaseStorage.__abstractmethods__) | set(BaseHeartbeat.__abstractmethods__)
    ) + list(_OPTUNA_QUERIES)

    def delegate(name: str) -> Callable:
        def call(self, *args: Any, **kwargs: Any) -> Any:
            method = getattr(self.backend, name)
            return self.retry(lambda: method(*args, **kwargs), name)

        call.__name__ = name
        return call

    def init(self, backend: Any, retry: Callable) -> None:
        self.backend = backend
        self.retry = retry

    namespace = {name: delegate(name) for name in names}
    namespace["__init__"] = init
    return type("RetryingStorage", (BaseStorage, BaseHeartbeat), namespace)(backend, retry)
