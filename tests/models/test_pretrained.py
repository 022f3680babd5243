"""backbone.pretrained=true: weights in the local Hugging Face cache are used without asking
the Hub; without them, offline, the pre-flight's ConfigError says so and how to fetch them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import os, sys, torch, timm
from medclf.errors import ConfigError
from medclf.models.backbones import Backbone, check_weights
from safetensors.torch import save_file
model = timm.create_model("resnet18", pretrained=False)
repo = model.pretrained_cfg["hf_hub_id"]
root = os.path.join(os.environ["HF_HOME"], "hub", "models--" + repo.replace("/", "--"))
os.makedirs(root + "/refs"); os.makedirs(root + "/snapshots/0123abcd")
open(root + "/refs/main", "w").write("0123abcd")
state = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
save_file(state, root + "/snapshots/0123abcd/model.safetensors")
backbone = Backbone("resnet18", in_chans=3, pretrained=True)
print("cached weights used:", torch.equal(backbone.model.conv1.weight, state["conv1.weight"]))
check_weights("resnet18", True, None)  # in the cache: nothing to say
try:  # resnet34's weights are not in that cache
    check_weights("resnet34", True, None)
except ConfigError as error:
    print("ConfigError:", error)
"""


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> str:
    """What the script printed, in a process of its own: huggingface_hub reads HF_HOME and
    HF_HUB_OFFLINE once, on import."""
    home = tmp_path_factory.mktemp("hf")
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_weights_in_the_local_cache_are_used(printed: str) -> None:
    assert "cached weights used: True" in printed


def test_missing_weights_offline_is_a_clear_error(printed: str) -> None:
    assert "ConfigError: backbone.pretrained=true" in printed
    assert "not in the local Hugging Face cache" in printed and "backbone.weights=PATH" in printed
