"""What Hydra knows about the running job: its name, overrides and run directory, and the
MLflow tags they give."""

from __future__ import annotations

from pathlib import Path


def job_name() -> str:
    """The job's overrides as ``key=value,...`` (the MLflow run name), or ``default``."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.override_dirname or "default"


def job_overrides() -> list[str]:
    """The job's task overrides (what ``.hydra/overrides.yaml`` records)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


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

    from medclf.tracking.logger import git_commit
    from medclf.tracking.sweeps import sweep_tags

    hydra_cfg = HydraConfig.get()
    tags = {"overrides": " ".join(job_overrides()) or "(none)", "output_dir": str(output_dir)}
    commit = git_commit(root_dir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags.update(sweep_tags(hydra_cfg.sweep.dir, hydra_cfg.job.num))
    return tags
