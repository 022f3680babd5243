"""Every console command's ``--help`` starts with whole sentences: its description is not cut
mid-sentence (``medclf-report`` once printed "compare an experiment's runs in the")."""

from __future__ import annotations

import importlib
import sys

import pytest
import tomllib

from helpers import REPO, run_command

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _description(text: str) -> str:
    """The first paragraph of prose: after argparse's usage block, or a Hydra app's header."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    for paragraph in paragraphs:
        if not paragraph.startswith("usage:"):
            return " ".join(paragraph.split())
    return ""


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_starts_with_whole_sentences(name: str) -> None:
    module, function = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module), function)
    result = run_command(lambda: sys.exit(main()), [name, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    description = _description(result.stdout)
    assert len(description) > 30, result.stdout[:500]
    assert description.endswith((".", ".)", ".``")), description
