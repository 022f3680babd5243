"""The HTML run report: one self-contained file that a headless browser renders with every
section, every inline figure decoded, no network request and no injected script; and its
markdown summary."""

from __future__ import annotations

import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medclf.evaluation.claim import checklist
from medclf.evaluation.report_data import HINTS, SECTIONS, DataSection, RunReport
from medclf.evaluation.report_note import markdown_summary
from medclf.evaluation.report_page import format_interval, write_html

EVIL = "<script>alert(1)</script>"
COMMAND = "python train.py backbone=resnet18 loss=focal seed=7 'eval.subgroups=[sex]'"
INSTALL = (
    "The browser test needs headless Chromium and Playwright for Python: "
    "`apt-get install -y chromium` and `.venv/bin/pip install -e '.[dev]'` "
    "(or `make setup`, which does both; `playwright install` is not needed). "
)


def _figure(path: Path, kind: str) -> Path:
    """A small PNG drawn with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2.4), dpi=60)
    x = np.linspace(0, 1, 20)
    if kind == "matrix":
        ax.imshow(np.array([[8, 2], [1, 9]]), cmap="Blues")
    else:
        ax.plot(x, x**0.5)
        ax.plot([0, 1], [0, 1], "--")
    ax.set_title(path.stem)
    fig.savefig(path)
    plt.close(fig)
    return path


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Path]:
    """The five named figures as small PNGs, drawn once for the module."""
    root = tmp_path_factory.mktemp("figures")
    kinds = {"confusion_matrix": "matrix", "roc_curves": "curve", "pr_curves": "curve"}
    kinds |= {"reliability": "curve", "subgroups_forest": "curve"}
    return {name: _figure(root / f"{name}.png", kind) for name, kind in kinds.items()}


def _full_report(figures: dict[str, Path]) -> RunReport:
    splits = pd.DataFrame(
        {
            "split": ["train", "val", "test"],
            "samples": [120, 30, 30],
            "groups": [40.0, 10.0, math.nan],
            "benign": [60, 15, 15],
            EVIL: [60, 15, 15],
        }
    )
    metrics = pd.DataFrame(
        {
            "metric": ["test/auroc", "test/accuracy", "test/f1"],
            "value": [0.91234, 0.85, 0.8],
            "ci_low": [0.88412, 0.80, math.nan],
            "ci_high": [0.93688, 0.90, math.nan],
        }
    )
    subgroups = pd.DataFrame(
        {
            "column": ["sex", "sex", "age_band"],
            "subgroup": ["F", "M", EVIL],
            "n": [14, 16, 30],
            "auroc": [0.9, 0.92, 0.91],
            "auroc_ci_low": [0.8, 0.85, 0.88],
            "auroc_ci_high": [0.97, 0.98, 0.94],
        }
    )
    return RunReport(
        title=f"backbone=resnet18,loss=focal {EVIL}",
        command=COMMAND,
        run_id="0123abcd",
        created="2025-01-01 12:00",
        data=DataSection(
            splits=splits,
            group_column="patient_id",
            leakage=[],
            duplicates=[f"test/{EVIL}.png is identical to train/a.png"],
            source="CSV labels.csv, 180 images of 60 patients",
        ),
        model={"backbone": "resnet18", "pretrained": "imagenet", "head": "linear", "loss": "focal"},
        training={"epochs run": "12", "best epoch": "9", "monitored metric": "val/auroc"},
        metrics=metrics,
        bootstrap="1000 resamples of patients, 95 %",
        calibration={"ece": 0.0812, "brier": 0.1234, "ece_after": 0.0301, "temperature": 1.7},
        threshold={"rule": "youden", "values": {"benign": 0.41, EVIL: 0.55}, "chosen_on": "val"},
        subgroups=subgroups,
        patients=metrics.assign(metric=["patient/auroc", "patient/accuracy", "patient/f1"]),
        figures=dict(figures),
        environment={"python": "3.11.7", "torch": "2.14.1", "device": "cpu"},
    )


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids[value] = tag


def _parse(text: str) -> _Ids:
    parser = _Ids()
    parser.feed(text)
    return parser


def test_format_interval() -> None:
    assert format_interval(0.91234, 0.88412, 0.93688) == "0.912 [0.884, 0.937]"
    assert format_interval(0.85, math.nan, math.nan) == "0.850"
    assert format_interval(math.nan) == "—"


def test_minimal_report_says_what_is_missing_and_how_to_turn_it_on(tmp_path: Path) -> None:
    path = write_html(RunReport(title="bare", command="python train.py"), tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    parsed = _parse(text)
    assert all(parsed.ids.get(key) == "h2" for key in SECTIONS)
    assert text.count("not computed") >= 6
    for key in ("calibration", "threshold", "subgroups", "patients"):
        assert HINTS[key] in text, key
    assert "<pre><code>python train.py</code></pre>" in text
    items = checklist(RunReport(title="bare", command="python train.py"))
    assert [i.item for i in items if i.available] == ["Code and command to reproduce the run"]
    assert text.count("not available") == len(items) - 1
    assert "<img" not in text and "script" not in parsed.tags


def test_intervals_hint_when_bootstrap_is_off(tmp_path: Path) -> None:
    metrics = pd.DataFrame({"metric": ["auroc"], "value": [0.9], "ci_low": [np.nan]})
    metrics["ci_high"] = np.nan
    report = RunReport(title="t", command="c", metrics=metrics)
    text = write_html(report, tmp_path / "r.html").read_text(encoding="utf-8")
    assert HINTS["intervals"] in text and "0.900" in text
    assert HINTS["intervals"] in markdown_summary(report)


def test_failed_leakage_check_and_missing_figure(tmp_path: Path) -> None:
    splits = pd.DataFrame({"split": ["train", "test"], "samples": [8, 2], "groups": [4, 1]})
    data = DataSection(splits, "patient_id", leakage=[f"patient {EVIL} in train and test"])
    report = RunReport("t", "c", data=data, figures={"roc_curves": tmp_path / "gone.png"})
    text = write_html(report, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Leakage check failed" in text and "passed" not in text
    assert "patient &lt;script&gt;alert(1)&lt;/script&gt; in train and test" in text
    assert "ROC curves: file not found (gone.png)" in text and "<img" not in text
    assert "script" not in _parse(text).tags


def test_markdown_summary(figures: dict[str, Path]) -> None:
    report = _full_report(figures)
    text = markdown_summary(report)
    lines = text.splitlines()
    assert len(lines) <= 40
    assert "- test/auroc: 0.912 [0.884, 0.937]" in lines
    assert "- test/f1: 0.800" in lines
    assert "**Metrics** (intervals: 1000 resamples of patients, 95 %)" in lines
    calibration = "- **Calibration**: ECE 0.0812, Brier 0.1234 → after: ECE 0.0301, Brier —"
    assert calibration + " (T = 1.7000)" in lines
    assert "- **Threshold**: youden on val: benign 0.4100, &lt;script&gt;" in text
    data = "- **Data**: train 120 · val 30 · test 30 samples; leakage check passed"
    assert data + " (no patient in two splits); identical images across splits: 1" in lines
    assert "<script>" not in text  # user text is escaped for the MLflow UI
    start = lines.index("```bash")
    assert lines[start + 1] == COMMAND and lines[start + 2] == "```"
    report.data.leakage = ["patient P7 in train and test", "patient P9 in val and test"]
    failed = "leakage check FAILED: patient P7 in train and test (and 1 more)"
    assert failed in markdown_summary(report)


def test_checklist_of_a_full_report(figures: dict[str, Path]) -> None:
    report = _full_report(figures)
    items = checklist(report)
    assert all(i.available for i in items), [i.item for i in items if not i.available]
    assert all(i.section in SECTIONS for i in items)
    level = next(i for i in items if i.claim == "21")
    assert "patient_id" in level.detail and "passed" in level.detail
    sizes = next(i for i in items if i.claim == "20")
    assert sizes.detail == "train 120 (67%), val 30 (17%), test 30 (17%)"
    details = {i.claim: i.detail for i in items}
    assert details["24"] == "pretrained: imagenet"
    assert details["26"] == "best epoch: 9, monitored metric: val/auroc"
    assert details["30"] == "age_band, sex"
    report.data.group_column = None
    level = next(i for i in checklist(report) if i.claim == "21")
    assert level.available and level.detail.startswith("image level")


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(INSTALL + f"No Chromium at {path} (set CHROMIUM to its path).")
    return path


def test_report_renders_in_a_headless_browser(tmp_path: Path, figures: dict[str, Path]) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(INSTALL + "Playwright is not installed.")
    chromium = _chromium()
    report = _full_report(figures)
    path = write_html(report, tmp_path / "report.html")
    url = path.resolve().as_uri()
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            requests: list[str] = []
            dialogs: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="load")
            for key, heading in SECTIONS.items():
                locator = page.locator(f"h2#{key}")
                assert locator.count() == 1, key
                assert locator.is_visible(), key
                assert locator.inner_text() == heading
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])"
            )
            assert len(images) == 5
            assert all(complete and width > 0 for _, complete, width in images), images
            body = page.inner_text("body")
            assert "0.912 [0.884, 0.937]" in body
            assert "Leakage check passed: no patient in two splits" in body
            assert EVIL in body  # shown as text ...
            assert page.locator("script").count() == 0  # ... never run
            assert not dialogs and not errors
            assert [u for u in requests if not u.startswith("data:")] == [url]
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width == 1200 and image.height > 800
        assert len(set(image.convert("L").getdata())) > 16  # not a blank page
