"""Speed switches of ClassificationModule: channels_last memory format and torch.compile."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from medclf.data.datamodule import DigitsDataModule
from medclf.models.module import ClassificationModule

HEAD = {"activation": "softmax", "fcl_dropout": True, "meta_variables": None, "dropout": 0.3}


def module(backbone: str, in_chans: int = 3, spatial_dims: int = 2, **switches):
    torch.manual_seed(0)
    return ClassificationModule(
        class_names=[str(c) for c in range(10)],
        in_chans=in_chans,
        backbone={"name": backbone},
        head=HEAD,
        loss={"name": "ce"},
        optimizer={"name": "adamw", "lr": 1e-3},
        scheduler={"name": "none"},
        spatial_dims=spatial_dims,
        **switches,
    )


def _input_format(model: ClassificationModule, image: torch.Tensor) -> torch.Tensor:
    """Logits, asserting which memory format reaches the backbone."""
    seen = []
    hook = model.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        logits = model(image)
    finally:
        hook.remove()
    return logits, seen[0]


@pytest.mark.parametrize(
    ("backbone", "shape", "fmt"),
    [
        ("resnet18", (4, 3, 32, 32), torch.channels_last),
        ("3d_resnet18", (2, 3, 16, 16, 16), torch.channels_last_3d),
    ],
)
def test_channels_last_gives_the_same_logits(backbone: str, shape: tuple, fmt) -> None:
    spatial_dims = len(shape) - 2
    plain = module(backbone, shape[1], spatial_dims).eval()
    fast = module(backbone, shape[1], spatial_dims, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, seen_plain = _input_format(plain, image)
        logits, seen_fast = _input_format(fast, image)
    assert seen_plain.is_contiguous() and not seen_plain.is_contiguous(memory_format=fmt)
    assert seen_fast.is_contiguous(memory_format=fmt) and not seen_fast.is_contiguous()
    weights = [p for p in fast.parameters() if p.dim() == len(shape)]
    assert weights and all(w.is_contiguous(memory_format=fmt) for w in weights)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # checkpoints move freely between the layouts
    module(backbone, shape[1], spatial_dims).load_state_dict(fast.state_dict())


@pytest.mark.slow
def test_compiled_model_trains_and_its_checkpoint_loads_uncompiled(tmp_path: Path) -> None:
    """torch.compile on CPU (inductor) with the tests' two-convolution backbone (tiny_plain:
    about 15 s to compile from a cold cache, timm's smallest ResNet about 75 s)."""
    datamodule = DigitsDataModule(image_size=32, batch_size=16)
    datamodule.setup()
    compiled = module("tiny_plain", in_chans=1, compile=True)
    assert compiled._compiled_call_impl is not None
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    trainer.fit(compiled, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")

    checkpoint = torch.load(tmp_path / "compiled.ckpt", weights_only=True)
    plain = module("tiny_plain", in_chans=1)
    assert set(checkpoint["state_dict"]) == set(plain.state_dict())
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    changed = [k for k in before if not torch.equal(before[k], checkpoint["state_dict"][k])]
    assert changed, "two training steps changed no weight"
    plain.load_state_dict(checkpoint["state_dict"])  # strict
    loaded = ClassificationModule.load_from_checkpoint(
        tmp_path / "compiled.ckpt", compile=False, weights_only=True
    )
    assert loaded._compiled_call_impl is None
    image = next(iter(datamodule.val_dataloader()))["image"]
    with torch.no_grad():
        expected = plain.eval()(image)
        torch.testing.assert_close(loaded.eval()(image), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(compiled.eval()(image), expected, rtol=1e-4, atol=1e-4)
