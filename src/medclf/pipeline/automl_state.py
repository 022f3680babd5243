"""What medclf-automl keeps between its steps and sessions: the budget parsed, the state
file (``automl_state.json``: what is done, and the wall time spent, summed over sessions and
kept current every few seconds so that a kill loses at most that), the one-session lock of
its folder, the folder's name, and how a step's command line is written."""

from __future__ import annotations

import fcntl
import json
import re
import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError
from medclf.files import write_text

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_budget(value: Any) -> float:
    """``2h``, ``90m``, ``1h30m``, ``45s`` or a number of seconds → seconds."""
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
            raise ConfigError(
                f"budget={value!r}: give a wall time such as budget=2h, budget=90m, "
                "budget=1h30m or budget=600 (seconds)."
            )
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"budget={value!r}: the budget must be more than 0.")
    return seconds


class State:
    """``automl_state.json``: what is done, written atomically under a lock; ``spent_s`` is
    the wall time of earlier sessions plus this one's (kept current by :meth:`beat`)."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("steps", [])
        self.before = float(self.data.get("spent_s", 0.0))
        self.started = started
        self.data["sessions"] = int(self.data.get("sessions", 0)) + 1

    def spent(self) -> float:
        return self.before + (time.time() - self.started)

    def save(self) -> None:
        with self.lock:
            self.data["spent_s"] = round(self.spent(), 2)
            write_text(self.path, json.dumps(self.data, indent=1, default=str))

    def beat(self, stop: threading.Event, every: float = 2.0) -> None:
        while not stop.wait(every):
            try:
                self.save()
            except (RuntimeError, OSError):  # the state changed while written: the next beat
                continue

    def step(self, name: str, command: str, seconds: float, status: str = "done") -> None:
        self.data["steps"].append(
            {"step": name, "command": command, "seconds": round(seconds, 1), "status": status}
        )
        self.save()


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """One session at a time per AutoML folder (the OS frees the lock if it dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "automl.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another medclf-automl is running in {folder}; wait for it, or give this one "
                "its own automl.name."
            ) from None
        yield


def automl_folder(cfg: DictConfig, argv: list[str]) -> Path:
    """``logs/automl/<name>``: ``automl.name``, else the data's name and a digest of the
    command line without the budget (the same command finds its folder again)."""
    import hashlib

    from medclf.pipeline.job import data_name

    name = OmegaConf.select(cfg, "automl.name")
    if not name:
        choice = [a.split("=", 1)[1] for a in argv if a.startswith("datamodule=")]
        data = data_name(cfg).split(":", 1)
        data[0] = choice[-1] if choice else "digits"
        kept = sorted(a for a in argv if not a.startswith(("budget=", "automl.name=")))
        digest = hashlib.sha1("\n".join(kept).encode()).hexdigest()[:8]
        name = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', '_'.join(data))}-{digest}"
    return Path(str(cfg.paths.log_dir)).expanduser().resolve() / "automl" / str(name)


def max_time(seconds: float) -> str:
    """The override that stops a training after ``seconds`` (Lightning's ``max_time``)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    return f'++trainer.max_time="{days:02d}:{hours:02d}:{minutes:02d}:{rest:02d}"'


def quote(argv: list[str]) -> str:
    """A command line as a shell reads it back."""
    return " ".join(shlex.quote(a) for a in argv)
