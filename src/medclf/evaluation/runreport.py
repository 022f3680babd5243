"""The run report: ``report.html`` (medclf.evaluation.html) filled from a finished test, and
its markdown summary, which becomes the MLflow run's description (``mlflow.note.content``)."""

from __future__ import annotations

import platform
import re
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from medclf.evaluation.html import DataSection, RunReport, markdown_summary, write_html

FIGURE_NAMES = {
    "confusion_matrix": "confusion_matrix",
    "roc_curves": "roc_curves",
    "pr_curves": "pr_curves",
    "reliability": "reliability",
    "subgroups_forest": "forest",
    "per_class_metrics": "per_class_metrics",
}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _best_epoch(trainer) -> str:
    path = str(getattr(trainer.checkpoint_callback, "best_model_path", "") or "")
    found = re.search(r"epoch_(\d+)", Path(path).name)
    return str(int(found.group(1))) if found else "n/a"


def _data_section(datamodule) -> DataSection | None:
    if not hasattr(datamodule, "split_counts"):
        return None
    group = getattr(datamodule, "group_column", None) or getattr(datamodule, "group_pattern", None)
    return DataSection(
        splits=datamodule.split_counts(),
        group_column=group if datamodule.groups else None,
        leakage=[],  # a group in two splits stops the run before training
        duplicates=list(getattr(datamodule, "duplicates_found", [])),
        source=type(datamodule).__name__,
    )


def _threshold(pl_module, rule: str | None) -> dict | None:
    if pl_module.task == "multiclass":
        return {"rule": "argmax of the softmax (no threshold)", "values": {}, "chosen_on": None}
    values = pl_module.threshold
    names = pl_module.class_names[1:] if pl_module.task == "binary" else pl_module.class_names
    values = values if isinstance(values, list) else [values] * len(names)
    return {
        "rule": rule or str(values[0]),
        "values": dict(zip(names, values, strict=True)),
        "chosen_on": "validation" if rule else None,
    }


def build_report(
    trainer, pl_module, analysis, figures, command, rule, run_id, title: str
) -> RunReport:
    """A RunReport of the run that ``trainer`` just tested."""
    hp = pl_module.hparams
    backbone = dict(hp.get("backbone") or {})
    optimizer = dict(hp.get("optimizer") or {})
    model = {
        "backbone": str(backbone.get("name")),
        "pretrained": str(backbone.get("pretrained")),
        "head": f"{pl_module.head.activation}, {len(pl_module.class_names)} classes",
        "loss": str(dict(hp.get("loss") or {}).get("name")),
        "optimizer": f"{optimizer.get('name')} (lr {optimizer.get('lr')})",
        "task": pl_module.task,
    }
    datamodule = trainer.datamodule
    training = {
        "epochs run": str(trainer.current_epoch),
        "best epoch": _best_epoch(trainer),
        "monitored": str(getattr(trainer.checkpoint_callback, "monitor", None)),
        "batch size": str(getattr(datamodule, "batch_size", "n/a")),
        "seed": str(getattr(datamodule, "seed", "n/a")),
    }
    import lightning
    import torch

    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "medclf": _version("medclf"),
        "device": str(pl_module.device),
    }
    named = {FIGURE_NAMES.get(k, k): v for k, v in figures.items()}
    return RunReport(
        title=title,
        command=command,
        run_id=run_id,
        created=datetime.now().strftime("%Y-%m-%d %H:%M"),
        data=_data_section(datamodule),
        model=model,
        training=training,
        metrics=analysis.table,
        bootstrap=analysis.bootstrap,
        calibration=analysis.calibration,
        threshold=_threshold(pl_module, rule),
        subgroups=analysis.subgroups,
        patients=analysis.patients,
        figures=named,
        environment=environment,
    )


def write_report(report: RunReport, path: Path) -> tuple[Path, str]:
    """``report.html`` at ``path`` and the markdown summary."""
    return write_html(report, path), markdown_summary(report)
