"""The package as a user installs it: a wheel (no editable install, no checkout), whose
commands work from any directory because the Hydra config ships inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import REPO, process_env

COMMANDS = (  # the console scripts of the wheel
    "medclf-train",
    "medclf-check-data",
    "medclf-eval",
    "medclf-predict",
    "medclf-export",
    "medclf-report",
    "medclf-ui",
    "medclf-label",
    "medclf-ensemble",
    "medclf-automl",
    "medclf-server",
)


HELP_EACH = f"""
import contextlib, io, sys
from importlib.metadata import entry_points

for name in {COMMANDS[1:]!r}:
    (point,) = entry_points(group="console_scripts", name=name)
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = point.load()()
        except SystemExit as exit:
            code = exit.code
    print(f"{{name}}:{{code or 0}}")
"""


def _run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=process_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_the_wheel_installs_and_trains_from_an_empty_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"  # setuptools builds in the source tree: not in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(dist)],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("medclf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"medclf/conf/train.yaml", "medclf/conf/datamodule/digits.yaml"} <= names
    assert "medclf/conf/server.yaml" in names
    assert "hydra_plugins/medclf_optuna_sweeper/config.py" in names
    page = {f"medclf/labelling/static/{n}" for n in ("index.html", "label.js", "label.css")}
    assert page <= names, "the labelling page must ship in the wheel"

    # A throwaway environment: the wheel, and this environment's site-packages as a plain
    # path for the dependencies (its .pth files, the checkout's editable install among them,
    # are not read from there).
    env_dir = tmp_path / "env"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"], cwd=tmp_path
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    empty = tmp_path / "somewhere"
    empty.mkdir()
    where = _run([str(python), "-c", "import medclf; print(medclf.__file__)"], cwd=empty)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    assert all((env_dir / "bin" / command).is_file() for command in COMMANDS)
    shown = _run([str(env_dir / "bin" / "medclf-train"), "--help"], cwd=empty)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "backbone: " in shown.stdout and "densenet121" in shown.stdout
    helped = _run([str(python), "-c", HELP_EACH], cwd=empty)  # the others, in one process
    assert helped.stdout.split() == [f"{c}:0" for c in COMMANDS[1:]], helped.stderr[-3000:]

    trained = _run([str(env_dir / "bin" / "medclf-train"), "++trainer.fast_dev_run=true"], empty)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "test: test/accuracy=" in trained.stdout + trained.stderr
    assert (empty / "mlruns" / "mlflow.db").is_file()
    assert list(empty.glob("logs/runs/*/test/test_predictions.csv"))
