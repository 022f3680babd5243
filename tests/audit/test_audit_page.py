"""audit.html: one self-contained file (every <img> a data: URI that decodes as an image, no
http(s) reference, no script), its CSVs beside it, written atomically; and the review order
for the labelling page."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from audit_synthetic import single_blas_thread, write_duplicate_set
from PIL import Image

from medclf.audit import ood
from medclf.audit.duplicates import near_duplicates
from medclf.audit.images import scan_images
from medclf.audit.labels import label_issues
from medclf.audit.overview import data_overview
from medclf.audit.page import write_audit
from medclf.audit.review import review_order

one_blas_thread = pytest.fixture(autouse=True, scope="module")(single_blas_thread)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if "id" in attrs:
            self.ids.append(attrs["id"])


@pytest.fixture(scope="module")
def audit_parts(tmp_path_factory):
    """30 generated images and 8 copies of them, with every part of the audit computed."""
    part = write_duplicate_set(tmp_path_factory.mktemp("page_images"), 30, 2).frame
    scan = scan_images(part["path"])
    hashes = scan.hashes
    out = tmp_path_factory.mktemp("audit_page")
    overview = data_overview(part, scan, ["a", "b", "c"], out / "figures", per_class=2)
    pairs = near_duplicates(part, hashes)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], len(part))
    probs[np.arange(len(part)), part["label"]] += 4
    probs[[1, 4, 8]] = np.roll(probs[[1, 4, 8]], 1, axis=1)  # confidently the next class
    probs /= probs.sum(axis=1, keepdims=True)
    issues = label_issues(part["label"].to_numpy(), probs, samples=part["sample"])
    state = ood.fit(rng.normal(size=(100, 3)), method="energy")
    summary = ood.batch_summary(state, np.full(10, 1e9))
    return part, overview, pairs, issues, summary


def test_the_page_is_self_contained(audit_parts, tmp_path) -> None:
    frame, overview, pairs, issues, summary = audit_parts
    assert len(pairs) > 0 and issues["flagged"].any()
    page = write_audit(
        tmp_path,
        overview=overview,
        duplicates=pairs,
        label_issues=issues,
        ood=summary,
        frame=frame,
    )
    text = page.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    assert {"overview", "duplicates", "labels", "ood"} <= set(parser.ids)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "http://" not in text and "https://" not in text
    thumbnails = 2 * len(pairs) + int(issues["flagged"].sum())
    assert len(parser.images) == len(overview.figures) + thumbnails
    for src in parser.images:
        head, _, data = src.partition(",")
        assert head in ("data:image/png;base64", "data:image/jpeg;base64")
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.verify()
            assert image.format in ("PNG", "JPEG")
    assert summary["warning"] in text.replace("&#x27;", "'")
    for name in ("duplicates.csv", "label_issues.csv", "overview.csv"):
        assert (tmp_path / name).is_file()
    assert len(pd.read_csv(tmp_path / "duplicates.csv")) == len(pairs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.html",
        "duplicates.csv",
        "label_issues.csv",
        "overview.csv",
    ]


def test_a_failed_write_leaves_the_last_page_whole(audit_parts, tmp_path, monkeypatch) -> None:
    frame, overview, *_ = audit_parts
    page = write_audit(tmp_path, overview=overview)
    before = page.read_bytes()
    from medclf.audit import page as page_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(page_module, "render_audit", broken)
    with pytest.raises(OSError):
        write_audit(tmp_path, overview=overview)
    assert page.read_bytes() == before
    assert "Not computed" in before.decode()  # the sections without data say so


def test_review_order_puts_the_suspects_first() -> None:
    samples = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]
    issues = pd.DataFrame(
        {"sample": ["s5", "s2", "s0", "s1"], "flagged": [True, True, False, False]}
    )
    pairs = pd.DataFrame(
        {
            "a": ["s6", "s3", "s2"],
            "b": ["s4", "s1", "s9"],
            "severity": ["low", "high", "high"],
            "similarity": [0.99, 0.9, 0.95],
        }
    )
    assert review_order(samples, issues, pairs) == ["s5", "s2", "s3", "s1", "s6", "s4", "s0"]
    assert review_order(samples) == samples
    assert review_order(samples, duplicates=pairs.iloc[:0]) == samples
