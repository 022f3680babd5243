"""Every check of the training config's keys, each key checked here and nowhere else: the
pre-flight (medclf.pipeline.plan) runs them once per run and reports every problem together.

Two stages. :data:`RULES` need nothing but the config (one function per config group); the
checks below :func:`resolve_task` need the data, or the model built for it (the task from the
labels, the input size against the backbone, metadata, groups, volumes), and run once after
the data is read; without data (``check_only`` on data that failed) they check what they can.
The parts built from a checked config (datamodule, module, callbacks) trust it and do not
check again. Keys of other libraries' objects are checked where they are known: the
registries (names), ``models.optim.check_arguments`` (optimizer and scheduler arguments),
``models.backbones.check_weights``, ``evaluation.thresholds`` (``threshold``) and
``pipeline.resume`` (``ckpt_path``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError, did_you_mean

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
LEGACY_PRECISIONS = (32, 16, 64, "32", "16", "64", "bf16", "transformer-engine")
CALIBRATIONS = ("none", "temperature")
NONFINITE = ("stop", "skip")


class _Node:
    """A config node's values as plain Python, each resolved when read (a node may hold
    interpolations that only a running Hydra app resolves, in keys no check reads)."""

    def __init__(self, node: Any) -> None:
        self.node = node if node is not None else {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self.node.get(key, default) if key in self.node else default
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    def __contains__(self, key: str) -> bool:
        return key in self.node

    def plain(self) -> dict[str, Any]:
        node = self.node
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _node(cfg: DictConfig, key: str) -> _Node:
    return _Node(OmegaConf.select(cfg, key))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys still set to ``???``, found without resolving any interpolation."""
    missing = []
    for key in node:
        if OmegaConf.is_missing(node, key):
            missing.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(node, key):
            child = node[key]
            if isinstance(child, DictConfig):
                missing += missing_keys(child, f"{prefix}{key}.")
    return missing


def check_required(cfg: DictConfig) -> None:
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(
            "required value(s) not set: " + ", ".join(f"{key} (add {key}=...)" for key in missing)
        )


def check_datamodule(cfg: DictConfig) -> None:
    """The keys every datamodule shares (conf/datamodule_base.yaml)."""
    from medclf.data.transforms import image_hw

    node = _node(cfg, "datamodule")
    batch_size = node.get("batch_size", 32)
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"datamodule.batch_size={batch_size!r} must be a positive integer.")
    workers = node.get("num_workers", 0)
    if workers != "auto" and (not _is_int(workers) or workers < 0):
        raise ConfigError(f"datamodule.num_workers={workers!r} must be auto or an integer >= 0.")
    fractions = {k: node.get(k, 0.15) for k in ("val_fraction", "test_fraction")}
    for key, value in fractions.items():
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"datamodule.{key}={value} must be in [0, 1).")
    if sum(fractions.values()) >= 1:
        raise ConfigError(
            f"datamodule.val_fraction + test_fraction = {sum(fractions.values())} leaves nothing "
            "to train on; keep their sum below 1."
        )
    channels = node.get("channels", "auto")
    if channels != "auto" and (not _is_int(channels) or channels < 1):
        raise ConfigError(f"datamodule.channels={channels!r}: use auto or a channel count.")
    size = node.get("image_size", 224)
    try:
        height, width = image_hw(size)
    except (TypeError, ValueError):
        raise ConfigError(
            f"datamodule.image_size={size!r}: give one integer or [height, width]."
        ) from None
    if height < 1 or width < 1:
        raise ConfigError(
            f"datamodule.image_size={size!r} is too small: give positive sides, one integer or "
            "[height, width]."
        )
    dims = node.get("spatial_dims", "auto")
    if dims not in ("auto", 2, 3):
        raise ConfigError(f"datamodule.spatial_dims={dims!r}: use auto, 2 or 3.")
    volume = node.get("volume_size")
    if volume is not None and (
        not isinstance(volume, list)
        or len(volume) != 3
        or any(not _is_int(v) or v < 1 for v in volume)
    ):
        raise ConfigError(
            f"datamodule.volume_size={volume!r} must be three positive integers "
            "[depth, height, width]."
        )
    cache = node.get("cache", False)
    if not isinstance(cache, bool):
        raise ConfigError(f"datamodule.cache={cache!r} must be true or false.")
    from medclf.data.groups import DUPLICATES

    duplicates = node.get("duplicates", "warn")
    if duplicates not in DUPLICATES:
        raise ConfigError(f"datamodule.duplicates={duplicates!r}: use {', '.join(DUPLICATES)}.")
    sampler = node.get("sampler")
    if sampler not in (None, "none", "balanced"):
        raise ConfigError(f"datamodule.sampler={sampler!r}: use null or balanced.")


def check_backbone(cfg: DictConfig) -> None:
    """``backbone.*``: a registered name, its weights, the transfer-learning phases; plain DDP
    refuses parameters without gradients, which the frozen phase has."""
    from medclf.models.backbones import check_weights
    from medclf.models.registry import BACKBONES

    node = _node(cfg, "backbone")
    BACKBONES[node.get("name")]  # an unknown name: ConfigError with the closest names
    freeze = node.get("freeze_epochs") or 0
    if not _is_int(freeze) or freeze < 0:
        raise ConfigError(f"backbone.freeze_epochs={freeze!r} must be an integer >= 0.")
    lr = node.get("finetune_lr")
    if lr is not None and (not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError(f"backbone.finetune_lr={lr!r} must be null or a positive number.")
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if freeze and isinstance(strategy, str) and strategy in ("ddp", "ddp_spawn"):
        raise ConfigError(
            f"backbone.freeze_epochs={freeze} with trainer.strategy={strategy}: DDP needs every "
            "parameter to get a gradient; use trainer.strategy=ddp_find_unused_parameters_true."
        )
    check_weights(node.get("name"), bool(node.get("pretrained")), node.get("weights"))


def check_head(cfg: DictConfig) -> None:
    """``head.dropout`` (the activation and output count depend on the data: fit.py)."""
    dropout = OmegaConf.select(cfg, "head.dropout", default=0.0)
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"head.dropout={dropout} must be in [0, 1).")


def check_loss(cfg: DictConfig) -> None:
    import medclf.models.losses  # noqa: F401  (registers the built-in losses)
    from medclf.models.registry import LOSSES

    node = _node(cfg, "loss")
    LOSSES[node.get("name")]  # an unknown loss: ConfigError with the closest names
    smoothing = node.get("label_smoothing", 0.0) or 0.0
    if not 0.0 <= float(smoothing) < 1.0:
        raise ConfigError(
            f"loss.label_smoothing={smoothing} must be at least 0 and below 1 (0.1 is usual)."
        )


def check_optimizer(cfg: DictConfig) -> None:
    from medclf.models.optim import check_arguments

    node = _node(cfg, "optimizer")
    check_arguments("optimizer", node.plain())
    if node.get("lr", 1) <= 0:
        raise ConfigError(f"optimizer.lr={node.get('lr')} must be positive.")


def check_scheduler(cfg: DictConfig) -> None:
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    from medclf.models.optim import check_arguments
    from medclf.models.registry import SCHEDULERS

    node = _node(cfg, "scheduler")
    check_arguments("scheduler", node.plain() or {"name": "none"})
    warmup = node.get("warmup_epochs") or 0
    name = node.get("name")
    if warmup and SCHEDULERS[name] is ReduceLROnPlateau:
        raise ConfigError(
            f"scheduler.warmup_epochs={warmup} cannot precede scheduler={name} (it steps on a "
            "metric); use scheduler=cosine or scheduler=none with a warm-up."
        )


def check_model(cfg: DictConfig) -> None:
    """``model.*``: the speed switches, batch-norm statistics and weight averaging."""
    node = _node(cfg, "model")
    for key in ("channels_last", "compile"):
        value = node.get(key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"model.{key}={value!r} must be true or false.")
    from medclf.pipeline.batchnorm import MODES

    mode = node.get("bn_recalibration", "auto")
    if mode not in MODES:
        raise ConfigError(f"model.bn_recalibration={mode!r}: use one of {', '.join(MODES)}.")
    batches = node.get("bn_recalibration_batches", 1)
    if not _is_int(batches) or batches < 1:
        raise ConfigError(f"model.bn_recalibration_batches={batches!r} must be an integer >= 1.")
    decay, start = node.get("ema_decay"), node.get("swa_epoch_start")
    if decay is not None and start is not None:
        raise ConfigError(
            f"model.ema_decay={decay} and model.swa_epoch_start={start}: both average the "
            "weights; choose one (set the other to null)."
        )
    if decay is not None and not 0.0 < float(decay) < 1.0:
        raise ConfigError(f"model.ema_decay={decay}: use a decay in (0, 1), e.g. 0.999, or null.")
    if start is not None and float(start) >= 1 and float(start) != int(start):
        raise ConfigError(
            f"model.swa_epoch_start={start}: a number >= 1 is an epoch index; use a whole "
            "number, or a fraction in (0, 1)."
        )
    if start is not None and not float(start) > 0:
        raise ConfigError(
            f"model.swa_epoch_start={start}: use a fraction of the epochs in (0, 1) (0.8: the "
            "last fifth) or a 0-based epoch index >= 1, or null."
        )


def check_trainer(cfg: DictConfig) -> None:
    """``trainer.precision`` is one Lightning knows; epochs; SyncBatchNorm needs GPUs."""
    import torch

    node = _node(cfg, "trainer")
    precision = node.get("precision")
    if precision is not None and precision not in PRECISIONS + LEGACY_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision!r} is not a Lightning precision."
            f"{did_you_mean(str(precision), PRECISIONS)} Use one of: {', '.join(PRECISIONS)}."
        )
    epochs = node.get("max_epochs")
    if epochs is not None and (not _is_int(epochs) or (epochs < 1 and epochs != -1)):
        raise ConfigError(
            f"trainer.max_epochs={epochs!r} must be a positive integer (or -1 for no limit)."
        )
    on_gpu = node.get("accelerator") in ("gpu", "cuda") or (
        node.get("accelerator") == "auto" and torch.cuda.is_available()
    )
    if node.get("sync_batchnorm") and not on_gpu:
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm is CUDA-only); "
            "set trainer.sync_batchnorm=false to train DDP on CPU processes."
        )


def check_run(cfg: DictConfig) -> None:
    """The run's top-level keys: ``calibration``, ``nonfinite_loss`` and, in an Optuna search
    with a pruner, ``optimized_metric``."""
    calibration = str(cfg.get("calibration") or "none")
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"calibration={calibration!r}: use none or temperature.")
    nonfinite = cfg.get("nonfinite_loss", "stop")
    if nonfinite not in NONFINITE:
        raise ConfigError(f"nonfinite_loss={nonfinite!r}: use stop or skip.")
    folds = OmegaConf.select(cfg, "cv.folds") or 0
    search = cfg.get("search")
    if search and search.get("trial") is not None and folds < 2 and not cfg.get("optimized_metric"):
        raise ConfigError(
            "optimized_metric=null: pruning an Optuna search needs the metric its trials report "
            "(e.g. optimized_metric=val/f1)."
        )


def check_conformal(cfg: DictConfig) -> None:
    """``conformal.*``: an error rate in (0, 1) or null, a known score, a boolean."""
    from medclf.evaluation.conformal import SCORES

    node = _node(cfg, "conformal")
    alpha = node.get("alpha")
    if alpha is not None and (not isinstance(alpha, int | float) or not 0 < alpha < 1):
        raise ConfigError(
            f"conformal.alpha={alpha!r}: give the error rate the sets may make, in (0, 1) "
            "(0.1: sets that hold the true class for 90 % of images), or null for none."
        )
    score = node.get("score", "lac")
    if score not in SCORES:
        raise ConfigError(
            f"conformal.score={score!r}: use {' or '.join(SCORES)}.{did_you_mean(score, SCORES)}"
        )
    if not isinstance(node.get("mondrian", False), bool):
        raise ConfigError(f"conformal.mondrian={node.get('mondrian')!r} must be true or false.")


def check_ood(cfg: DictConfig) -> None:
    """``ood.*``: a known method or null, quantile and share in (0, 1)."""
    from medclf.audit.ood import METHODS

    node = _node(cfg, "ood")
    method = node.get("method")
    if method is not None and method not in METHODS:
        raise ConfigError(
            f"ood.method={method!r}: use {', '.join(METHODS)} or null (no gate)."
            f"{did_you_mean(str(method), METHODS)}"
        )
    for key in ("quantile", "max_share"):
        value = node.get(key, 0.5)
        if not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(f"ood.{key}={value!r} must lie strictly between 0 and 1.")


def check_audit(cfg: DictConfig) -> None:
    """``audit.*``: folds, the hash distance (of 64 bits), the cosine, the table rows."""
    node = _node(cfg, "audit")
    folds = node.get("folds", 3)
    if not _is_int(folds) or folds < 2:
        raise ConfigError(f"audit.folds={folds!r}: the cross-validation needs 2 or more folds.")
    hamming = node.get("max_hamming", 6)
    if not _is_int(hamming) or not 0 <= hamming < 64:
        raise ConfigError(f"audit.max_hamming={hamming!r}: give bits in [0, 63] (6 by default).")
    cosine = node.get("min_cosine", 0.8)
    if not isinstance(cosine, int | float) or not -1 <= cosine <= 1:
        raise ConfigError(f"audit.min_cosine={cosine!r} must lie in [-1, 1] (0.8 by default).")
    limit = node.get("limit", 50)
    if not _is_int(limit) or limit < 1:
        raise ConfigError(f"audit.limit={limit!r} must be a positive integer.")


RULES: tuple[Callable[[DictConfig], None], ...] = (
    check_datamodule,
    check_backbone,
    check_head,
    check_loss,
    check_optimizer,
    check_scheduler,
    check_model,
    check_trainer,
    check_run,
    check_conformal,
    check_ood,
    check_audit,
)
"""Every config-stage check, in the order the problems are listed."""


# --- checks that need the data ---------------------------------------------------------------


def resolve_task(head: Any, data_task: str | None, n_classes: int | None) -> tuple[str, str]:
    """The model's task and output activation from ``head`` and the data's task and class
    count: multilabel data → sigmoid per label; ``head.n_outputs=1`` with two classes →
    ``binary`` (one sigmoid output, the probability of the second class); otherwise
    ``multiclass``. Without data (None) only the values are checked."""
    requested = head.get("activation", "auto")
    if requested not in ("auto", "softmax", "sigmoid"):
        raise ConfigError(
            f"head.activation={requested!r}: use auto, softmax or sigmoid."
            f"{did_you_mean(requested, ['auto', 'softmax', 'sigmoid'])}"
        )
    n_outputs = head.get("n_outputs")
    if n_outputs == 1 and requested == "softmax":
        raise ConfigError(
            "head.activation=softmax with head.n_outputs=1 always outputs 1; use sigmoid or auto "
            "for a single binary output."
        )
    if data_task is None:
        return "multiclass", requested
    if n_outputs == 1 and data_task != "multilabel":
        if n_classes != 2:
            raise ConfigError(
                f"head.n_outputs=1 is for binary data (2 classes); the data has {n_classes} "
                "classes. Leave head.n_outputs=null."
            )
        return "binary", "sigmoid"
    if n_outputs not in (None, n_classes):
        raise ConfigError(
            f"head.n_outputs={n_outputs} but the data has {n_classes} classes; use null (one "
            "output per class) or 1 for binary data."
        )
    return data_task, resolve_activation(requested, data_task)


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


def check_model_fits_data(cfg: DictConfig, datamodule: Any) -> None:
    """Backbone dimensionality and metadata width must agree with the data."""
    from medclf.models.registry import BACKBONES

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


def check_input_size(cfg: DictConfig, backbone: Any, channels: int, spatial_dims: int) -> None:
    """The backbone built for the data must forward the input size: read from the network by
    a forward pass at that size (models.backbones.smallest_input), not from a table."""
    from medclf.data.transforms import DEFAULT_VOLUME_SIZE, image_hw
    from medclf.models.backbones import smallest_input

    node = _node(cfg, "datamodule")
    if spatial_dims == 3:
        size, key, unit = (
            list(node.get("volume_size") or DEFAULT_VOLUME_SIZE),
            "volume_size",
            "voxels",
        )
    else:
        size, key, unit = list(image_hw(node.get("image_size", 224))), "image_size", "px"
    smallest = smallest_input(backbone, channels, size)
    if smallest is not None:
        shown = node.get(key) if key == "image_size" else size
        raise ConfigError(
            f"datamodule.{key}={shown} is too small for backbone {cfg.backbone.name}, which "
            f"needs inputs of at least {smallest} {unit} per side (the smallest it forwards); "
            f"set datamodule.{key}={smallest if key == 'image_size' else [smallest] * 3} or "
            "larger, or choose another backbone."
        )


def class_weights(cfg: DictConfig, datamodule: Any = None) -> list[float] | None:
    """``loss.class_weights``: null, ``balanced`` (inverse class frequency of the train
    split, computed here) or one weight per class."""
    weights = OmegaConf.select(cfg, "loss.class_weights")
    weights = OmegaConf.to_container(weights) if OmegaConf.is_config(weights) else weights
    if isinstance(weights, str) and weights != "balanced":
        raise ConfigError(
            f"loss.class_weights={weights!r}: use null, balanced or a list of per-class weights."
        )
    if datamodule is None or weights is None:
        return None
    if weights == "balanced":
        from medclf.models.losses import balanced_class_weights

        return balanced_class_weights(datamodule.train_labels(), datamodule.n_classes)
    if len(weights) != datamodule.n_classes:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} values but the data has "
            f"{datamodule.n_classes} classes ({', '.join(datamodule.class_names)})."
        )
    return [float(w) for w in weights]


def check_augment(cfg: DictConfig, spatial_dims: int | None = None) -> None:
    """Batch mixing: alphas >= 0, a probability; CutMix cuts 2D boxes, so not volumes."""
    node = _node(cfg, "augment")
    for key in ("mixup", "cutmix"):
        value = node.get(key) or 0.0
        if value < 0:
            raise ConfigError(f"augment.{key}={value}: use an alpha >= 0 (0: off).")
    cutmix = node.get("cutmix") or 0.0
    if cutmix and spatial_dims == 3:
        raise ConfigError(
            f"augment.cutmix={cutmix}: CutMix cuts 2D boxes and these are volumes; use "
            "augment.mixup (any dimensions) and augment.cutmix=0."
        )
    prob = node.get("mix_prob", 1.0)
    if not 0.0 <= prob <= 1.0:
        raise ConfigError(f"augment.mix_prob={prob}: use a probability in [0, 1].")


def check_eval(cfg: DictConfig, datamodule: Any = None) -> None:
    """The ``eval`` block (training's and eval.py's): resamples, level, patients pooled only
    where the data has groups, subgroups only from a CSV's columns."""
    from medclf.evaluation.analysis import AGGREGATES

    node = _node(cfg, "eval")
    bootstrap = node.get("bootstrap", 1000) or 0
    if not _is_int(bootstrap) or bootstrap < 0:
        raise ConfigError(f"eval.bootstrap={bootstrap}: use 0 (off) or resamples.")
    level = node.get("level", 0.95)
    if not isinstance(level, int | float) or not 0 < level < 1:
        raise ConfigError(f"eval.level={level} must lie strictly between 0 and 1.")
    aggregate = node.get("aggregate")
    if aggregate not in (None, *AGGREGATES):
        raise ConfigError(f"eval.aggregate={aggregate!r}: use null, mean or max.")
    subgroups = list(node.get("subgroups") or [])
    if subgroups and "csv_path" not in (cfg.get("datamodule") or {}):
        raise ConfigError(
            f"eval.subgroups={subgroups}: subgroups are columns of a CSV table; use "
            "datamodule=csv with those columns, or leave eval.subgroups empty."
        )
    if datamodule is None:
        return
    if aggregate and not getattr(datamodule, "groups", False):
        raise ConfigError(
            f"eval.aggregate={aggregate} pools each patient's images, but the data has no "
            "groups: set datamodule.group_column (csv) or datamodule.group_pattern (folder), "
            "or eval.aggregate=null."
        )
    table = getattr(datamodule, "table", None)
    info = getattr(table, "info", None)
    missing = [c for c in subgroups if info is None or c not in info.columns]
    if missing:
        raise ConfigError(
            f"eval.subgroups: no column {missing} in the data's table; subgroups are columns of "
            "the CSV (datamodule=csv)."
        )
