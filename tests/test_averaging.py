"""Weight averaging (model.ema_decay, model.swa_epoch_start): the averaged weights against
hand-computed averages, validation on them, and a trained run's checkpoint, predict.py and
ONNX export using them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import TINY, run_train
from medclf.config import CONF_DIR
from medclf.errors import ConfigError
from medclf.pipeline.averaging import WeightAverage, ema_decay, weight_average
from medclf.pipeline.rules import check_model


class Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Recorder(L.Callback):
    """The weights after every optimizer step and those validation sees."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []
        self.epoch_ends: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    @staticmethod
    def weights(module) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(self.weights(pl_module))
        if trainer.is_last_batch:  # also the last of limit_train_batches
            self.epoch_ends.append(self.steps[-1])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if not trainer.sanity_checking and batch_idx == 0:
            self.validated.append(self.weights(pl_module))


def fit(
    averaging: WeightAverage, epochs: int, batches: int, **trainer: object
) -> tuple[Linear, Recorder]:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(4 * batches, 4, generator=generator), torch.randn(4 * batches, 1)
    data = torch.utils.data.DataLoader(list(zip(x, y, strict=True)), batch_size=4)
    model, recorder = Linear(), Recorder()
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[recorder, averaging],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    )
    trainer.fit(model, data, data)
    return model, recorder


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_after_3_steps_equals_the_hand_computed_average(warmup: bool) -> None:
    model, recorder = fit(WeightAverage(decay=0.5, warmup=warmup), epochs=1, batches=3)
    p1, p2, p3 = recorder.steps
    d1, d2 = (0.5, 0.5) if not warmup else (1 - 2 ** (-2 / 3), 0.5)  # min(.5, 1-3^(-2/3))
    assert ema_decay(0.5, 1, warmup) == pytest.approx(d1)
    assert ema_decay(0.5, 2, warmup) == pytest.approx(d2)
    ema = p1  # the first update copies the weights
    ema = d1 * ema + (1 - d1) * p2
    ema = d2 * ema + (1 - d2) * p3
    assert not torch.allclose(p3, ema, atol=1e-4)  # the average is not the last weights
    assert torch.allclose(Recorder.weights(model), ema, atol=1e-6)  # the model ends on it
    assert torch.allclose(recorder.validated[0], ema, atol=1e-6)  # validation used it


@pytest.mark.parametrize("limit", [None, 2])
def test_swa_is_the_mean_of_the_epoch_ends_from_its_start(limit: int | None) -> None:
    """Also when trainer.limit_train_batches ends the epochs (2 of 3 batches)."""
    batches = 2 if limit is None else 3
    model, recorder = fit(
        WeightAverage(swa_epoch_start=1), epochs=3, batches=batches, limit_train_batches=limit
    )
    e0, e1, e2 = recorder.epoch_ends
    assert torch.allclose(recorder.validated[0], e0)  # before the start: trained weights
    assert torch.allclose(recorder.validated[1], e1, atol=1e-6)  # the average of epoch 1
    assert torch.allclose(recorder.validated[2], (e1 + e2) / 2, atol=1e-6)
    assert torch.allclose(Recorder.weights(model), (e1 + e2) / 2, atol=1e-6)


def _model_cfg(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides)).model


def test_config_defaults_off_and_errors_name_the_key() -> None:
    assert weight_average(_model_cfg()) is None
    assert weight_average(_model_cfg("model.ema_decay=0.99")).kind == "EMA"
    assert weight_average(_model_cfg("model.swa_epoch_start=0.8")).kind == "SWA"
    for overrides, key in (
        (("model.ema_decay=0.99", "model.swa_epoch_start=0.8"), "choose one"),
        (("model.ema_decay=1.5",), "model.ema_decay=1.5"),
        (("model.swa_epoch_start=0",), "model.swa_epoch_start=0"),
        (("model.swa_epoch_start=2.5",), "whole number"),
    ):
        with pytest.raises(ConfigError, match=key):
            check_model(OmegaConf.create({"model": _model_cfg(*overrides)}))


def test_a_trained_run_predicts_and_exports_with_the_ema_weights(
    tmp_path: Path, image_folder: Path
) -> None:
    """The best checkpoint holds the EMA weights as its state_dict and the trained ones as
    current_model_state; predict.py and the ONNX export give the EMA model's probabilities."""
    from test_predict import prepared, run_predict

    from medclf.inference.export import export
    from medclf.models.checkpoint import load_module, read_checkpoint

    result = run_train(
        tmp_path,
        *TINY,
        "datamodule=folder",
        f"datamodule.data_dir={image_folder}",
        "datamodule.image_size=32",
        "datamodule.batch_size=4",
        "trainer.max_epochs=1",
        "model.ema_decay=0.9",
        "logger.mlflow.save_model=false",
        "test=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "an exponential moving average of the weights (decay 0.9" in result.stdout
    (ckpt,) = tmp_path.glob("logs/runs/*/checkpoints/epoch_*.ckpt")
    checkpoint = read_checkpoint(ckpt)
    ema, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    differ = [k for k in ema if ema[k].is_floating_point() and not torch.equal(ema[k], trained[k])]
    assert differ  # 6 steps: the average is not the last weights
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 6

    module = load_module(ckpt).eval()
    assert all(torch.equal(module.state_dict()[k], ema[k]) for k in differ)
    other = load_module(ckpt).eval()
    other.load_state_dict(trained)
    table = run_predict(tmp_path, f"ckpt_path={ckpt}", f"input={image_folder}")
    image = prepared(image_folder / table["sample"][0])
    with torch.no_grad():
        expected = module.predict_proba(image)[0].numpy()
        not_expected = other.predict_proba(image)[0].numpy()
    assert np.abs(expected - not_expected).max() > 1e-4

    probs = table.filter(like="prob_").to_numpy(float)[0]
    assert probs == pytest.approx(expected, abs=1e-5)

    import onnxruntime

    path = export(ckpt, "onnx", output=tmp_path / "model.onnx", verify=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_probs,) = session.run(None, {"image": image.numpy()})[0]
    assert onnx_probs == pytest.approx(expected, abs=1e-5)
