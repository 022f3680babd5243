"""The images of a folder and their labels, kept in ``labels.csv`` exactly as
``datamodule=csv`` reads it: ``image,label`` (single-label) or ``image`` plus one 0/1 column
per class (multi-label), paths relative to the folder, one row per labelled image.

The store is the only writer of the file. Every change is applied under a lock (a thread
lock, and ``fcntl.flock`` on a hidden lock file beside it where the platform has one) to
the file as it is on disk, then written atomically (a temporary file renamed over it), so
two tabs, or two servers on the same folder, never lose each other's labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from medclf.data.io import image_files
from medclf.errors import ConfigError, DataError

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


def natural_key(text: str) -> list:
    """``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def inside(root: Path, path: Path) -> bool:
    """True when ``path``, with every symlink resolved, lies under ``root`` (resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def scan_images(root: Path) -> list[str]:
    """Every image file under ``root`` (medclf.data.io.image_files) as a POSIX path relative
    to it, naturally sorted; hidden files and folders, and symlinked files that lead out of
    ``root``, are left out (symlinked folders are never entered)."""
    prefix = len(os.path.join(str(root), ""))
    found = []
    for path in image_files(root):
        relative = path[prefix:].replace(os.sep, "/")
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        if os.path.islink(path) and not inside(root, Path(path)):
            continue
        found.append(relative)
    return sorted(found, key=natural_key)


def labels_file(root: Path, output: str | Path | None) -> Path:
    """Where the labels of ``root`` go: ``output``, or ``root/labels.csv``."""
    return Path(output).expanduser().resolve() if output else root / "labels.csv"


def folder_classes(root: Path) -> list[str]:
    """The names of ``root``'s sub-folders that hold images (a class-per-folder layout)."""
    names = {Path(image).parts[0] for image in scan_images(root) if "/" in image}
    return sorted(names, key=natural_key)


def _check_classes(classes: Sequence[str], multi_label: bool) -> list[str]:
    classes = [str(c).strip() for c in classes]
    if any(not c for c in classes):
        raise ConfigError(f"classes={classes}: a class name is empty; give names like [a,b].")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ConfigError(f"classes={classes}: {repeated} given more than once.")
    if multi_label and IMAGE_COLUMN in classes:
        raise ConfigError(
            f"classes: {IMAGE_COLUMN!r} cannot be a class in multi-label mode (it is the "
            "column of image paths); rename the class."
        )
    least = 1 if multi_label else 2
    if len(classes) < least:
        raise ConfigError(
            f"classes={classes}: give at least {least} classes"
            + ("" if multi_label else " (or multi_label=true for yes/no labels per class)")
            + "."
        )
    return classes


def classes_file(output: Path) -> Path:
    """The hidden file beside the labels that keeps every class of the labelling (a
    single-label file only shows the classes used so far)."""
    return output.parent / f".{output.name}.classes.json"


def resolve_classes(
    classes: Sequence[str] | None,
    output: Path,
    root: Path,
    multi_label: bool,
    model_classes: Sequence[str] | None = None,
) -> tuple[list[str], str]:
    """The classes and where they came from: ``classes`` as given; else those of the last
    labelling into ``output`` (its classes file, else the labels file's own, with the
    assisting model's added); else the model's; else ``root``'s sub-folder names."""
    if classes:
        return _check_classes(classes, multi_label), "classes"
    if output.is_file():
        kept = classes_file(output)
        found = []
        if kept.is_file():
            with contextlib.suppress(ValueError, OSError):
                found = [str(c) for c in json.loads(kept.read_text()).get("classes", [])]
        table = _read_table(output)
        if multi_label:
            found = found or [c for c in table.columns if c != IMAGE_COLUMN]
        elif LABEL_COLUMN in table.columns:
            used = sorted({v for v in table[LABEL_COLUMN] if v}, key=natural_key)
            found = found + [c for c in used if c not in found]
        if found and model_classes and set(found) <= set(model_classes):
            return _check_classes(model_classes, multi_label), f"{output} and the model"
        if found:
            extra = [c for c in model_classes or [] if c not in found]
            source = str(output) + (" and the model" if extra else "")
            return _check_classes(found + extra, multi_label), source
    if model_classes:
        return _check_classes(model_classes, multi_label), "the model"
    found = folder_classes(root)
    if found:
        return _check_classes(found, multi_label), f"the sub-folders of {root}"
    raise ConfigError(
        f"no classes: give them with 'classes=[normal,pneumonia]' (no {output.name} with labels "
        f"and no class sub-folders in {root})."
    )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({IMAGE_COLUMN: []})
    except Exception as exc:
        raise DataError(
            f"{path}: cannot read this labels file ({exc}); fix it, move it away, or label into "
            "another file with output=OTHER.csv."
        ) from None


def _mismatch(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path} does not match this labelling: {problem}. Nothing was changed. Fix or move the "
        "file, give the classes it uses (classes=[...], multi_label=...), or label into another "
        "file with output=OTHER.csv."
    )


def _listed(values: Sequence[str], limit: int = 5) -> str:
    values = list(values)
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(repr(v) for v in values[:limit]) + more


def read_labels(
    path: Path, classes: Sequence[str], multi_label: bool, images: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """The labels in ``path`` (image → its classes), checked against the labelling: an
    unknown class, an image not in the folder, a repeated row or a missing column is a
    DataError naming the file and the values."""
    if not path.is_file():
        return {}
    table = _read_table(path)
    if table.empty and IMAGE_COLUMN not in table.columns:
        return {}
    if IMAGE_COLUMN not in table.columns:
        raise _mismatch(path, f"no {IMAGE_COLUMN!r} column (columns: {_listed(table.columns)})")
    known = set(images)
    strays = [v for v in table[IMAGE_COLUMN] if v not in known]
    if strays:
        raise _mismatch(path, f"{len(strays)} images are not in the folder: {_listed(strays)}")
    repeated = table[IMAGE_COLUMN][table[IMAGE_COLUMN].duplicated()].tolist()
    if repeated:
        raise _mismatch(path, f"images listed more than once: {_listed(repeated)}")
    if multi_label:
        columns = [c for c in table.columns if c != IMAGE_COLUMN]
        unknown = [c for c in columns if c not in classes]
        if unknown:
            raise _mismatch(path, f"unknown classes (columns) {_listed(unknown)}")
        missing = [c for c in classes if c not in columns]
        if missing:
            raise _mismatch(path, f"no column for classes {_listed(missing)}")
        values = table[list(classes)].apply(lambda col: col.str.strip())
        bad = sorted(set(values.to_numpy().ravel()) - {"0", "1"})
        if bad:
            raise _mismatch(path, f"class columns must hold 0 or 1, found {_listed(bad)}")
        return {
            image: tuple(c for c in classes if row[c] == "1")
            for image, (_, row) in zip(table[IMAGE_COLUMN], values.iterrows(), strict=True)
        }
    if LABEL_COLUMN not in table.columns:
        hint = " (a multi-label file? give multi_label=true)" if len(table.columns) > 2 else ""
        raise _mismatch(path, f"no {LABEL_COLUMN!r} column{hint}")
    unknown = sorted({v for v in table[LABEL_COLUMN] if v not in classes}, key=natural_key)
    if unknown:
        raise _mismatch(path, f"unknown classes {_listed(unknown)} (classes are {list(classes)})")
    return dict(zip(table[IMAGE_COLUMN], ((v,) for v in table[LABEL_COLUMN]), strict=True))


class LabelStore:
    """The folder's images and their labels, changed only through :meth:`assign` and
    :meth:`undo`, each written to ``output`` at once."""

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        multi_label: bool = False,
        output: str | Path | None = None,
        model_classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"data_dir={root}: not a folder; give the folder of images.")
        self.output = labels_file(self.root, output)
        self.multi_label = bool(multi_label)
        self.images = scan_images(self.root)
        if not self.images:
            raise DataError(f"data_dir={self.root}: no image files in this folder (or below).")
        self.classes, self.classes_from = resolve_classes(
            classes, self.output, self.root, self.multi_label, model_classes
        )
        self.labels = read_labels(self.output, self.classes, self.multi_label, self.images)
        self.history: list[tuple[str, tuple[str, ...] | None]] = []
        self._order = {image: i for i, image in enumerate(self.images)}
        self._lock = threading.Lock()
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.output.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's lock, then the file lock; the labels re-read if another process
        wrote the file since this one did."""
        with self._lock:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self.output.parent / f".{self.output.name}.lock"
            with open(lock_path, "a") as handle:
                try:
                    import fcntl
                except ImportError:  # Windows: one server per folder
                    fcntl = None
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    if self._stamp() != self._seen:
                        self.labels = read_labels(
                            self.output, self.classes, self.multi_label, self.images
                        )
                    yield
                finally:
                    if fcntl is not None:
                        fcntl.flock(handle, fcntl.LOCK_UN)

    def __contains__(self, image: object) -> bool:
        """True for the folder's images (relative POSIX paths), and nothing else."""
        return isinstance(image, str) and image in self._order

    def snapshot(self) -> dict[str, tuple[str, ...]]:
        """A copy of the labels, consistent while other threads change them."""
        with self._lock:
            return dict(self.labels)

    def check(self, image: str, labels: Sequence[str]) -> tuple[str, ...]:
        """``labels`` as stored (in class order), or a ValueError saying what is wrong."""
        if image not in self:
            raise KeyError(image)
        unknown = [c for c in labels if c not in self.classes]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; the classes are {self.classes}")
        chosen = tuple(c for c in self.classes if c in set(labels))
        if not self.multi_label and len(chosen) != 1:
            raise ValueError(f"give exactly one class per image, got {list(labels)}")
        return chosen

    def assign(self, image: str, labels: Sequence[str]) -> tuple[str, ...]:
        """Give ``image`` these classes (one, or any number in multi-label mode) and write."""
        chosen = self.check(image, labels)
        with self._locked():
            self.history.append((image, self.labels.get(image)))
            self.labels[image] = chosen
            self._write()
        return chosen

    def undo(self) -> str | None:
        """Take back the last change made here; returns its image (None: nothing to undo)."""
        with self._locked():
            if not self.history:
                return None
            image, before = self.history.pop()
            if before is None:
                self.labels.pop(image, None)
            else:
                self.labels[image] = before
            self._write()
        return image

    def table(self) -> pd.DataFrame:
        """The labels as written: rows in the folder's order."""
        images = sorted(self.labels, key=self._order.__getitem__)
        if self.multi_label:
            data = {IMAGE_COLUMN: images}
            for c in self.classes:
                data[c] = [int(c in self.labels[i]) for i in images]
            return pd.DataFrame(data)
        return pd.DataFrame(
            {IMAGE_COLUMN: images, LABEL_COLUMN: [self.labels[i][0] for i in images]}
        )

    def _write(self) -> None:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.output.name}.", suffix=".tmp", dir=self.output.parent
        )
        try:
            with os.fdopen(handle, "w", newline="") as stream:
                self.table().to_csv(stream, index=False)
            os.replace(temporary, self.output)
            kept = json.dumps({"classes": self.classes, "multi_label": self.multi_label})
            if not _same_text(classes_file(self.output), kept):
                classes_file(self.output).write_text(kept + "\n")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._seen = self._stamp()

    def counts(self, labels: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
        """Images per class (of ``labels``, default the current ones)."""
        counts = dict.fromkeys(self.classes, 0)
        for chosen in (self.snapshot() if labels is None else labels).values():
            for c in chosen:
                counts[c] += 1
        return counts

    def train_command(self) -> str:
        """The command that trains on the labels."""
        command = (
            f"python train.py datamodule=csv datamodule.csv_path={_quoted(self.output)} "
            f"datamodule.image_dir={_quoted(self.root)}"
        )
        if self.multi_label:
            command += f" 'datamodule.label_columns=[{','.join(self.classes)}]'"
        return command


def _quoted(path: Path) -> str:
    text = str(path)
    return f"'{text}'" if re.search(r"[^\w@%+=:,./-]", text) else text


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text().strip() == text
    except OSError:
        return False
