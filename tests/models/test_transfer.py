"""Two-phase transfer learning: the backbone is frozen for backbone.freeze_epochs epochs
(weights and batch-norm statistics unchanged), then trains at backbone.finetune_lr."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from medclf.models.module import ClassificationModule


class Tiny(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(8, 1, 32, 32, generator=g)
        self.y = torch.randint(0, 3, (8,), generator=g)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return {"image": self.x[i], "target": self.y[i], "index": i}


class Snapshot(L.Callback):
    def __init__(self) -> None:
        self.states = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append(
            {
                "backbone": copy.deepcopy(pl_module.backbone.state_dict()),
                "head": copy.deepcopy(pl_module.head.state_dict()),
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
            }
        )


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scheduler", [None, {"name": "cosine", "T_max": 3}])
def test_frozen_then_finetuned(tmp_path, scheduler) -> None:
    torch.manual_seed(0)
    module = ClassificationModule(
        class_names=["a", "b", "c"],
        in_chans=1,
        backbone={"name": "resnet18", "freeze_epochs": 1, "finetune_lr": 1e-4},
        head={"activation": "softmax"},
        loss={"name": "ce"},
        optimizer={"name": "sgd", "lr": 0.05},
        scheduler=scheduler,
        image_size=32,
    )
    start = {
        "backbone": copy.deepcopy(module.backbone.state_dict()),
        "head": copy.deepcopy(module.head.state_dict()),
    }
    snapshot = Snapshot()
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[snapshot],
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(Tiny(), batch_size=4))
    phase1, phase2 = snapshot.states
    # phase 1: the backbone (weights and BN running statistics) is untouched, the head learns
    assert not changed(start["backbone"], phase1["backbone"])
    assert changed(start["head"], phase1["head"])
    assert 1e-4 < phase1["lr"] <= 0.05  # optimizer.lr (the cosine schedule may have stepped)
    # phase 2: everything trains, at finetune_lr
    assert changed(phase1["backbone"], phase2["backbone"])
    assert all(p.requires_grad for p in module.backbone.parameters())
    if scheduler is None:
        assert phase2["lr"] == pytest.approx(1e-4)
    else:  # the cosine schedule continues from finetune_lr
        assert 0 < phase2["lr"] <= 1e-4


def test_freeze_epochs_validated() -> None:
    from hydra import compose, initialize_config_dir

    from helpers import check_config
    from medclf.config import CONF_DIR
    from medclf.errors import ConfigError

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        bad = compose("train", overrides=["backbone.freeze_epochs=-1"])
        ddp = compose("train", overrides=["trainer=ddp", "backbone.freeze_epochs=2"])
    with pytest.raises(ConfigError, match="backbone.freeze_epochs"):
        check_config(config=bad)
    with pytest.raises(ConfigError, match="ddp_find_unused_parameters_true"):
        check_config(config=ddp)
