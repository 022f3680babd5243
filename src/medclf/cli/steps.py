"""What the commands that train as one of their steps share (medclf-ensemble's composite
mode, medclf-automl): their config composed with Hydra's compose API (it includes the
training config, so ``datamodule=folder`` and every training override apply), the command
line split into their own keys and the training overrides, and ``medclf-train`` run in this
process with an argument list, exactly as the console command runs it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from medclf.config import CONF_DIR


def key_of(argument: str) -> str:
    """The top-level key (or group) an override sets: ``+a.b=1`` → ``a``."""
    return argument.split("=", 1)[0].lstrip("+~").split(".", 1)[0].split("@", 1)[0]


def own_keys(config_name: str) -> set[str]:
    """The command's own top-level keys: those its config adds to the training config."""
    own = OmegaConf.load(CONF_DIR / f"{config_name}.yaml")
    train = OmegaConf.load(CONF_DIR / "train.yaml")
    return {k for k in own if k not in train and k != "defaults"}


def split_argv(argv: list[str], own: set[str]) -> tuple[list[str], list[str], list[str]]:
    """(the command's own overrides, the training overrides, ``hydra.*`` overrides)."""
    mine, train, hydra = [], [], []
    for argument in argv:
        key = key_of(argument)
        if key in own:
            mine.append(argument)
        elif key == "hydra" or argument.startswith("hydra/"):
            hydra.append(argument)
        else:
            train.append(argument)
    return mine, train, hydra


def compose_command(config_name: str, overrides: list[str], output_dir: bool = True) -> DictConfig:
    """The command's config with ``overrides`` (with ``output_dir``: its ``output_dir``
    resolved, also as ``paths.output_dir``)."""
    from hydra import compose, initialize_config_dir

    from medclf.config import check_group_choices

    check_group_choices(overrides)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    if not output_dir:
        return cfg
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(str(cfg.output_dir)).expanduser().resolve())
        cfg.output_dir = cfg.paths.output_dir
    return cfg


def train_in_process(argv: list[str]) -> int:
    """``medclf-train ARGV`` in this process; its exit status (0: done). The command's own
    logging is restored afterwards (Hydra configures the root logger for each run)."""
    from hydra.core.global_hydra import GlobalHydra

    from medclf.cli.train import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = sys.argv
    GlobalHydra.instance().clear()
    sys.argv = ["medclf-train", *argv]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
        root.handlers[:] = handlers
        root.setLevel(level)
    return code


def start_logging(log_file: Path) -> None:
    """INFO to the console and ``log_file`` (appended: a continued command adds to it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    console = logging.StreamHandler(sys.stdout)
    file = logging.FileHandler(log_file, mode="a")
    for handler in (console, file):
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [console, file]
    root.setLevel(logging.INFO)


def run_main(name: str, doc: str, argv: list[str], task: Callable[[list[str]], object]) -> int:
    """A command's main: ``--help`` prints ``doc``; a medclf error is one line and exit 2."""
    from medclf.errors import MedclfError

    if "--help" in argv or "-h" in argv:
        print(doc.strip())
        return 0
    try:
        task(argv)
    except MedclfError as exc:
        logging.getLogger(f"medclf.{name}").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; run the same command to continue" if name == "automl" else ""
        print(f"medclf-{name}: interrupted{hint}.", file=sys.stderr)
        return 130
    return 0
