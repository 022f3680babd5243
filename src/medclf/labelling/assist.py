"""A trained model's help with labelling: a suggested class and its probability for each
image, predicted in a background thread through the platform's one inference path (the
checkpoint's input spec, ``PredictDataset``, ``predict_batch``, ``decide``) and cached, and
the active-learning order that puts the images the model is least sure of first.

Uncertainty is the margin of the decision: the top probability minus the second one
(multi-class); for a binary model twice the distance of the positive probability from the
model's threshold (the same as top minus second at 0.5); for a multi-label model twice the
smallest distance of a label's probability from its threshold. Lower is less sure.

The cache is a CSV per model (keyed by the checkpoints' paths, sizes and modification
times) in ``cache_dir``; an image whose size or modification time changed is predicted
again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclf.data.checkcache import stamps
from medclf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def margins(probs: np.ndarray, task: str, threshold: float | Sequence[float]) -> np.ndarray:
    """The decision margin of each row of (N, K) probabilities (see the module)."""
    probs = np.asarray(probs, dtype=np.float64)
    if task == "multiclass":
        top = np.sort(probs, axis=1)
        return top[:, -1] - top[:, -2]
    t = np.asarray(threshold, dtype=np.float64).reshape(-1)
    if task == "binary":
        return 2.0 * np.abs(probs[:, 1] - t[0])
    return 2.0 * np.abs(probs - t).min(axis=1)


def uncertainty_order(
    images: Sequence[str], labelled: set[str], margin: dict[str, float]
) -> list[str]:
    """Unlabelled images by ascending margin, then those without a suggestion yet, then the
    labelled ones (each part in folder order where margins tie)."""
    rank = {image: i for i, image in enumerate(images)}
    unlabelled = [i for i in images if i not in labelled]
    scored = sorted((i for i in unlabelled if i in margin), key=lambda i: (margin[i], rank[i]))
    waiting = [i for i in unlabelled if i not in margin]
    return scored + waiting + [i for i in images if i in labelled]


class Assistant:
    """The models of ``paths`` and their suggestions for the images of a folder."""

    def __init__(
        self,
        paths: list[str],
        root: Path,
        cache_dir: Path,
        batch_size: int = 16,
    ) -> None:
        from medclf.inference.predict import load_models

        for path in paths:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"ckpt_path={path}: no such checkpoint file.")
        self.paths = [str(Path(p).expanduser().resolve()) for p in paths]
        self.models, self.spec = load_models(self.paths)
        if self.spec.metadata:
            raise ConfigError(
                f"ckpt_path={paths[0]}: the model also takes metadata columns "
                f"{self.spec.metadata_columns}, which a folder of images does not have; "
                "suggest labels with an image-only model."
            )
        self.root, self.images = root, []
        self.batch_size = max(1, int(batch_size))
        self.cache = cache_dir / f"suggestions-{self._key()}.csv"
        self.probs: dict[str, np.ndarray] = {}
        self.errors: dict[str, str] = {}
        self.status, self.error = "waiting", None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    def _key(self) -> str:
        digest = hashlib.sha1()
        for path in self.paths:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    def _stamps(self, images: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(size, mtime) of each image still there, by its relative path."""
        paths = {image: str(self.root / image) for image in images}
        found, _ = stamps(paths.values())
        return {image: found[path] for image, path in paths.items() if path in found}

    def start(self, images: Sequence[str]) -> None:
        """Predict every image (relative to ``root``) not in the cache, in a daemon thread."""
        self.images = list(images)
        self._thread = threading.Thread(target=self._run, name="medclf-label-assist", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.status = "running"
            self._load_cache()
            todo = [i for i in self.images if i not in self.probs]
            for start in range(0, len(todo), self.batch_size):
                self._predict(todo[start : start + self.batch_size])
                self._save_cache()
            self.status = "done"
            log.info("suggestions for %d images (%s)", len(self.probs), self.cache)
        except Exception as exc:  # shown on the page; labelling goes on without suggestions
            log.exception("suggestions failed")
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"

    def _predict(self, chunk: list[str]) -> None:
        import torch

        from medclf.inference.inputs import PredictDataset
        from medclf.inference.predict import predict_batch

        table = pd.DataFrame({"path": [str(self.root / i) for i in chunk]})
        dataset = PredictDataset(table, self.spec)
        items, names = [], []
        for index, image in enumerate(chunk):
            try:
                items.append(dataset[index]["image"])
                names.append(image)
            except (DataError, OSError) as exc:
                with self._lock:
                    self.errors[image] = str(exc)
        if not items:
            return
        probs = predict_batch(
            self.models, torch.stack(items), task=self.spec.task, threshold=self.spec.threshold
        )
        with self._lock:
            for image, row in zip(names, probs, strict=True):
                self.probs[image] = np.asarray(row, dtype=np.float64)

    def _load_cache(self) -> None:
        if not self.cache.is_file():
            return
        try:
            table = pd.read_csv(self.cache)
            columns = [f"prob_{c}" for c in self.class_names]
            current = self._stamps(self.images)
            for row in table.itertuples(index=False):
                row = row._asdict()
                image = row["image"]
                if (row["size"], row["mtime_ns"]) == current.get(image):
                    self.probs[image] = np.array([row[c] for c in columns], dtype=np.float64)
        except Exception as exc:  # a damaged cache is only predicted again
            log.warning("ignoring the suggestion cache %s (%s)", self.cache, exc)
            self.probs.clear()

    def _save_cache(self) -> None:
        with self._lock:
            images = list(self.probs)
        current = self._stamps(images)
        images = [i for i in images if i in current]  # an image deleted meanwhile is not cached
        with self._lock:
            probs = np.array([self.probs[i] for i in images]).reshape(len(images), -1)
        table = pd.DataFrame(
            {
                "image": images,
                "size": [current[i][0] for i in images],
                "mtime_ns": [current[i][1] for i in images],
            }
        )
        for k, name in enumerate(self.class_names):
            table[f"prob_{name}"] = probs[:, k] if len(images) else []
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.cache.with_suffix(".tmp")
        table.to_csv(temporary, index=False, float_format="%.8g")
        os.replace(temporary, self.cache)

    def suggestions(self) -> dict[str, dict[str, Any]]:
        """image → suggested classes (the model's decision), their probability and margin;
        with a model fitted with conformal prediction sets (one model), also the set and
        whether it abstains."""
        from medclf.models.outputs import decide

        with self._lock:
            images = list(self.probs)
            if not images:
                return {}
            probs = np.stack([self.probs[i] for i in images])
        chosen = np.asarray(decide(probs, self.spec.task, self.spec.threshold))
        margin = margins(probs, self.spec.task, self.spec.threshold)
        names = self.class_names
        sets = None
        if self.spec.conformal is not None and len(self.models) == 1:
            from medclf.inference.table import set_columns

            sets = set_columns(probs, names, self.spec.conformal)
        found = {}
        for n, (image, row, picked, m) in enumerate(
            zip(images, probs, chosen, margin, strict=True)
        ):
            if self.spec.task == "multilabel":
                labels = [names[k] for k in np.flatnonzero(picked)]
                probability = [float(row[k]) for k in np.flatnonzero(picked)]
            else:
                k = int(np.argmax(picked))
                labels, probability = [names[k]], float(row[k])
            found[image] = {"labels": labels, "probability": probability, "margin": float(m)}
            if sets is not None:  # the conformal prediction set: what the model cannot rule out
                found[image]["set"] = [c for c in sets["set"][n].split(";") if c]
                found[image]["abstain"] = bool(sets["abstain"][n])
        return found

    def progress(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "done": len(self.probs) + len(self.errors),
            "total": len(self.images),
            "model": self.paths[0] if len(self.paths) == 1 else f"{len(self.paths)} models",
        }
