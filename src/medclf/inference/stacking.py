"""A stacked ensemble as one artifact, and its predictions.

The artifact is a folder (``stacked_ensemble/``, in the ensemble's run directory and its MLflow
run)
holding ``ensemble.json`` (the members, the classes, the task, the threshold and the
metalearner's description), ``metalearner.npz`` (the rows the metalearner was fitted on and
its answers there: plain arrays, read with ``allow_pickle=False``) and
``member_checkpoints/``, the member checkpoints beside them (hard links where the file system
allows, else copies).

A member is one trained model or the folds of a cross-validation run, whose probabilities are
averaged (bagging); the metalearner (medclf.inference.metalearners) maps the members'
probabilities, side by side, to the ensemble's. Test-time augmentation applies per member.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medclf.errors import ConfigError
from medclf.files import write_text
from medclf.inference.metalearners import Metalearner, features, from_state
from medclf.tracking.names import ENSEMBLE_DIR, ENSEMBLE_FILE, MEMBERS_DIR, METALEARNER_FILE

FORMAT = "medclf-stacked-ensemble"
VERSION = 1


@dataclass
class Member:
    """One member: its name, the MLflow run it comes from, its checkpoints (several: a
    cross-validation run's folds, averaged)."""

    name: str
    run_id: str | None
    checkpoints: list[str]
    kind: str = "run"  # run | cv


@dataclass
class StackedEnsemble:
    """Members, metalearner and decision rule of a stacked ensemble."""

    members: list[Member]
    meta: Metalearner
    threshold: float | list[float] = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def task(self) -> str:
        return self.meta.task

    def combine(self, per_member: list[np.ndarray]) -> np.ndarray:
        """(N, K) probabilities from each member's (N, K) probabilities."""
        if len(per_member) != len(self.members):
            raise ValueError(f"{len(per_member)} members' outputs for {len(self.members)}")
        return self.meta.predict_proba(features(per_member)).astype(np.float32)

    def checkpoints(self) -> list[str]:
        """Every member checkpoint, member by member."""
        return [path for member in self.members for path in member.checkpoints]

    def groups(self, models: list[Any]) -> list[list[Any]]:
        """``models`` (loaded in :meth:`checkpoints`' order) grouped by member."""
        out, start = [], 0
        for member in self.members:
            out.append(models[start : start + len(member.checkpoints)])
            start += len(member.checkpoints)
        return out


def is_ensemble(path: str | Path) -> bool:
    """Whether ``path`` is a stacked ensemble: its folder or its ``ensemble.json``."""
    path = Path(str(path)).expanduser()
    return (path / ENSEMBLE_FILE).is_file() or (path.name == ENSEMBLE_FILE and path.is_file())


def _folder(path: str | Path) -> Path:
    path = Path(str(path)).expanduser()
    return path.parent if path.name == ENSEMBLE_FILE else path


def _link(source: Path, target: Path) -> None:
    """A hard link (no copy on the same file system), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def save_ensemble(ensemble: StackedEnsemble, directory: Path) -> Path:
    """Write the artifact into ``directory`` (the member checkpoints linked into it); returns
    the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    members = []
    for i, member in enumerate(ensemble.members):
        stored = []
        for j, checkpoint in enumerate(member.checkpoints):
            relative = Path(MEMBERS_DIR) / f"{i}" / f"{j}_{Path(checkpoint).name}"
            _link(Path(checkpoint), directory / relative)
            stored.append(str(relative))
        members.append(
            {
                "name": member.name,
                "run_id": member.run_id,
                "kind": member.kind,
                "files": stored,
            }
        )
    meta, arrays = ensemble.meta.state()
    spec = {
        "format": FORMAT,
        "version": VERSION,
        "class_names": ensemble.class_names,
        "task": ensemble.task,
        "threshold": ensemble.threshold,
        "models": members,
        "features": "member-major: member m's probability of class k is column m * K + k",
        "metalearner": meta,
        **ensemble.info,
    }
    np.savez(directory / METALEARNER_FILE, **arrays)
    write_text(directory / ENSEMBLE_FILE, json.dumps(spec, indent=1) + "\n")
    return directory


def load_ensemble(path: str | Path) -> StackedEnsemble:
    """The stacked ensemble of an artifact folder (or its ``ensemble.json``); the metalearner
    is fitted again from its stored rows and checked (medclf.inference.metalearners)."""
    folder = _folder(path)
    try:
        spec = json.loads((folder / ENSEMBLE_FILE).read_text())
        with np.load(folder / METALEARNER_FILE, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            f"ckpt_path={folder}: not a stacked ensemble that loads ({error}); give the "
            f"{ENSEMBLE_DIR} folder written by medclf-ensemble."
        ) from None
    if spec.get("format") != FORMAT:
        raise ConfigError(f"ckpt_path={folder}: {ENSEMBLE_FILE} is not a medclf ensemble.")
    members = [
        Member(
            m["name"],
            m.get("run_id"),
            [str(folder / p) for p in m["files"]],
            m.get("kind", "run"),
        )
        for m in spec["models"]
    ]
    threshold = spec.get("threshold", 0.5)
    keys = ("format", "version", "class_names", "task", "threshold", "models", "metalearner")
    info = {k: v for k, v in spec.items() if k not in keys}
    return StackedEnsemble(members, from_state(spec["metalearner"], arrays), threshold, info)


def member_probabilities(
    groups: list[list[Any]],
    image: Any,
    metadata: Any = None,
    tta: int = 1,
    gate: list | None = None,
) -> list[np.ndarray]:
    """Each member's (N, K) probabilities of a batch: its models' ``predict_proba`` averaged
    over ``tta`` views and over its folds. ``gate`` (a list) receives the first member
    model's out-of-distribution scores of the unchanged images (medclf.audit.ood), from the
    same forward pass: the gate asks whether an image is like the training data, which all
    members share."""
    import torch

    from medclf.inference.inputs import tta_views

    views = tta_views(image, int(tta))
    out = []
    with torch.no_grad():
        for g, models in enumerate(groups):
            probs = []
            for m, model in enumerate(models):
                per_view = []
                for v, view in enumerate(views):
                    if gate is not None and g == m == v == 0:
                        per_view.append(_gated(model, view, metadata, gate))
                    else:
                        per_view.append(model.predict_proba(view, metadata))
                probs.append(torch.stack(per_view).mean(0))
            out.append(torch.stack(probs).mean(0).numpy())
    return out


def _gated(model: Any, image: Any, metadata: Any, gate: list) -> Any:
    """The model's probabilities of ``image``; its gate's scores appended to ``gate``."""
    from medclf.audit import ood

    features, logits = model.features_and_logits(image, metadata)
    gate.append(ood.score(model.ood, logits.float().cpu().numpy(), features.float().cpu().numpy()))
    return model.probabilities(logits)


def predict_stacked(
    ensemble: StackedEnsemble,
    groups: list[list[Any]],
    image: Any,
    metadata: Any = None,
    tta: int = 1,
    gate: list | None = None,
) -> np.ndarray:
    """(N, K) probabilities of the stacked ensemble for a batch (``gate``: see
    :func:`member_probabilities`)."""
    return ensemble.combine(member_probabilities(groups, image, metadata, tta, gate))
