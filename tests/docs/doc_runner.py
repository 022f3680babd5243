"""Run a page's tested blocks (doc_blocks.py) as a reader would, in one folder per page.

medclf's commands run in this process (``helpers.run_command``: the same argument parsing,
Hydra app and exit status as the console script, without a 10 s process start). So that
all tutorials together stay within about 90 s of CI, the training commands (medclf-train,
``python train.py``, medclf-audit, medclf-check-data) get these overrides appended, or
replacing the page's value of the same key; everything else on the page runs as written:

- ``backbone.name``: ``tiny3d`` for a ``3d_*`` backbone (with
  ``datamodule.volume_size=[16,16,16]``), ``tiny_plain`` for ``resnet18`` and ``tiny`` for
  any other (tests/tiny_backbone.py): two backbones a page compares stay two different
  networks (a page about a backbone of the reader's own keeps it:
  ``<!-- test backbone=keep -->``);
- ``datamodule.image_size=32 datamodule.batch_size=8``; one epoch of at most
  ``trainer.limit_train_batches=2`` batches, one validation batch, two test batches
  (``trainer.limit_test_batches=2``), no sanity check, no batch-norm re-estimation
  (``model.bn_recalibration=never``);
- ``eval.bootstrap=100`` resamples, ``audit.folds=2``, ``logger.mlflow.save_model=false``
  (the logged MLflow model costs 6 s and no page reads it);
- medclf-compare gets ``--bootstrap 100``.

The folder's MLflow store starts with its schema made (``helpers.seed_store``), as a store
is after its first run. ``medclf-label`` serves its page in a thread of this process while
the page's visitor (``<!-- test visit=NAME -->``, a function of the test) plays the person
labelling through the page's HTTP API, then stops it as Ctrl-C would.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tomllib
from doc_blocks import Block, logical_lines

from helpers import REPO, Result, run_command, seed_store

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
SHIMS = {"train.py": "medclf-train", "eval.py": "medclf-eval", "predict.py": "medclf-predict"}
SHIMS["label.py"] = "medclf-label"
TRAINING = {"medclf-train", "medclf-audit", "medclf-check-data"}
VALUE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--cfg")
VALUE_FLAGS += ("--package", "-p", "--info")
TINY = {
    "datamodule.image_size": "32",
    "datamodule.batch_size": "8",
    "trainer.max_epochs": "1",
    "trainer.limit_train_batches": "2",
    "trainer.limit_val_batches": "1",
    "trainer.limit_test_batches": "2",
    "trainer.num_sanity_val_steps": "0",
    "model.bn_recalibration": "never",
    "eval.bootstrap": "100",
    "audit.folds": "2",
    "logger.mlflow.save_model": "false",
}
Visitor = Callable[[str, str], None]


def tiny_argv(argv: list[str], keep_backbone: bool = False) -> list[str]:
    """A training command's arguments with the tiny settings above (the page's own backbone
    kept where the page is about it: ``<!-- test backbone=keep -->``)."""
    keys = {a.split("=", 1)[0].lstrip("+~"): a for a in argv if "=" in a}
    backbone = keys.get("backbone", "backbone=resnet18").split("=", 1)[1]
    settings = dict(TINY)
    if keep_backbone:
        pass
    elif backbone.startswith("3d_"):
        settings.update({"backbone.name": "tiny3d", "datamodule.volume_size": "[16,16,16]"})
    elif "backbone" in keys and backbone == "resnet18":
        settings["backbone.name"] = "tiny_plain"
    else:
        settings["backbone.name"] = "tiny"
    flags, overrides, items = [], [], iter(argv)
    for item in items:  # Hydra takes its flags before the overrides
        if item in VALUE_FLAGS:
            flags += [item, next(items)]
        elif item.startswith("-"):
            flags.append(item)
        elif item.split("=", 1)[0].lstrip("+~") not in settings:
            overrides.append(item)
    return [*flags, *overrides, *(f"{key}={value}" for key, value in settings.items())]


class PageRun:
    """The blocks of one page, run in order in ``folder`` (the page's reader's folder)."""

    def __init__(self, folder: Path, visitors: dict[str, Visitor] | None = None) -> None:
        self.folder = folder
        self.visitors = visitors or {}
        self.variables: dict[str, str] = {}
        self.results: list[tuple[str, Result]] = []
        self.seconds: list[tuple[str, float]] = []  # each block's wall time
        seed_store(folder)

    def run(self, block: Block) -> None:
        start = time.perf_counter()
        try:
            self._run(block)
        finally:
            self.seconds.append((block.where, time.perf_counter() - start))

    def _run(self, block: Block) -> None:
        if block.title:
            path = self.folder / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
        elif block.lang == "python":
            code = compile(block.text, block.where, "exec")
            with _inside(self.folder):
                exec(code, {"__name__": "__main__"})
        elif block.lang in ("bash", "sh", "console"):
            for line in logical_lines(block.text):
                self.line(line, block)
        else:
            raise ValueError(f"{block.where}: a tested {block.lang!r} block needs title=PATH")

    def line(self, line: str, block: Block) -> None:
        words = shlex.split(line, comments=True)
        if not words:
            return
        name, rest = _command(words, line)
        if name is None:
            self.shell(line, block)
            return
        argv = self.expand(rest, block)
        result = self.command(name, argv, block)
        self.results.append((f"{name} {' '.join(argv)}", result))
        assert result.returncode == 0, (
            f"{block.where}: `{line}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
        )

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MEDCLF_ROOT"}
        return {**env, **self.variables}

    def shell(self, line: str, block: Block) -> None:
        """A line for bash: an assignment (kept for the next lines) or a command."""
        head = line.split("=", 1)[0]
        if "=" in line and head.isidentifier() and " " not in head:
            script = f'{line}\nprintf %s "${head}"'
            done = self._bash(script, block, line)
            self.variables[head] = done.stdout
        else:
            done = self._bash(line, block, line)
        self.results.append((line, Result(done.returncode, done.stdout, done.stderr)))

    def _bash(self, script: str, block: Block, line: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.folder,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{block.where}: `{line}` failed:\n{done.stderr[-2000:]}"
        return done

    def expand(self, rest: str, block: Block) -> list[str]:
        """The words bash makes of a command's arguments (quotes, variables, ``$(...)``)."""
        if not rest.strip():
            return []
        done = self._bash(f"printf '%s\\0' {rest}", block, rest)
        return [w for w in done.stdout.split("\0")[:-1]]

    def command(self, name: str, argv: list[str], block: Block) -> Result:
        module, function = SCRIPTS[name].split(":")
        main = getattr(importlib.import_module(module), function)
        if name in TRAINING:
            argv = tiny_argv(argv, block.options.get("backbone") == "keep")
        if name == "medclf-compare" and "--bootstrap" not in argv:
            argv = [*argv, "--bootstrap", "100"]
        visit = block.options.get("visit")
        if name == "medclf-label":
            assert visit in self.visitors, f"{block.where}: medclf-label needs visit=NAME"
            argv = [*argv, "port=0"]
        with _inside(self.folder), _labelling(self.visitors.get(visit)):
            return run_command(lambda: sys.exit(main()), [name, *argv])


def _command(words: list[str], line: str) -> tuple[str | None, str]:
    """(medclf command, the rest of the line) when the line runs one, else (None, "")."""
    first = words[0]
    if first in SCRIPTS:
        return first, line.split(first, 1)[1]
    if first in ("python", "python3") and len(words) > 1 and words[1] in SHIMS:
        return SHIMS[words[1]], line.split(words[1], 1)[1]
    return None, ""


@contextlib.contextmanager
def _inside(folder: Path):
    before = os.getcwd()
    saved_root = os.environ.pop("MEDCLF_ROOT", None)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
        if saved_root is not None:
            os.environ["MEDCLF_ROOT"] = saved_root


@contextlib.contextmanager
def _labelling(visitor: Visitor | None):
    """medclf-label's ``serve`` replaced by: the same app served in a thread, the visitor's
    requests, then a stop (what Ctrl-C does)."""
    if visitor is None:
        yield
        return
    from medclf.labelling import app

    original = app.serve

    def serve(session, host="127.0.0.1", port=0, allowed_hosts=None) -> str:
        import uvicorn

        sock = app.bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app.create_app(session, app.hosts_for("127.0.0.1", port, allowed_hosts)),
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            visitor(f"http://127.0.0.1:{port}", session.token)
        finally:
            server.should_exit = True
            thread.join(10)
        return str(session.store.output)

    app.serve = serve
    try:
        yield
    finally:
        app.serve = original
