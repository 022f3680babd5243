"""The Hydra config: where it lives (``CONF_DIR``, shipped inside the package), the options
that come from code (every registered backbone is a ``backbone`` option), and the checks of
the composed config and of command-line group choices, before any training.

:func:`check_group_choices` runs on ``sys.argv`` before Hydra composes anything (and before
torch is imported), so ``backbone=densenet12`` is answered with the nearest names at once.
:func:`validate` checks values that Hydra cannot (ranges, backbone minimum input size).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError, did_you_mean
from medclf.models.registry import BACKBONES, LOSSES

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


def _positive_int(cfg: DictConfig, key: str, allow_minus_one: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if allow_minus_one and value == -1:
            return
        extra = " (or -1 for no limit)" if allow_minus_one else ""
        raise ConfigError(f"{key}={value!r} must be a positive integer{extra}.")


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys still set to ``???``, found without resolving any interpolation."""
    missing = []
    for key in node:
        if OmegaConf.is_missing(node, key):
            missing.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(node, key):
            child = node[key]
            if isinstance(child, DictConfig):
                missing += _missing_keys(child, f"{prefix}{key}.")
    return missing


def validate(cfg: DictConfig) -> None:
    """Check values of the composed config that would otherwise fail deep inside training."""
    from medclf.data.transforms import DEFAULT_VOLUME_SIZE, image_hw

    missing = _missing_keys(cfg)
    if missing:
        raise ConfigError(
            "required value(s) not set: " + ", ".join(f"{key} (add {key}=...)" for key in missing)
        )
    spec = BACKBONES[cfg.backbone.name]
    if spec.spatial_dims == 3:
        volume = list(cfg.datamodule.get("volume_size") or DEFAULT_VOLUME_SIZE)
        if min(volume) < spec.min_size:
            raise ConfigError(
                f"datamodule.volume_size={volume} is too small for backbone "
                f"{cfg.backbone.name}, which needs at least {spec.min_size} voxels per side."
            )
        return _validate_rest(cfg)
    size = cfg.datamodule.image_size
    try:
        height, width = image_hw(size if isinstance(size, int) else list(size))
    except (TypeError, ValueError):
        raise ConfigError(
            f"datamodule.image_size={size!r}: give one integer or [height, width]."
        ) from None
    if min(height, width) < spec.min_size:
        raise ConfigError(
            f"datamodule.image_size={size} is too small for backbone {cfg.backbone.name}, "
            f"which needs inputs of at least {spec.min_size} px; set "
            f"datamodule.image_size={spec.min_size} or larger, or choose another backbone."
        )
    _validate_rest(cfg)


def _validate_rest(cfg: DictConfig) -> None:
    import medclf.models.losses  # noqa: F401  (registers the built-in losses)
    from medclf.models.optim import check_arguments

    activation = cfg.head.activation
    if activation not in ("auto", "softmax", "sigmoid"):
        raise ConfigError(
            f"head.activation={activation!r}: use auto, softmax or sigmoid."
            f"{did_you_mean(activation, ['auto', 'softmax', 'sigmoid'])}"
        )
    if not 0 <= cfg.head.dropout < 1:
        raise ConfigError(f"head.dropout={cfg.head.dropout} must be in [0, 1).")
    weights = cfg.loss.get("class_weights")
    if isinstance(weights, str) and weights != "balanced":
        raise ConfigError(
            f"loss.class_weights={weights!r}: use null, balanced or a list of per-class weights."
        )
    LOSSES[cfg.loss.name]  # an unknown loss: ConfigError with the closest names
    check_arguments("optimizer", OmegaConf.to_container(cfg.optimizer, resolve=True))
    check_arguments("scheduler", OmegaConf.to_container(cfg.get("scheduler") or {}, resolve=True))
    _check_speed(cfg)
    _positive_int(cfg, "trainer.max_epochs", allow_minus_one=True)
    _positive_int(cfg, "datamodule.batch_size")
    if cfg.optimizer.lr <= 0:
        raise ConfigError(f"optimizer.lr={cfg.optimizer.lr} must be positive.")
    _check_sync_batchnorm(cfg)
    _check_transfer(cfg)


def _check_transfer(cfg: DictConfig) -> None:
    """``backbone.freeze_epochs`` ≥ 0, ``finetune_lr`` null or positive; plain DDP refuses
    parameters without gradients, which the frozen phase has."""
    freeze = cfg.backbone.get("freeze_epochs") or 0
    if not isinstance(freeze, int) or isinstance(freeze, bool) or freeze < 0:
        raise ConfigError(f"backbone.freeze_epochs={freeze!r} must be an integer >= 0.")
    lr = cfg.backbone.get("finetune_lr")
    if lr is not None and (not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError(f"backbone.finetune_lr={lr!r} must be null or a positive number.")
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if freeze and isinstance(strategy, str) and strategy in ("ddp", "ddp_spawn"):
        raise ConfigError(
            f"backbone.freeze_epochs={freeze} with trainer.strategy={strategy}: DDP needs every "
            "parameter to get a gradient; use trainer.strategy=ddp_find_unused_parameters_true."
        )


def _check_sync_batchnorm(cfg: DictConfig) -> None:
    import torch

    trainer = cfg.get("trainer") or {}
    on_gpu = trainer.get("accelerator") in ("gpu", "cuda") or (
        trainer.get("accelerator") == "auto" and torch.cuda.is_available()
    )
    if trainer.get("sync_batchnorm") and not on_gpu:
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm is CUDA-only); "
            "set trainer.sync_batchnorm=false to train DDP on CPU processes."
        )


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def _check_speed(cfg: DictConfig) -> None:
    """``trainer.precision`` is one Lightning knows; ``model.*`` switches are booleans."""
    precision = OmegaConf.select(cfg, "trainer.precision")
    legacy = (32, 16, 64, "32", "16", "64", "bf16", "transformer-engine")
    if precision is not None and precision not in PRECISIONS + legacy:
        raise ConfigError(
            f"trainer.precision={precision!r} is not a Lightning precision."
            f"{did_you_mean(str(precision), PRECISIONS)} Use one of: {', '.join(PRECISIONS)}."
        )
    for key in ("channels_last", "compile"):
        value = OmegaConf.select(cfg, f"model.{key}")
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"model.{key}={value!r} must be true or false.")


def resolve_task(head: dict, data_task: str, n_classes: int) -> tuple[str, str]:
    """The model's task and output activation from the head config and the data.

    multilabel data → sigmoid per label; ``head.n_outputs=1`` with two classes → ``binary``
    (one sigmoid output, the probability of the second class); otherwise ``multiclass``.
    """
    n_outputs = head.get("n_outputs")
    requested = head.get("activation", "auto")
    if n_outputs == 1 and data_task != "multilabel":
        if n_classes != 2:
            raise ConfigError(
                f"head.n_outputs=1 is for binary data (2 classes); the data has {n_classes} "
                "classes. Leave head.n_outputs=null."
            )
        if requested == "softmax":
            raise ConfigError(
                "head.activation=softmax with head.n_outputs=1 always outputs 1; use sigmoid "
                "or auto for a single binary output."
            )
        return "binary", "sigmoid"
    if n_outputs not in (None, n_classes):
        raise ConfigError(
            f"head.n_outputs={n_outputs} but the data has {n_classes} classes; use null (one "
            "output per class) or 1 for binary data."
        )
    return data_task, resolve_activation(requested, data_task)


def check_model_fits_data(cfg: DictConfig, datamodule) -> None:
    """Backbone dimensionality and metadata width must agree with the data."""
    spec = BACKBONES[cfg.backbone.name]
    if spec.spatial_dims != datamodule.spatial_dims:
        kind = {2: "2D images", 3: "3D volumes"}
        hint = (
            "a 3d_* backbone (e.g. backbone=3d_resnet18)"
            if datamodule.spatial_dims == 3
            else ("a 2D backbone (e.g. backbone=resnet18)")
        )
        raise ConfigError(
            f"backbone={cfg.backbone.name} takes {kind[spec.spatial_dims]} but the data holds "
            f"{kind[datamodule.spatial_dims]}; choose {hint}."
        )
    wanted = cfg.head.get("meta_variables")
    have = datamodule.meta_variables
    if wanted and not have:
        raise ConfigError(
            f"head.meta_variables={wanted} but the data has no metadata; set "
            "datamodule.meta_columns=[...] (datamodule=csv) or head.meta_variables=null."
        )
    if wanted and have and wanted != have:
        raise ConfigError(
            f"head.meta_variables={wanted} disagrees with datamodule.meta_columns, which "
            f"encode to {have} variables ({', '.join(datamodule.meta_encoder.feature_names())}); "
            "leave head.meta_variables=null to derive it."
        )


def resolve_activation(requested: str, task: str) -> str:
    """``auto`` → softmax for single-label data, sigmoid for multi-label data."""
    if requested == "auto":
        return "sigmoid" if task == "multilabel" else "softmax"
    if requested == "softmax" and task == "multilabel":
        raise ConfigError(
            "head.activation=softmax cannot be used with a multi-label datamodule (labels per "
            "sample > 1); use head.activation=sigmoid or leave it at auto."
        )
    return requested
