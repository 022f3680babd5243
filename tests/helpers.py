"""Run the commands as a user would, in this process or (where the process is the point) in
a subprocess, and read the MLflow store back."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAST = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
)
ENV = {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200"}
# For tests whose subject is not the network (tests/tiny_backbone.py); a process also needs
# the import, which registers it there.
TINY = ("backbone.name=tiny",)
TINY_PROCESS = (*TINY, "imports=[tiny_backbone]")


@dataclass
class Result:
    """What a finished command left: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_command(main: Callable[[], object], argv: list[str]) -> Result:
    """``main()`` of a console script with ``sys.argv = argv``, in this process: the same
    argument parsing, Hydra app, logging and exit status as the command, without a process
    start (about 12 s of imports on the 2-core machine). stdout and stderr are captured
    (Hydra's log handlers write to the streams current when it configures them)."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, {k: os.environ.get(k) for k in ENV}
    sys.argv = list(argv)
    os.environ.update(ENV)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Result(code, out.getvalue(), err.getvalue())


VALUE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--cfg")


def _train_argv(root: Path, overrides: tuple[str, ...]) -> list[str]:
    """Flags (``-m``, ``--config-dir DIR``) first, then ``paths.root_dir``, the overrides."""
    flags, rest, items = [], [], iter(overrides)
    for item in items:
        if item in VALUE_FLAGS:
            flags += [item, next(items)]
        elif item.startswith("-"):
            flags.append(item)
        else:
            rest.append(str(item))
    if not any("eval.bootstrap" in o for o in rest):
        # intervals are the subject of tests/evaluation and tests/test_study.py; elsewhere
        # 100 resamples (about 0.1 s instead of 1 s a run) run the same code
        rest.append("eval.bootstrap=100")
    return [*flags, f"paths.root_dir={root}", *rest]


_STORE_TEMPLATE: list[Path] = []


def seed_store(root: Path) -> None:
    """Give ROOT an MLflow store whose SQLite schema exists already (a copy of one made once
    per test session): creating the schema runs MLflow's migrations, about 7 s each time.
    A user's store has its schema after the first run; the wheel, UI and demo tests still
    start from nothing."""
    import atexit
    import shutil
    import tempfile

    target = root / "mlruns" / "mlflow.db"
    if target.exists():
        return
    if not _STORE_TEMPLATE:
        from mlflow.tracking import MlflowClient

        folder = tempfile.mkdtemp(prefix="medclf-store-")
        atexit.register(shutil.rmtree, folder, True)  # the test process's own: gone at its end
        template = Path(folder) / "mlflow.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()
        _STORE_TEMPLATE.append(template)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_STORE_TEMPLATE[0], target)


def _without_logged_model(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Log the model to MLflow only in the tests about it (they say
    ``logger.mlflow.save_model=true``): it costs about 6 s a run."""
    other_logger = any(o.startswith("logger=") and o != "logger=mlflow" for o in overrides)
    if other_logger or any("save_model" in o for o in overrides):
        return overrides
    return (*overrides, "logger.mlflow.save_model=false")


def run_train(root: Path, *overrides: str) -> Result:
    """``medclf-train paths.root_dir=ROOT OVERRIDES``, in this process."""
    from medclf.cli.train import main

    no_store = any(
        o.startswith(("logger=", "check_only", "+check_only")) or "tracking_uri=" in o
        for o in overrides
    )
    if not no_store or "logger=mlflow" in overrides:
        seed_store(root)
    overrides = _without_logged_model(overrides)
    return run_command(main, ["medclf-train", *_train_argv(root, overrides)])


def train_command(root: Path, *overrides: str) -> list[str]:
    """The command line of ``python train.py paths.root_dir=ROOT OVERRIDES``."""
    return [sys.executable, str(REPO / "train.py"), *_train_argv(root, overrides)]


def process_env(**extra: str) -> dict[str, str]:
    """This environment for a subprocess, with the tests folder importable (tiny_backbone)."""
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, **ENV, PYTHONPATH=path.rstrip(os.pathsep), **extra)


def train_process(root: Path, *overrides: str, timeout: int = 600) -> Result:
    """``python train.py paths.root_dir=ROOT OVERRIDES`` in a subprocess: for the tests where
    the process is the point (signals, DDP ranks, import time)."""
    done = subprocess.run(
        train_command(root, *overrides),
        cwd=REPO,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


def search_runs(root: Path, experiment: str = "medclf"):
    """All runs of the experiment in ROOT's default store, as a DataFrame (empty if none)."""
    import mlflow
    import pandas as pd

    if not (root / "mlruns" / "mlflow.db").exists():
        return pd.DataFrame()
    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow.search_runs(experiment_names=[experiment])


@contextlib.contextmanager
def ui_server(root: Path):
    """``medclf-ui --port 0`` (what make ui / make mlflow-server run) over ROOT's store;
    yields (dashboard link match with groups port and experiment id, tracking URI) once the
    server answers, and stops it by its process group afterwards."""
    env = dict(os.environ, MEDCLF_ROOT=str(root), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "medclf.cli.ui", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        link = uri = None
        deadline = time.monotonic() + 120
        while uri is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            link = link or re.search(r"http://127\.0\.0\.1:(\d+)/#/experiments/(\w+)/runs", line)
            found = re.search(r"tracking URI: (http://127\.0\.0\.1:\d+)", line)
            uri = found.group(1) if found else None
        assert link and uri, "the MLflow server did not start"
        yield link, uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def tiny_module(class_names=("a", "b", "c"), **overrides):
    """An untrained resnet18 ClassificationModule (1 channel, 32 px)."""
    from medclf.models.module import ClassificationModule

    kwargs = {
        "class_names": list(class_names),
        "in_chans": 1,
        "backbone": {"name": "resnet18", "pretrained": False},
        "head": {"activation": "softmax"},
        "loss": {"name": "ce"},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "image_size": 32,
    }
    return ClassificationModule(**{**kwargs, **overrides})


def write_checkpoint(module, path: Path) -> Path:
    """``module`` saved as Lightning saves a checkpoint (no training)."""
    import lightning as L

    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, max_epochs=0, enable_model_summary=False
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def run_config(root: Path, overrides: list[str], run_name: str, config_dir: Path | None = None):
    """The composed train config of ``medclf-train paths.root_dir=ROOT OVERRIDES`` (with a
    user's ``--config-dir``), with the Hydra state the pipeline reads set up, for calling
    ``medclf.pipeline`` functions in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from medclf.config import CONF_DIR

    overrides = [f"paths.root_dir={root}", *overrides]
    if config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{config_dir}]")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(root / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.logger.mlflow.run_name = run_name
    return cfg


def preflight(*overrides: str) -> None:
    """The pre-flight of the composed train config, as training and check_only run it (the
    default digits data): one ConfigError listing every problem, or none."""
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.errors import ConfigError
    from medclf.pipeline.checks import find_problems

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["datamodule.image_size=32", *overrides])
    problems, _ = find_problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems), problems)


def check_config(*overrides: str, config=None) -> None:
    """The pre-flight's config stage (every rule that needs no data) on the composed train
    config (or ``config``): one error listing every problem, or none."""
    from hydra import compose, initialize_config_dir

    from medclf.config import CONF_DIR
    from medclf.pipeline.plan import make_plan

    if config is None:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            config = compose("train", overrides=list(overrides))
    make_plan(config)


def check_datamodule(**kwargs) -> None:
    """The pre-flight's check of the datamodule keys ``kwargs`` (ConfigError naming a bad
    one)."""
    from omegaconf import OmegaConf

    from medclf.pipeline.rules import check_datamodule as check

    check(OmegaConf.create({"datamodule": kwargs}))


def write_dicom(path: Path, pixels, photometric: str = "MONOCHROME2", **tags) -> Path:
    """A minimal DICOM file (Explicit VR Little Endian, a CT secondary capture) with these
    pixels (None: none) and tags."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


BROWSER_INSTALL = (
    "The browser tests need headless Chromium and Playwright for Python: "
    "`apt-get install -y chromium` and `.venv/bin/pip install -e '.[dev]'` "
    "(or `make setup`, which does both; `playwright install` is not needed). "
)


def open_in_chromium(path: Path, screenshot: Path | None = None) -> dict:
    """Open a local page in headless Chromium (the system's, through Playwright) and return
    what it showed: its h2 headings by id, its images (alt, loaded, natural width), the
    requests it made besides its own URL and data: URIs, script errors and dialogs."""
    import os
    import shutil

    import pytest

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(BROWSER_INSTALL + "Playwright is not installed.")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail(BROWSER_INSTALL + f"No Chromium at {chromium} (set CHROMIUM to its path).")
    url = Path(path).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            requests, problems = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url, wait_until="load")
            headings = page.eval_on_selector_all(
                "h2[id]", "els => Object.fromEntries(els.map(e => [e.id, e.innerText]))"
            )
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])"
            )
            body = page.inner_text("body")
            scripts = page.locator("script").count()
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {
        "headings": headings,
        "images": images,
        "body": body,
        "scripts": scripts,
        "requests": [u for u in requests if u != url and not u.startswith("data:")],
        "problems": problems,
    }
