"""Batch-norm statistics that are right when the model is evaluated
(medclf.pipeline.batchnorm)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

from helpers import REPO, run_train, search_runs
from medclf.pipeline.batchnorm import batch_norms, recalibrate, steps_needed

sys.path.insert(0, str(REPO / "benchmarks"))
from small_data import balls3d  # noqa: E402  issue 18's set, also in docs/results.md


def test_steps_needed_is_when_the_start_weighs_one_percent() -> None:
    layers = [nn.BatchNorm2d(4), nn.BatchNorm2d(4, momentum=0.3)]
    assert steps_needed(layers[:1]) == 44  # 0.9 ** 44 < 0.01 <= 0.9 ** 43
    assert 0.9**44 < 0.01 <= 0.9**43
    assert steps_needed(layers) == 44  # the slowest layer decides
    assert steps_needed([nn.BatchNorm2d(4, momentum=None)]) == 0


def test_recalibration_equals_the_statistics_of_the_batches() -> None:
    """The cumulative average over the batches, as torch.optim.swa_utils.update_bn gives;
    momenta and training flags restored; dropout off meanwhile."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3)
            self.drop = nn.Dropout(0.9)
            self.bn = nn.BatchNorm2d(3)

        @property
        def device(self):
            return torch.device("cpu")

        def forward(self, image, metadata=None):
            return self.bn(self.drop(self.conv(image)))

    net = Net()
    batches = [{"image": torch.randn(8, 1, 6, 6) * 3 + 1} for _ in range(5)]
    layers = batch_norms(net)
    assert recalibrate(net, batches, layers, max_batches=4) == 4
    features = torch.cat([net.conv(b["image"]) for b in batches[:4]])  # no dropout
    mean = torch.stack([net.conv(b["image"]).mean((0, 2, 3)) for b in batches[:4]]).mean(0)
    assert torch.allclose(net.bn.running_mean, mean, atol=1e-5)
    per_batch_var = torch.stack(
        [net.conv(b["image"]).var((0, 2, 3), unbiased=True) for b in batches[:4]]
    )
    assert torch.allclose(net.bn.running_var, per_batch_var.mean(0), atol=1e-4)
    assert features.shape[0] == 32
    assert net.bn.momentum == 0.1 and net.training and net.bn.training


def test_a_small_3d_set_with_a_large_batch_tests_right_with_recalibration(tmp_path: Path):
    """160 volumes, batch 32, 3 epochs: 15 steps, too few for the running averages. With
    model.bn_recalibration=auto the test accuracy is >= 0.9. With never it is 0.50 here
    (AUROC 1.0: the ranking is learnt, the evaluation-mode outputs are not) and 0.48 with
    3d_resnet18 (issue 18): documented, not asserted. tiny3d (tests/tiny_backbone.py) is a
    two-layer 3D network with batch norm, registered as a user's backbone."""
    npz = balls3d(tmp_path / "balls.npz")
    result = run_train(
        tmp_path,
        "datamodule=npz",
        f"datamodule.path={npz}",
        "datamodule.class_names=[small,large]",
        "datamodule.volume_size=[28,28,28]",
        "backbone.name=tiny3d",
        "trainer.max_epochs=3",
        "callbacks.early_stopping=null",
        "logger.mlflow.save_model=false",
        "model.bn_recalibration=auto",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = search_runs(tmp_path).iloc[0]
    assert round(run["metrics.test/accuracy"], 6) >= 0.9
    output = result.stdout + result.stderr
    assert "batch norm:" in output and "of the 44 their running averages need" in output
    assert math.isfinite(run["metrics.time/bn_recalibration_s"])


def _recalibrate_in_rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks: its own batches, then the statistics it holds."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
        shift = 5.0 * rank  # the ranks see different data
        batches = [{"image": torch.randn(4, 1, 6, 6) + shift} for _ in range(3)]
        model = _ImageOnly(net)
        recalibrate(model, batches, batch_norms(net), max_batches=3)
        bn = net[1]
        torch.save({"mean": bn.running_mean, "var": bn.running_var, "own": batches}, out)
    finally:
        torch.distributed.destroy_process_group()


class _ImageOnly(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, image, metadata=None):
        return self.net(image)


def test_ddp_ranks_hold_the_average_of_their_statistics(tmp_path: Path) -> None:
    """Two real gloo processes recalibrate on different batches; both end with the mean of
    the two ranks' own estimates."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    context = mp.get_context("spawn")
    processes = [
        context.Process(target=_recalibrate_in_rank, args=(r, port, paths[r])) for r in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    ranks = [torch.load(p, weights_only=True) for p in paths]
    own = []
    for rank in ranks:  # each rank's estimate alone, recomputed here
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
        recalibrate(_ImageOnly(net), rank["own"], batch_norms(net), max_batches=3)
        own.append((net[1].running_mean.clone(), net[1].running_var.clone()))
    assert not torch.allclose(own[0][0], own[1][0], atol=0.1)  # the ranks' data differ
    for rank in ranks:
        assert torch.allclose(rank["mean"], (own[0][0] + own[1][0]) / 2, atol=1e-5)
        assert torch.allclose(rank["var"], (own[0][1] + own[1][1]) / 2, atol=1e-5)


def test_swa_weights_are_recalibrated_whatever_the_step() -> None:
    """Averaged SWA weights need statistics of their own: due under auto after 44 steps."""
    from types import SimpleNamespace

    from medclf.pipeline.batchnorm import BatchNormRecalibration

    layers = [nn.BatchNorm2d(2)]
    trainer = SimpleNamespace(global_step=1000)
    averaging = SimpleNamespace(needs_bn_update=False)
    callback = BatchNormRecalibration("auto", averaging=averaging)
    assert not callback._due(trainer, layers)
    averaging.needs_bn_update = True
    assert callback._due(trainer, layers)
    assert not BatchNormRecalibration("never", averaging=averaging)._due(trainer, layers)
