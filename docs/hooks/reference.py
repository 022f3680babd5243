"""The mkdocs hook that writes the generated parts of the site when it is built: a page's
``<!-- generated: NAME -->`` line is replaced by GENERATORS[NAME]'s Markdown (the config,
the commands, what a run records in MLflow, the error messages, the Python API pages:
``<!-- generated: api medclf.data -->``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import code_reference  # noqa: E402
import config_reference  # noqa: E402

MARKER = re.compile(r"^<!-- generated: (?P<name>[\w-]+)(?: (?P<arg>[\w.]+))? -->$", re.MULTILINE)
GENERATORS = {
    "config-groups": config_reference.groups_markdown,
    "config-commands": config_reference.commands_markdown,
    "config-hydra": config_reference.hydra_markdown,
    "commands": code_reference.commands_markdown,
    "mlflow-names": code_reference.mlflow_markdown,
    "errors": code_reference.errors_markdown,
    "api": code_reference.api_markdown,
}
_cache: dict[str, str] = {}


def generated(name: str, arg: str | None = None) -> str:
    """GENERATORS[name]'s Markdown (given ``arg`` when the marker has one), made once per
    build."""
    key = f"{name} {arg}"
    if key not in _cache:
        _cache[key] = GENERATORS[name](arg) if arg else GENERATORS[name]()
    return _cache[key]


def on_pre_build(config) -> None:
    _cache.clear()


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise KeyError(f"{page.file.src_uri}: no generator {name!r} ({', '.join(GENERATORS)})")
        return generated(name, match["arg"])

    return MARKER.sub(replace, markdown)
