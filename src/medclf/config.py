"""The Hydra config: where it lives (``CONF_DIR``, shipped inside the package), the options
that come from code (every registered backbone is a ``backbone`` option), and the check of
command-line group choices.

:func:`check_group_choices` runs on ``sys.argv`` before Hydra composes anything (and before
torch is imported), so ``backbone=densenet12`` is answered with the nearest names at once.
The composed config's values are checked by the pre-flight (medclf.pipeline.plan, its rules
in medclf.pipeline.rules).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from omegaconf import OmegaConf

from medclf.errors import ConfigError, did_you_mean
from medclf.models.registry import BACKBONES

CONF_DIR = Path(__file__).resolve().parent / "conf"

# Shared keys of every backbone option; each option sets ``name``, a key of the registry.
BACKBONE_DEFAULTS = {
    # ImageNet weights through timm (needs the network or a local Hugging Face cache).
    "pretrained": False,
    # Local weights file (state dict) for this backbone; channels and classifier adapted.
    "weights": None,
    # Stochastic depth for the backbones that support it (null = timm's default).
    "drop_path_rate": None,
    # Transfer learning in two phases (AUCMEDI): train only the head for this many epochs
    # (backbone frozen, batch-norm statistics too) at optimizer.lr, then everything at
    # finetune_lr (null: optimizer.lr). 0: no frozen phase.
    "freeze_epochs": 0,
    "finetune_lr": None,
}


def register_backbone_options() -> None:
    """Make every backbone of the registry an option of the ``backbone`` config group
    (Hydra's ConfigStore): ``backbone=densenet121`` selects it. A YAML of your own in
    ``<your config dir>/backbone/`` extends one with ``defaults: [resnet18]``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in BACKBONES:
        store.store(group="backbone", name=name, node={"name": name, **BACKBONE_DEFAULTS})


register_backbone_options()

# ``${cwd:}``: the directory the command runs in. Unlike ``${hydra:runtime.cwd}`` it also
# resolves before Hydra has set up a job (a multirun's sweep directory is resolved then).
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", lambda: str(Path.cwd()))
_GROUP_OVERRIDE = re.compile(r"^[+~]{0,2}(?P<group>[a-z_]+)(@[\w.]+)?=(?P<value>[^=]*)$")


def group_options(group: str, conf_dirs: list[Path] | Path | None = None) -> list[str]:
    """The option names of a config group: YAML files ``GROUP/*.yaml`` of the config folders
    (the package's, then the user's ``--config-dir``) and the options stored in code."""
    from hydra.core.config_store import ConfigStore

    dirs = [CONF_DIR] if conf_dirs is None else conf_dirs
    dirs = [dirs] if isinstance(dirs, Path) else dirs
    names = {p.stem for d in dirs for p in (Path(d) / group).glob("*.yaml")}
    with contextlib.suppress(OSError):  # OSError: no such group in the ConfigStore
        names.update(n.removesuffix(".yaml") for n in ConfigStore.instance().list(group))
    return sorted(n for n in names if not n.startswith("_"))


def user_config_dirs(argv: list[str]) -> list[Path]:
    """The config folders a command line adds: ``--config-dir DIR`` (``-cd``) and the
    ``file://`` entries of ``hydra.searchpath=[...]``."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            entries = arg.split("=", 1)[1].strip("[]").split(",")
            dirs += [Path(e.strip()[len("file://") :]) for e in entries if "file://" in e]
    return dirs


def check_group_choices(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for a command-line ``GROUP=OPTION`` naming an option that is not there.

    Plain values and comma-separated sweep lists are checked; sweep functions such as
    ``choice(...)`` and interpolations are left to Hydra.
    """
    dirs = [conf_dir, *user_config_dirs(argv)]
    groups = {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()} - {"hydra"}
    groups.add("backbone")
    for arg in argv:
        match = _GROUP_OVERRIDE.match(arg)
        if not match or match["group"] not in groups:
            continue
        value = match["value"]
        if any(c in value for c in "()[]{}$") or value in ("", "null"):
            continue
        options = group_options(match["group"], dirs)
        for choice in value.split(","):
            if choice not in options:
                where = " or ".join(str(d / match["group"]) for d in dirs)
                raise ConfigError(
                    f"{match['group']}={choice!r} is not an option of the "
                    f"{match['group']!r} group.{did_you_mean(choice, options)} "
                    f"Options: {', '.join(options)} (YAML files in {where}"
                    + (", and the backbone registry)." if match["group"] == "backbone" else ").")
                )
