"""Every page's tested blocks run as a reader would run them, in a folder of its own
(tests/docs/doc_runner.py: medclf's commands in this process, with tiny settings that it
lists). A command that fails, or a file a page says to write that a later command cannot
use, fails the page's test."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from doc_blocks import DOCS, logical_lines, marked_blocks, marked_pages
from doc_runner import PageRun, tiny_argv

PAGES = marked_pages()


def _call(base: str, token: str, path: str, body: dict | None = None) -> dict:
    """One request to the labelling page's API, as its script makes it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path,
        data=data,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def _truth(name: str) -> str:
    """The class a person sees in a stand-in image: its file name says it."""
    return name.split("/")[-1].split("_")[0]


def label_half(base: str, token: str) -> None:
    """The person labels every second image by hand (keys 1/2 then F2)."""
    state = _call(base, token, "/api/state")
    for image in state["images"][::2]:
        _call(base, token, "/api/label", {"image": image, "labels": [_truth(image)]})
    assert _call(base, token, "/api/state")["progress"]["labelled"] > 0


def accept_suggestions(base: str, token: str) -> None:
    """The model's suggestions arrive (most uncertain first); the person accepts each one
    (Enter) for the images still unlabelled."""
    deadline = time.monotonic() + 120
    while True:
        state = _call(base, token, "/api/state")
        assist = state["assist"]
        assert assist and not assist["error"], assist
        if assist["done"] >= assist["total"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert state["order"] == "uncertainty" and state["suggestions"], state["assist"]
    for image in state["images"]:
        if image not in state["labels"]:
            _call(base, token, "/api/accept", {"image": image})
    state = _call(base, token, "/api/state")
    assert state["progress"]["labelled"] == state["progress"]["total"]


def review_audit(base: str, token: str) -> None:
    """The audit's suspects come first; the person corrects the first one."""
    state = _call(base, token, "/api/state")
    assert state["order"] == "audit" and state["images"], state
    first = state["images"][0]
    _call(base, token, "/api/label", {"image": first, "labels": [_truth(first)]})


VISITORS = {
    "label-half": label_half,
    "accept-suggestions": accept_suggestions,
    "review-audit": review_audit,
}


@pytest.fixture
def isolated(tmp_path: Path):
    """What a page's own modules register (a loss, a backbone) and import is undone after it,
    as if its commands had run in processes of their own."""
    import medclf.models.losses
    import medclf.models.optim  # noqa: F401  (the built-in entries, registered before)
    from medclf.models.registry import BACKBONES, LOSSES, OPTIMIZERS, SCHEDULERS

    registries = (BACKBONES, LOSSES, OPTIMIZERS, SCHEDULERS)
    before = [set(r) for r in registries]
    modules, path = set(sys.modules), list(sys.path)
    yield
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry) - names:
            registry.pop(name)
    for name in set(sys.modules) - modules:  # the page's own modules, not libraries'
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            sys.modules.pop(name)
    sys.path[:] = path


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_the_page_runs(page: Path, tmp_path: Path, isolated) -> None:
    """The page's blocks run in order and every medclf command exits 0."""
    run = PageRun(tmp_path, VISITORS)
    for block in marked_blocks(page):
        run.run(block)
    print("\n".join(f"{where}: {seconds:.1f} s" for where, seconds in run.seconds))
    assert run.results or any(b.title for b in marked_blocks(page)), "nothing ran"


def test_the_tutorials_are_tested() -> None:
    """Every tutorial but the team server's (issue 26: medclf-server is not on main yet)
    holds tested blocks that run medclf commands."""
    tutorials = {p.name for p in (DOCS / "tutorials").glob("*.md")} - {"index.md"}
    tested = {p.name for p in PAGES if p.parent.name == "tutorials"}
    assert tutorials - tested == {"team-search.md"}
    for page in PAGES:
        commands = [
            line
            for block in marked_blocks(page)
            if block.lang == "bash"
            for line in logical_lines(block.text)
        ]
        assert commands or page.parent.name != "tutorials", page


def test_tiny_settings_replace_the_pages_values() -> None:
    """The tiny settings replace a page's own value of a key and keep everything else."""
    argv = tiny_argv(["backbone=3d_resnet18", "trainer.max_epochs=20", "datamodule=folder"])
    assert "trainer.max_epochs=1" in argv and "trainer.max_epochs=20" not in argv
    assert {"backbone=3d_resnet18", "datamodule=folder", "backbone.name=tiny3d"} <= set(argv)
    assert "backbone.name=tiny_plain" in tiny_argv(["backbone=resnet18"])
    assert "backbone.name=tiny" in tiny_argv(["datamodule=folder"])
