"""What Hydra knows about the running job: its name, overrides and run directory, and the
MLflow tags they give."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# what a run name shows of the data: the datamodule option's key naming its source
DATA_KEYS = ("data_dir", "csv_path", "path")
# overrides the name's backbone·loss·data part shows already
NAMED_KEYS = ("backbone", "backbone.name", "loss", "loss.name", "datamodule") + tuple(
    f"datamodule.{key}" for key in DATA_KEYS
)


def data_path(cfg: DictConfig) -> str | None:
    """The datamodule's data path (its first set key of DATA_KEYS), None for packaged data."""
    module = cfg.get("datamodule") or {}
    for key in DATA_KEYS:
        value = module.get(key) if key in module else None
        if isinstance(value, str) and value and value != "???":
            return value
    return None


def data_name(cfg: DictConfig) -> str:
    """``folder:xray`` (the datamodule option and the last part of its data path, a file
    without its suffix), or just the option (``digits``)."""
    from hydra.core.hydra_config import HydraConfig

    choice = None
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("datamodule")
    module = cfg.get("datamodule") or {}
    choice = choice or str(module.get("_target_", "data")).rsplit(".", 1)[-1]
    value = data_path(cfg)
    if value is None:
        return choice
    path = Path(value.rstrip("/"))
    return f"{choice}:{path.stem if path.suffix else path.name}"


def job_name(cfg: DictConfig) -> str:
    """The MLflow run name: ``backbone·loss·data`` (``resnet18·focal·folder:xray``) and,
    inside a multirun, the overrides this job does not share with the command line (the
    swept or searched values: ``resnet18·ce·digits optimizer.lr=0.01``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    parts = [
        str(OmegaConf.select(cfg, "backbone.name", default=None) or "model"),
        str(OmegaConf.select(cfg, "loss.name", default=None) or "loss"),
        data_name(cfg),
    ]
    name = "·".join(parts)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        varying = _varying_overrides()
        if varying:
            name += " " + ",".join(varying)
    return name


def _varying_overrides() -> list[str]:
    """This job's overrides less those given as such on the command line and those the run
    directory's name leaves out (``hydra.job.config.override_dirname.exclude_keys``)."""
    import sys

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = HydraConfig.get()
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    parser = OverridesParser.create()

    def parsed(argument: str):
        try:
            (override,) = parser.parse_overrides([argument])
        except Exception:  # an option of Hydra's own (-m, --config-dir ...)
            return None
        return override

    given = set()
    for argument in sys.argv[1:]:
        override = parsed(argument)
        if override is not None and not override.is_sweep_override():
            given.add((override.key_or_group, repr(override.value())))
    varying = []
    for argument in hydra_cfg.overrides.task:
        override = parsed(argument)
        if override is None:
            continue
        key = override.key_or_group
        if (key, repr(override.value())) in given or key in excluded or key in NAMED_KEYS:
            continue
        varying.append(argument)
    return varying


def job_overrides() -> list[str]:
    """The job's task overrides (what ``.hydra/overrides.yaml`` records)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def command_line(app: str) -> str:
    """The command that reproduces this job: ``app`` and the job's overrides."""
    try:
        return " ".join([app, *job_overrides()])
    except ValueError:  # not inside a Hydra app
        return app


def data_source(cfg: DictConfig) -> str:
    """Where the data comes from, for its MLflow dataset inputs: the resolved data path, or
    the datamodule class of packaged data."""
    path = data_path(cfg)
    return str(Path(path).resolve()) if path else str(cfg.datamodule.get("_target_", ""))


def job_dir() -> Path | None:
    """The run directory Hydra made for this job (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def run_tags(output_dir: Path, root_dir: str) -> dict[str, str]:
    """MLflow tags of this run: overrides, run directory, git commit and, inside a
    multirun, the sweep it belongs to (``sweep_id``, shared by all its jobs) and its number."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from medclf.tracking import names
    from medclf.tracking.logger import git_commit
    from medclf.tracking.sweeps import sweep_tags

    hydra_cfg = HydraConfig.get()
    tags = {
        names.OVERRIDES: " ".join(job_overrides()) or "(none)",
        names.OUTPUT_DIR: str(output_dir),
    }
    commit = git_commit(root_dir)
    if commit:
        tags[names.GIT_COMMIT] = commit
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags.update(sweep_tags(hydra_cfg.sweep.dir, hydra_cfg.job.num))
    return tags
