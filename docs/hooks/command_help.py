"""Print, as one JSON line, what each console command's ``--help`` prints: run by the docs hook
(code_reference.commands_markdown) in a process of its own, given pyproject's scripts as a
JSON argument. Each command's main runs in this process with ``sys.argv = [name, --help]``."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys


def help_text(name: str, target: str) -> str:
    """The text ``NAME --help`` prints (Hydra apps and argparse commands alike)."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [name, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main()
    finally:
        sys.argv = saved
    return out.getvalue()


if __name__ == "__main__":
    found = {name: help_text(name, target) for name, target in json.loads(sys.argv[1]).items()}
    print(json.dumps(found), flush=True)
