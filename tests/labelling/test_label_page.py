"""``medclf-label`` as users meet it: the server started as a process (and stopped by its
PID with Ctrl-C's signal), the page driven with MIA's keys in headless Chromium, and the
server's defences tried with raw HTTP requests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from labelling_helpers import BROKEN, FORMATS, REPO, Server, request, write_formats

pytestmark = pytest.mark.xdist_group("label_page")  # one server, one browser, one worker

ARTIFACTS = REPO / "test-artifacts"
INSTALL = (
    "The browser tests need headless Chromium and Playwright for Python: "
    "`apt-get install -y chromium` and `.venv/bin/pip install -e '.[dev]'` "
    "(or `make setup`, which does both; `playwright install` is not needed). "
)
BLUE, ORANGE = "rgb(31, 119, 180)", "rgb(255, 127, 14)"  # the first two class colours


@pytest.fixture(scope="module")
def formats_folder(tmp_path_factory) -> Path:
    """FORMATS and BROKEN (labelling_helpers.write_formats) in a fresh folder."""
    return write_formats(tmp_path_factory.mktemp("label") / "images")


@pytest.fixture(scope="module")
def server(formats_folder: Path, tmp_path_factory):
    """A labelling server on a free port over FORMATS + BROKEN, with a symlink leading out of
    the folder (an image the server must never show)."""
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(formats_folder / FORMATS[0], outside / "secret.png")
    (formats_folder / "link.png").symlink_to(outside / "secret.png")
    (formats_folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    started = Server(
        [f"data_dir={formats_folder}", "classes=[normal,abnormal]"], tmp_path_factory.mktemp("cwd")
    )
    yield started
    printed = started.stop()
    assert started.process.returncode == 0, printed
    assert "stopped" in printed


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(INSTALL + f"No Chromium at {path} (set CHROMIUM to its path).")
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(INSTALL + "Playwright is not installed.")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def _labels(folder: Path) -> dict[str, str]:
    path = folder / "labels.csv"
    return dict(pd.read_csv(path).itertuples(index=False)) if path.exists() else {}


def test_keys_label_images_and_the_file_holds_exactly_those_labels(
    server: Server, formats_folder: Path, browser
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    progress, name = page.locator("#progress-text"), page.locator("#name")
    total = len(FORMATS) + 1
    expect(progress).to_have_text(f"0 / {total} labelled")
    expect(name).to_have_text(FORMATS[0])
    for done in (1, 2, 3):  # F2: assign the picked class (the first) and move on
        page.keyboard.press("F2")
        expect(progress).to_have_text(f"{done} / {total} labelled")
    expect(name).to_have_text(FORMATS[3])
    page.keyboard.press("2")  # pick the second class, F1: assign it and stay
    page.keyboard.press("F1")
    expect(progress).to_have_text(f"4 / {total} labelled")
    expect(name).to_have_text(FORMATS[3])
    assert _labels(formats_folder)[FORMATS[3]] == "abnormal"
    expect(page.locator("#frame")).to_have_css("border-top-color", ORANGE)
    page.keyboard.press("z")  # undo: the DICOM is unlabelled again, in the file too
    expect(progress).to_have_text(f"3 / {total} labelled")
    assert FORMATS[3] not in _labels(formats_folder)
    expect(page.locator("#frame")).to_have_class("unlabelled")
    page.keyboard.press("F2")  # the picked class is still the second one
    expect(progress).to_have_text(f"4 / {total} labelled")
    expect(name).to_have_text(FORMATS[4])
    expected = {FORMATS[0]: "normal", FORMATS[1]: "normal", FORMATS[2]: "normal"}
    expected[FORMATS[3]] = "abnormal"
    assert _labels(formats_folder) == expected
    assert list(pd.read_csv(formats_folder / "labels.csv").columns) == ["image", "label"]

    # the NIfTI volume: its middle slice, and a slider over its 12 slices
    expect(page.locator("#slice")).to_be_visible()
    expect(page.locator("#slice-text")).to_have_text("slice 7 / 12")
    expect(page.locator("#current")).to_have_attribute("src", "image/e_brain.nii.gz?z=6")
    counts = page.locator("#classes .count")
    expect(counts).to_have_text(["3", "1"])
    shot = ARTIFACTS / "label-page.png"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.locator("#slice-range").fill("2")
    expect(page.locator("#current")).to_have_attribute("src", "image/e_brain.nii.gz?z=2")

    # a reload shows the same state, on the same image; the DICOM keeps its border colour
    page.reload()
    expect(progress).to_have_text(f"4 / {total} labelled")
    expect(name).to_have_text(FORMATS[4])
    page.keyboard.press("ArrowLeft")
    expect(name).to_have_text(FORMATS[3])
    expect(page.locator("#frame")).to_have_css("border-top-color", ORANGE)
    thumb = page.locator(f'#strip .thumb[title="{FORMATS[0]}"]')
    expect(thumb).to_have_css("border-top-color", BLUE)

    # the unreadable file: an error tile with the reason, and labelling goes on
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(name).to_have_text(BROKEN)
    expect(page.locator("#error-tile")).to_be_visible()
    expect(page.locator("#error-tile")).to_contain_text("cannot read this image")
    expect(page.locator("#slice")).to_be_hidden()
    page.keyboard.press("1")
    page.keyboard.press("F1")
    expect(progress).to_have_text(f"5 / {total} labelled")

    # "unlabelled only" and U: the two unlabelled images, in the folder's order
    page.locator("#unlabelled-only").check()
    page.keyboard.press("u")
    expect(name).to_have_text(FORMATS[4])
    expect(page.locator("#position")).to_have_text("1 / 2")
    page.keyboard.press("ArrowRight")
    expect(name).to_have_text(FORMATS[5])
    assert errors == []
    page.close()


def test_requests_without_the_token_are_refused(server: Server) -> None:
    assert request(server.base, "/")[0] == 403
    assert request(server.base, "/api/state", token="not-" + server.token)[0] == 403
    status, headers, _ = request(server.base, f"/?token={server.token}")
    assert status == 200
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert request(server.base, "/api/state", headers={"Cookie": cookie})[0] == 200
    assert request(server.base, "/api/state", token=server.token)[0] == 200
    # a change must be a JSON request (a cross-site form cannot send one without CORS)
    status, _, _ = request(
        server.base, "/api/undo", server.token, "POST", headers={"Content-Type": "text/plain"}
    )
    assert status == 403


def test_a_foreign_host_header_is_refused(server: Server) -> None:
    for host in ("evil.example", f"evil.example:{server.port}", f"127.0.0.1:{server.port + 1}"):
        status, _, body = request(server.base, "/api/state", server.token, headers={"Host": host})
        assert status == 403, host
        assert b"not allowed" in body
    assert (
        request(
            server.base, "/api/state", server.token, headers={"Host": f"localhost:{server.port}"}
        )[0]
        == 200
    )


@pytest.mark.parametrize(
    "path",
    [
        "/image/../labels.csv",
        "/image/../../../../etc/passwd",
        "/image/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/image/..%2f..%2f..%2fetc%2fpasswd",
        "/image/%252e%252e/%252e%252e/etc/passwd",
        "/image//etc/passwd",
        "/image/%2fetc%2fpasswd",
        "/image/link.png",
        "/image/linked_dir/secret.png",
        "/image/labels.csv",
        "/api/info/..%2f..%2fetc%2fpasswd",
        "/static/..%2flabel.js",
    ],
)
def test_only_the_folders_images_are_served(server: Server, path: str) -> None:
    assert request(server.base, path, server.token)[0] == 404


def test_state_lists_no_file_from_outside_and_an_unreadable_image_says_why(server) -> None:
    status, _, body = request(server.base, "/api/state", server.token)
    state = json.loads(body)
    assert status == 200
    assert sorted(state["images"]) == sorted([*FORMATS, BROKEN])
    assert state["command"].startswith("python train.py datamodule=csv datamodule.csv_path=")
    status, _, body = request(server.base, f"/api/info/{BROKEN}", server.token)
    assert status == 200 and "cannot read this image" in json.loads(body)["error"]
    status, _, body = request(server.base, f"/image/{BROKEN}", server.token)
    assert status == 422 and BROKEN in json.loads(body)["error"]
    for image in FORMATS:  # every format the platform reads is drawn as a PNG
        status, headers, body = request(server.base, f"/image/{image}?size=64", server.token)
        assert status == 200 and headers["content-type"] == "image/png", image
        assert body.startswith(b"\x89PNG")


def test_multi_label_keys_toggle_classes_and_write_01_columns(
    formats_folder: Path, browser, tmp_path: Path
) -> None:
    from labelling_helpers import ThreadServer
    from playwright.sync_api import expect

    from medclf.labelling.app import open_session

    output = tmp_path / "findings.csv"
    session = open_session(
        formats_folder, ["effusion", "nodule", "mass"], multi_label=True, output=output
    )
    server = ThreadServer(session)
    try:
        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("#name")).to_have_text(FORMATS[0])
        page.keyboard.press("1")
        page.keyboard.press("3")
        page.keyboard.press("F2")  # effusion and mass, then the next image
        expect(page.locator("#name")).to_have_text(FORMATS[1])
        page.keyboard.press("F2")  # looked at, no finding: a row of zeros
        expect(page.locator("#progress-text")).to_have_text(f"2 / {len(FORMATS) + 1} labelled")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#name")).to_have_text(FORMATS[0])
        picked = page.locator("#classes button.picked")
        expect(picked).to_have_count(2)
        assert picked.evaluate_all("bs => bs.map(b => b.dataset.cls)") == ["effusion", "mass"]
        page.close()
    finally:
        server.stop()
    assert output.read_text() == (
        "image,effusion,nodule,mass\na_chest.png,1,0,1\nb_slide.jpg,0,0,0\n"
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"image": "../labels.csv", "labels": ["normal"]}, 404),
        ({"image": ["a_chest.png"], "labels": ["normal"]}, 404),
        ({"image": FORMATS[5], "labels": ["cat"]}, 400),
        ({"image": FORMATS[5], "labels": ["normal", "abnormal"]}, 400),
        ([1, 2], 400),
    ],
)
def test_a_bad_change_is_refused_and_the_file_kept(server, formats_folder, body, status) -> None:
    path = formats_folder / "labels.csv"
    before = path.read_bytes() if path.exists() else None  # whichever tests ran before
    assert request(server.base, "/api/label", server.token, "POST", body)[0] == status
    assert (path.read_bytes() if path.exists() else None) == before
