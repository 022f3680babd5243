"""``audit.html``: the data audit as one self-contained page (CSS inline, every image a
base64 ``data:`` URI, no script, a Content-Security-Policy that forbids any request), with
its tables beside it as ``overview.csv``, ``duplicates.csv`` and ``label_issues.csv``.
Every file is written to a temporary name and renamed, so none is ever left half-written.

Sections: overview, near-duplicates (each pair's thumbnails side by side with its
similarity and severity), likely label errors (thumbnail, given and suggested label) and,
when given, the out-of-distribution summary. A section without data says so.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclf.audit.images import grey_uint8, load_image
from medclf.audit.overview import Overview
from medclf.files import write_text
from medclf.tracking.names import AUDIT_PAGE, DUPLICATES_FILE, LABEL_ISSUES_FILE, OVERVIEW_FILE

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
THUMBNAIL = 128
LIMIT = 50
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;
max-width:1100px;margin:0 auto;padding:1.5rem}
h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}nav a{margin-right:.8rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #d0d7de;
padding:.25rem .6rem;text-align:left;vertical-align:middle}th{background:#f6f8fa}
.high{color:#cf222e;font-weight:600}.medium{color:#9a6700}.low{color:#57606a}.na{color:#9a6700}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
img{border:1px solid #d0d7de;image-rendering:pixelated}figure img{max-width:100%;height:auto}
"""
SECTIONS = {
    "overview": "Overview",
    "duplicates": "Near-duplicates",
    "labels": "Likely label errors",
    "ood": "Out of distribution",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _png_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_png(image: np.ndarray, size: int = THUMBNAIL) -> bytes:
    """PNG bytes of an image (H, W, C) or volume (middle slice) in [0, 1], at most ``size``
    px a side: colour as RGB, anything else as its greyscale view."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 3:
        pil = Image.fromarray(np.clip(np.rint(array * 255), 0, 255).astype(np.uint8), "RGB")
    else:
        pil = Image.fromarray(grey_uint8(array))
    pil.thumbnail((size, size))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _thumb(frame: pd.DataFrame, row: int, arrays, dicom_window) -> str:
    """An <img> of the frame's row ``row``, or a note where it cannot be read."""
    path = frame["path"].iloc[int(row)]
    name = frame["sample"].iloc[int(row)] if "sample" in frame.columns else path
    try:
        data = thumbnail_png(load_image(path, arrays, dicom_window))
    except Exception as exc:  # the page still shows the table row
        return f'<span class="na">{_e(name)}: not readable ({_e(exc)})</span>'
    return f'<img alt="{_e(name)}" title="{_e(name)}" src="{_png_uri(data)}">'


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else f"{value:.4g}"
    return _e(value)


def _missing(what: str) -> str:
    return f'<p class="na">{_e(what)}</p>'


def _overview_section(overview: Overview | None) -> str:
    if overview is None:
        return _missing("Not computed.")
    figures = "".join(
        f'<figure><img alt="{_e(name)}" src="{_png_uri(Path(path).read_bytes())}">'
        f"<figcaption>{_e(name.replace('_', ' '))}</figcaption></figure>"
        for name, path in overview.figures.items()
        if Path(path).is_file()
    )
    return (
        "<h3>Images per class and split</h3>"
        + _table(overview.counts)
        + "<h3>Formats</h3>"
        + _table(overview.formats)
        + figures
    )


def _duplicates_section(pairs, frame, arrays, dicom_window, limit: int) -> str:
    if pairs is None:
        return _missing("Not computed.")
    if not len(pairs):
        return "<p>No near-duplicate pairs found.</p>"
    counts = pairs["severity"].value_counts()
    summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("high", "medium", "low"))
    rows = []
    for pair in pairs.head(limit).itertuples(index=False):
        images = (
            _thumb(frame, pair.index_a, arrays, dicom_window)
            + " "
            + _thumb(frame, pair.index_b, arrays, dicom_window)
            if frame is not None
            else ""
        )
        rows.append(
            f"<tr><td>{images}</td><td>{_e(pair.a)} ({_e(pair.split_a)})<br>{_e(pair.b)} "
            f"({_e(pair.split_b)})</td><td>{_cell(pair.similarity)}</td>"
            f"<td>{_e(pair.hamming)}</td><td>{_cell(pair.cosine)}</td>"
            f'<td class="{_e(pair.severity)}">{_e(pair.severity)}</td></tr>'
        )
    more = f"<p>{len(pairs) - limit} more in duplicates.csv.</p>" if len(pairs) > limit else ""
    return (
        f"<p>{len(pairs)} pair(s): {summary}. High: the pair spans two splits.</p>"
        "<table><thead><tr><th>images</th><th>samples (split)</th><th>similarity</th>"
        "<th>hash bits apart</th><th>cosine</th><th>severity</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + more
    )


def _labels_section(issues, frame, arrays, dicom_window, limit: int) -> str:
    if issues is None:
        return _missing("Not computed (needs out-of-fold probabilities: a cross-validated run).")
    flagged = issues[issues["flagged"].astype(bool)]
    if not len(flagged):
        return f"<p>No likely label errors among {len(issues)} samples.</p>"
    rows = []
    for row in flagged.head(limit).itertuples(index=False):
        image = _thumb(frame, row.index, arrays, dicom_window) if frame is not None else ""
        rows.append(
            f"<tr><td>{image}</td><td>{_e(row.sample)}</td><td>{_e(row.given_name)}</td>"
            f"<td>{_e(row.suggested_name)}</td><td>{_cell(row.quality)}</td></tr>"
        )
    more = (
        f"<p>{len(flagged) - limit} more in label_issues.csv.</p>" if len(flagged) > limit else ""
    )
    return (
        f"<p>{len(flagged)} of {len(issues)} samples flagged, least likely label first.</p>"
        "<table><thead><tr><th>image</th><th>sample</th><th>given</th><th>suggested</th>"
        "<th>label quality</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + more
    )


def _ood_section(ood: Mapping[str, Any] | None) -> str:
    if ood is None:
        return _missing("Not given.")
    items = {
        k: v for k, v in ood.items() if k != "warning" and not isinstance(v, list | tuple | dict)
    }
    table = pd.DataFrame({"": list(items), "value": list(items.values())})
    warning = f'<p class="high">{_e(ood["warning"])}</p>' if ood.get("warning") else ""
    return warning + _table(table)


def render_audit(
    *,
    overview: Overview | None = None,
    duplicates: pd.DataFrame | None = None,
    label_issues: pd.DataFrame | None = None,
    ood: Mapping[str, Any] | None = None,
    frame: pd.DataFrame | None = None,
    arrays: np.ndarray | None = None,
    dicom_window: Any = None,
    title: str = "Data audit",
    limit: int = LIMIT,
) -> str:
    """The page's HTML (see the module); ``frame`` locates the images for the thumbnails."""
    body = {
        "overview": _overview_section(overview),
        "duplicates": _duplicates_section(duplicates, frame, arrays, dicom_window, limit),
        "labels": _labels_section(label_issues, frame, arrays, dicom_window, limit),
        "ood": _ood_section(ood),
    }
    nav = "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in SECTIONS.items())
    sections = "".join(
        f'<section><h2 id="{k}">{_e(SECTIONS[k])}</h2>{html_}</section>'
        for k, html_ in body.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><nav>{nav}</nav></header><main>{sections}</main>"
        "</body></html>\n"
    )


def write_audit(
    out_dir: str | Path,
    *,
    overview: Overview | None = None,
    duplicates: pd.DataFrame | None = None,
    label_issues: pd.DataFrame | None = None,
    ood: Mapping[str, Any] | None = None,
    frame: pd.DataFrame | None = None,
    arrays: np.ndarray | None = None,
    dicom_window: Any = None,
    title: str = "Data audit",
    limit: int = LIMIT,
) -> Path:
    """Write ``audit.html`` and the CSVs of what was given into ``out_dir``; return the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {OVERVIEW_FILE: overview.images if overview is not None else None}
    tables |= {DUPLICATES_FILE: duplicates, LABEL_ISSUES_FILE: label_issues}
    for name, table in tables.items():
        if table is not None:
            write_text(out / name, table.to_csv(index=False))
    page = out / AUDIT_PAGE
    write_text(
        page,
        render_audit(
            overview=overview,
            duplicates=duplicates,
            label_issues=label_issues,
            ood=ood,
            frame=frame,
            arrays=arrays,
            dicom_window=dicom_window,
            title=title,
            limit=limit,
        ),
    )
    return page
