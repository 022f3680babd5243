"""One test per shim of medclf.compat: each fails when an upgrade of Lightning, torchmetrics,
timm or MONAI moves or changes the private API the shim relies on."""

from __future__ import annotations

import importlib
import inspect

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from medclf import compat


def _fit(tmp_path, callbacks, epochs: int = 2) -> L.Trainer:
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(BoringModel())
    return trainer


def test_ddp_relaunch_is_looked_up_by_both_launchers_at_call_time(monkeypatch) -> None:
    """Lightning starts DDP ranks > 0 with the command of the module-level function
    ``_hydra_subprocess_cmd(local_rank)``, looked up when the children are started."""
    for name in compat._LAUNCHER_MODULES:
        module = importlib.import_module(name)
        function = getattr(module, compat._RELAUNCH_FUNCTION)
        assert "local_rank" in inspect.signature(function).parameters
        monkeypatch.setattr(module, compat._RELAUNCH_FUNCTION, function)
        source = inspect.getsource(module._SubprocessScriptLauncher)
        assert f"{compat._RELAUNCH_FUNCTION}(" in source

    def mine(local_rank: int):
        return ["mine", str(local_rank)], "/"

    compat.route_ddp_relaunch(mine)
    compat.route_ddp_relaunch(mine)  # idempotent
    for name in compat._LAUNCHER_MODULES:
        assert getattr(importlib.import_module(name), compat._RELAUNCH_FUNCTION) is mine
    module = importlib.import_module(compat._LAUNCHER_MODULES[0])
    assert module._medclf_original.__module__ == compat._LAUNCHER_MODULES[0]  # Lightning's own


def test_epochs_processed_is_the_epoch_the_fit_loop_runs_next(tmp_path) -> None:
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append((trainer.current_epoch, compat.epochs_processed(trainer)))

    trainer = _fit(tmp_path, [Record()])
    assert seen == [(0, 0), (1, 1)]
    assert compat.epochs_processed(trainer) == 2


def test_rich_progress_bar_reads_metrics_through_the_hook(tmp_path) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    assert "pl_module" in inspect.signature(RichProgressBar._update_metrics).parameters
    calls = []

    class Never(compat.rich_progress_bar_class()):
        def read_metrics_now(self, trainer):
            calls.append(trainer.global_step)
            return False

        def get_metrics(self, trainer, pl_module):
            raise AssertionError("metrics read although the hook said no")

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[Never()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert calls  # Lightning called _update_metrics, which asked the hook
    assert compat.rich_progress_bar_class() is compat.rich_progress_bar_class()


def test_mlflow_run_started_before_and_after_the_run_exists(tmp_path) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_name="x")
    assert compat.mlflow_run_started(logger) is False
    assert logger.run_id  # creates the run
    assert compat.mlflow_run_started(logger) is True


def test_multiclass_counts_update_equals_torchmetrics_own_update() -> None:
    from torchmetrics.classification import MulticlassF1Score

    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 4, generator=generator)
    target = torch.randint(0, 4, (50,), generator=generator)
    for average in ("macro", None):
        ours, theirs = MulticlassF1Score(4, average=average), MulticlassF1Score(4, average=average)
        compat.multiclass_counts_update(ours, probs, target)
        theirs.update(probs, target)
        torch.testing.assert_close(ours.compute(), theirs.compute(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("indices", "expected"), [(None, ([0, 1, 2, 3, 4], 4)), (2, ([3, 4], 4)), ([1, 3], ([1, 3], 3))]
)
def test_timm_feature_take_indices(indices, expected) -> None:
    taken, last = compat.timm_feature_take_indices(5, indices)
    assert (list(taken), last) == expected


def test_monai_efficientnet_features_are_its_forward_up_to_pooling() -> None:
    from monai.networks import nets

    net = nets.EfficientNetBN(
        "efficientnet-b0", pretrained=False, spatial_dims=3, in_channels=1, num_classes=3
    ).eval()
    parts = compat.monai_efficientnet_features(net)
    features = torch.nn.Sequential(parts)
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = torch.nn.functional.adaptive_avg_pool3d(features(x), 1).flatten(1)
        expected = net(x)
        head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.testing.assert_close(head(pooled), expected, rtol=1e-5, atol=1e-5)


def test_shared_hydra_group_listing_lists_what_hydra_lists() -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from medclf.compat import share_hydra_group_listing
    from medclf.config import CONF_DIR

    groups = ("backbone", "loss", "datamodule", "hydra/launcher", "hydra/sweeper")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        before = {g: loader.get_group_options(g) for g in groups}
        share_hydra_group_listing()
        share_hydra_group_listing()  # once only
        after = {g: loader.get_group_options(g) for g in groups}
        listing = loader._parse_overrides_and_create_caching_repo
        assert listing(None, [])[1] is listing(None, [])[1]
        assert listing("train", [])[1] is not listing("train", [])[1]
    assert before == after and "densenet121" in after["backbone"]


def test_mlflow_requirement_check_needs_no_module_map_and_still_warns(monkeypatch):
    import importlib.metadata

    from mlflow.utils import requirements_utils

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)

    def every_distribution():
        raise AssertionError("the module map of every installed distribution was built")

    monkeypatch.setattr(importlib.metadata, "packages_distributions", every_distribution)
    monkeypatch.setattr(
        requirements_utils.importlib_metadata, "packages_distributions", every_distribution
    )
    warnings: list[str] = []
    monkeypatch.setattr(requirements_utils._logger, "warning", warnings.append)
    requirements = ["torch==0.0.1", "medclf", "no-such-package-medclf>=1"]
    with compat.mlflow_requirement_check_without_module_map(requirements):
        requirements_utils.warn_dependency_requirement_mismatches(requirements)
    (text,) = warnings
    assert f"torch (current: {torch.__version__.split('+')[0]}, required: torch==0.0.1)" in text
    assert "no-such-package-medclf (current: uninstalled" in text
    assert "- medclf" not in text
    assert requirements_utils._MODULES_TO_PACKAGES is None  # a later inference maps again
    assert requirements_utils._PACKAGES_TO_MODULES is None


def test_albumentations_seed_makes_the_transforms_decide_independently() -> None:
    """Seeded per sample as training seeds it, HorizontalFlip(0.5) and VerticalFlip(0.5)
    give each of the four outcomes about a quarter of the time (albumentations' own seeding
    gives only both or neither), a OneOf inside picks both of its children, and the same
    seed gives the same image."""
    from collections import Counter

    import albumentations as A
    import numpy as np

    from medclf.compat import albumentations_seed

    pipeline = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.OneOf([A.Transpose(p=1.0), A.RandomRotate90(p=1.0)], p=0.0),
        ]
    )
    x = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    kinds = {"none": x, "h": x[:, ::-1], "v": x[::-1], "both": x[::-1, ::-1]}

    def outcome(seed: int) -> str:
        albumentations_seed(pipeline, seed)
        y = pipeline(image=x)["image"]
        return next(k for k, v in kinds.items() if np.array_equal(y, v))

    counts = Counter(outcome(seed) for seed in range(800))
    assert set(counts) == set(kinds) and min(counts.values()) > 150, counts  # 200 expected
    assert [outcome(7) for _ in range(3)] == [outcome(7)] * 3
    pipeline = A.Compose([A.OneOf([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0)])
    assert {outcome(seed) for seed in range(40)} == {"h", "v"}


def test_lightning_logs_this_step_is_when_the_logger_gets_step_metrics(tmp_path) -> None:
    """A value logged at the steps the function names reaches the logger at every one of
    them (and the logger gets step metrics at no other step)."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import Logger

    from medclf.compat import lightning_logs_this_step

    class Recorder(Logger):
        name, version = "recorder", 0
        steps: list = []

        def log_metrics(self, metrics, step=None):
            if "loss_step" in metrics:
                self.steps.append(step)

        def log_hyperparams(self, *args, **kwargs):
            pass

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.chosen = []

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            if lightning_logs_this_step(self):
                self.chosen.append(self.global_step)
                self.log("loss_step", loss, on_step=True, on_epoch=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(20, 2)))
    model, recorder = Model(), Recorder()
    L.Trainer(
        max_epochs=1,
        log_every_n_steps=3,
        logger=recorder,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    ).fit(model, data)
    assert model.chosen == recorder.steps == [2, 5, 8, 11, 14, 17]
    assert lightning_logs_this_step(Model())  # no trainer: log


def test_retrying_optuna_storage_is_used_as_it_is_for_every_call_heartbeats_included(
    tmp_path,
) -> None:
    """Optuna takes the proxy as it is (no _CachedStorage around it), every call of a study
    goes through ``retry``, and fail_stale_trials reaches the private _get_stale_trial_ids."""
    import time

    import optuna
    from optuna.distributions import FloatDistribution

    calls: list[str] = []

    def retry(call, name):
        calls.append(name)
        return call()

    backend = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path}/optuna.db",
        heartbeat_interval=1,
        grace_period=1,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
    )
    storage = compat.retrying_optuna_storage(backend, retry)
    study = optuna.create_study(study_name="s", storage=storage)
    assert study._storage is storage
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    study_id = storage.get_study_id_from_name("s")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, 0))
    deadline = time.monotonic() + 5
    while len(study.get_trials()) == 1 and time.monotonic() < deadline:
        time.sleep(0.2)  # until the heartbeat is stale (SQLite's clock counts seconds)
        optuna.storages.fail_stale_trials(study)
    failed, retry_trial = study.get_trials()
    assert failed.state.name == "FAIL" and retry_trial.state.name == "WAITING"
    assert retry_trial.params == {"x": trial.params["x"]}
    wanted = {"create_new_trial", "record_heartbeat", "_get_stale_trial_ids", "get_all_trials"}
    assert wanted <= set(calls)
