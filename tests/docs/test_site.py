"""The documentation site: ``mkdocs build --strict`` passes (as CI and a contributor run it),
the generated reference documents every key of every composed config, and the built site
works in headless Chromium: a navigation link changes the page, a search finds pages.

Set MEDCLF_DOCS_SHOTS=DIR to keep screenshots of the landing page and a tutorial there."""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import BROWSER_INSTALL, REPO
from medclf.config import CONF_DIR, group_options

pytestmark = pytest.mark.xdist_group("docs_site")
REFERENCE = ("reference/config", "reference/config-commands", "reference/config-hydra")
HOOKS = REPO / "docs" / "hooks"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as ``mkdocs build --strict`` builds it (a process of its own: the command
    CI runs, and the hook's --help runs stay out of this process)."""
    target = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return target


def _keys(config, prefix: str = "") -> set[str]:
    """Every dotted key of a composed config (mapping keys; a list is one key)."""
    found = set()
    for key in config:
        name = f"{prefix}{key}"
        found.add(name)
        if OmegaConf.is_missing(config, key) or OmegaConf.is_interpolation(config, key):
            continue
        if OmegaConf.is_dict(config[key]):
            found |= _keys(config[key], f"{name}.")
    return found


def composed_keys() -> dict[str, set[str]]:
    """The keys of training's config with every option of every group, and of the other
    commands' configs. The i-th options of the groups are composed together (one 2D and one
    3D backbone: every backbone has the same keys); a preset (``@package _global_``) alone."""
    alone = ("experiment", "recipe", "debug", "hparams_search")
    groups = {
        p.name: group_options(p.name)
        for p in CONF_DIR.iterdir()
        if p.is_dir() and p.name not in ("hydra", "paths")
    }
    groups["backbone"] = ["resnet18", "3d_resnet18"]
    together = {g: o for g, o in groups.items() if g not in alone}
    runs = [
        [f"{g}={o[i]}" for g, o in together.items() if i < len(o)]
        for i in range(max(map(len, together.values())))
    ]
    runs += [[f"{g}={o}"] for g in alone for o in groups.get(g, [])]
    found = {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for overrides in runs:
            found[" ".join(overrides)] = _keys(compose("train", overrides=overrides))
        for command in ("eval", "predict", "export", "label", "ensemble", "automl"):
            found[command] = _keys(compose(command))
    return found


def _documented(site: Path) -> set[str]:
    """The code spans of the reference pages."""
    text = "".join((site / page / "index.html").read_text() for page in REFERENCE)
    return {
        html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<code>(.*?)</code>", text)
    }


def test_every_config_key_is_in_the_reference(site: Path) -> None:
    documented = _documented(site)
    missing = {config: sorted(keys - documented) for config, keys in composed_keys().items()}
    missing = {config: keys for config, keys in missing.items() if keys}
    assert not missing, missing
    assert {"datamodule.batch_size", "callbacks.test_report.settings", "ckpt_path"} <= documented
    assert "datamodule.no_such_key" not in documented


def test_a_new_key_documents_itself(tmp_path: Path, monkeypatch) -> None:
    """The reference is made from the YAML: a key added to a group's file appears with its
    default and its comment, without a word written in docs/."""
    monkeypatch.syspath_prepend(str(HOOKS))
    import config_reference

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    with (conf / "loss" / "focal.yaml").open("a") as file:
        file.write("# How much the easy examples count, from 0 to 1.\nease: 0.25\n")
    monkeypatch.setattr(config_reference, "CONF", conf)
    row = next(r for r in config_reference.groups_markdown().splitlines() if "`loss.ease`" in r)
    assert "`0.25`" in row and "How much the easy examples count" in row


def test_every_command_has_a_row_in_the_commands_table() -> None:
    """The reference's table of commands (hand-written: it links each to its guide) lists
    every console script; the sections under it are generated from the same list."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    rows = (REPO / "docs" / "reference" / "commands.md").read_text()
    assert not [name for name in scripts if f"| `{name}` |" not in rows]


@pytest.fixture(scope="module")
def served(site: Path):
    """The built site over HTTP on 127.0.0.1 (search needs it: its index is fetched)."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(10)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def heading(page) -> str:
    """The page's title (its h1 without the permalink sign)."""
    return page.locator("h1").first.inner_text().rstrip("¶").strip()


def test_the_site_navigates_and_searches(served: str, tmp_path: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(BROWSER_INSTALL + "Playwright is not installed.")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    shots = Path(os.environ.get("MEDCLF_DOCS_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    outside, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)  # the search index is built in the page: slow
            # on a busy machine
            page.on("request", lambda r: r.url.startswith(served) or outside.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served + "/", wait_until="load")
            assert heading(page) == "medclf"
            page.screenshot(path=str(shots / "landing.png"))
            # navigation: the Tutorials tab, then a tutorial in the side navigation
            page.locator(".md-tabs__link", has_text="Tutorials").click()
            page.wait_for_url(re.compile(r"/tutorials/$"))
            assert heading(page) == "Tutorials"
            page.locator(".md-nav__link", has_text="Chest X-rays, binary, calibrated").first.click()
            page.wait_for_url(re.compile(r"/tutorials/xray-binary/$"))
            assert "threshold and calibration" in heading(page)
            page.screenshot(path=str(shots / "tutorial.png"))
            # search: results appear as one types, and lead to a page with the word
            # Material searches on its index's "ready" message, on focus and on keyup; a
            # fill() sends none of them once the index is ready (the race CI lost): wait for
            # the index, then type as a user does
            search = page.locator("input.md-search__input")
            search.click()
            page.wait_for_function(
                "() => !/Initializing/i.test("
                "document.querySelector('.md-search-result__meta')?.textContent ?? 'Initializing')"
            )
            search.press_sequentially("calibration")
            results = page.locator(".md-search-result__item")
            results.first.wait_for()
            assert results.count() > 3
            page.screenshot(path=str(shots / "search.png"))
            results.first.locator("a").first.click()
            page.wait_for_load_state("load")
            assert "calibration" in page.locator("article").inner_text().lower()
        finally:
            browser.close()
    assert not outside, outside  # the site asks nothing of the internet
    assert not errors, errors
