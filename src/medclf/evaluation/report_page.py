"""The run report as a page: ``write_html`` writes one self-contained HTML file (CSS inline,
figures as base64 ``data:`` URIs, no scripts, and a Content-Security-Policy that forbids any
request), ``markdown_summary`` its short markdown note (the MLflow run's description). Every
section is present in every report; one without data says "not computed" and which override
turns it on. The data comes from medclf.evaluation.report_data, the checklist from
medclf.evaluation.claim, figure captions from medclf.tracking.names.FIGURES."""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medclf.evaluation.claim import checklist
from medclf.evaluation.report_data import (
    HINTS,
    SECTIONS,
    DataSection,
    RunReport,
    finite,
    has_intervals,
)
from medclf.files import write_text
from medclf.tracking.names import FIGURES

DIGITS = 4  # numbers in tables
INTERVAL_DIGITS = 3  # a value with its interval: 0.912 [0.884, 0.937]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;
max-width:1100px;margin:0 auto;padding:1.5rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
nav a{margin-right:.8rem}.meta{color:#57606a}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #d0d7de;
padding:.25rem .6rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;white-space:pre-wrap}
.ok{color:#1a7f37}.bad{color:#cf222e}.na{color:#9a6700}
.hint code,code{background:#f6f8fa;padding:0 .25rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de}figcaption{color:#57606a}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: object, digits: int = DIGITS) -> str:
    """An integer as is, a real with ``digits`` decimals, a missing value as "—", text as is."""
    if value is None or value is pd.NA:
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}" if math.isfinite(float(value)) else "—"
    return str(value)


def _is_number(value: object) -> bool:
    return value is None or value is pd.NA or isinstance(value, numbers.Real)


def format_interval(
    value: object, low: object = None, high: object = None, digits: int = INTERVAL_DIGITS
) -> str:
    """``0.912 [0.884, 0.937]``; the value alone without a finite interval, "—" without one."""
    if not finite(value):
        return "—"
    text = f"{float(value):.{digits}f}"  # type: ignore[arg-type]
    if finite(low) and finite(high):
        text += f" [{float(low):.{digits}f}, {float(high):.{digits}f}]"  # type: ignore[arg-type]
    return text


def _not_computed(why: str = "", hint: str | None = None) -> str:
    text = "not computed" + (f": {_e(why)}" if why else "")
    if hint:
        text += f"; turn it on with <code>{_e(hint)}</code>"
    return f'<p class="na hint">{text}.</p>'


def _table(frame: pd.DataFrame, numeric: bool = True) -> str:
    """A DataFrame (without its index) as an escaped HTML table, numbers right-aligned."""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            css = ' class="num"' if numeric and _is_number(value) else ""
            cells.append(f"<td{css}>{_e(_number(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _pairs(mapping: dict[str, Any], header: tuple[str, str] | None = None) -> str:
    """A key → value mapping as a two-column escaped table."""
    head = ""
    if header:
        head = f"<thead><tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr></thead>"
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_number(v))}</td></tr>" for k, v in mapping.items()
    )
    return f"<table>{head}<tbody>{rows}</tbody></table>"


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns holding only whole numbers (counts with a NaN) as nullable integers."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            frame[column] = values.astype("Int64")
    return frame


def _interval_table(frame: pd.DataFrame, key: str = "metric") -> str:
    shown = pd.DataFrame(
        {
            key: frame[key].astype(str),
            "value [CI]": [
                format_interval(v, lo, hi)
                for v, lo, hi in zip(
                    frame["value"],
                    frame.get("ci_low", pd.Series([None] * len(frame))),
                    frame.get("ci_high", pd.Series([None] * len(frame))),
                    strict=True,
                )
            ],
        }
    )
    if "interval" in frame.columns:  # how each interval was made (a rule of proportions.py)
        shown["interval"] = frame["interval"].astype(str).to_numpy()
    return _table(shown)


def _figure(path: Path | str | None, name: str) -> str:
    """A figure inlined as a data: URI; a note where the file is missing."""
    caption = FIGURES.get(name, name.replace("_", " "))
    if path is None:
        return ""
    path = Path(path)
    if not path.is_file():
        return f'<p class="na">{_e(caption)}: file not found ({_e(path.name)}).</p>'
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure id="figure-{_e(name)}"><img alt="{_e(caption)}" '
        f'src="data:{mime};base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _leakage_line(data: DataSection) -> str:
    if not data.group_column:
        return (
            '<p class="na">Leakage check: not run, no group column (one patient may sit in '
            f"two splits); turn it on with <code>{_e(HINTS['leakage'])}</code>.</p>"
        )
    if not data.leakage:
        return (
            '<p class="ok">Leakage check passed: no patient in two splits '
            f"(grouped by <code>{_e(data.group_column)}</code>).</p>"
        )
    items = "".join(f"<li>{_e(m)}</li>" for m in data.leakage)
    return f'<p class="bad">Leakage check failed:</p><ul class="bad">{items}</ul>'


def _data_section(data: DataSection | None) -> str:
    if data is None:
        return _not_computed("the data set was not recorded for this run")
    parts = [f"<p>Source: {_e(data.source)}</p>"] if data.source else []
    if data.splits is not None and not data.splits.empty:
        parts.append(_table(_counts(data.splits)))
        if data.group_column:
            parts.append(f"<p>groups: distinct values of <code>{_e(data.group_column)}</code></p>")
    parts.append(_leakage_line(data))
    if data.duplicates:
        items = "".join(f"<li>{_e(m)}</li>" for m in data.duplicates)
        parts.append(f'<p class="bad">Identical images in two splits:</p><ul>{items}</ul>')
    else:
        parts.append('<p class="ok">No byte-identical images across splits.</p>')
    return "".join(parts)


def _model_section(report: RunReport) -> str:
    parts = []
    for name, mapping in (("Model", report.model), ("Training", report.training)):
        if mapping:
            parts.append(f"<h3>{name}</h3>{_pairs(mapping, ('setting', 'value'))}")
    return "".join(parts) or _not_computed("no model or training settings were recorded")


def _metrics_section(report: RunReport) -> str:
    if report.metrics is None or report.metrics.empty:
        return _not_computed("no test set was evaluated")
    parts = [_interval_table(report.metrics)]
    if has_intervals(report.metrics):
        if report.bootstrap:
            parts.append(f"<p>Intervals: bootstrap, {_e(report.bootstrap)}.</p>")
    else:
        parts.append(_not_computed("confidence intervals", HINTS["intervals"]))
    return "".join(parts)


def _calibration_section(report: RunReport) -> str:
    calibration = report.calibration
    figure = _figure(
        (calibration or {}).get("figure") or report.figures.get("reliability"), "reliability"
    )
    if not calibration:
        return _not_computed("", HINTS["calibration"]) + figure
    after = any(finite(calibration.get(k)) for k in ("ece_after", "brier_after"))
    rows = {"metric": ["ECE", "Brier score"], "before": [], **({"after": []} if after else {})}
    for key in ("ece", "brier"):
        rows["before"].append(_number(calibration.get(key)))
        if after:
            rows["after"].append(_number(calibration.get(f"{key}_after")))
    parts = [_table(pd.DataFrame(rows), numeric=False)]
    if finite(calibration.get("temperature")):
        parts.append(f"<p>Temperature scaling: T = {_number(calibration['temperature'])}.</p>")
    if "slope" in calibration:
        parts.append(
            f"<p>Calibration intercept {_number(calibration.get('intercept'))} and slope "
            f"{_number(calibration.get('slope'))} of the test probabilities (logistic "
            "recalibration, Van Calster et al. 2016; ideal 0 and 1: an intercept above 0 means "
            "risks underestimated, a slope below 1 predictions too extreme).</p>"
        )
    if not after:
        parts.append(_not_computed("recalibration", HINTS["calibration"]))
    return "".join(parts) + figure


def _threshold_section(report: RunReport) -> str:
    threshold = report.threshold
    if not threshold:
        return _not_computed("the default decision rule was used", HINTS["threshold"])
    rule = str(threshold.get("rule", ""))
    chosen_on = threshold.get("chosen_on")
    line = f"<p>Rule: <b>{_e(rule)}</b>"
    line += f", chosen on the {_e(chosen_on)} set.</p>" if chosen_on else ".</p>"
    parts = [line]
    values = threshold.get("values") or {}
    if values:
        parts.append(_pairs({k: _number(v) for k, v in values.items()}, ("label", "threshold")))
    if finite(rule):
        parts.append(
            f'<p class="na hint">A fixed threshold, not chosen on data; '
            f"<code>{_e(HINTS['threshold'])}</code> chooses one on the validation set.</p>"
        )
    return "".join(parts)


def _subgroup_table(frame: pd.DataFrame) -> str:
    keys = [c for c in ("column", "subgroup", "n") if c in frame.columns]
    ends = ("_ci_low", "_ci_high", "_interval")
    metrics = [c for c in frame.columns if c not in keys and not str(c).endswith(ends)]
    shown = frame[keys].copy()
    for metric in metrics:
        low, high = frame.get(f"{metric}_ci_low"), frame.get(f"{metric}_ci_high")
        method = frame.get(f"{metric}_interval")
        cells = []
        for i, v in enumerate(frame[metric]):
            cell = format_interval(
                v, None if low is None else low.iloc[i], None if high is None else high.iloc[i]
            )
            how = None if method is None else str(method.iloc[i])
            if how == "too small":
                cell += " (too small for a claim)"
            elif how not in (None, "bootstrap", "none", "nan"):
                cell += f" ({how})"
            cells.append(cell)
        shown[metric] = cells
    return _table(_counts(shown))


def _decision_section(report: RunReport) -> str:
    figure = _figure(report.figures.get("decision_curve"), "decision_curve")
    table = report.decision
    if table is None or table.empty:
        return _not_computed(
            "a softmax over several classes has no single treat decision", HINTS["decision"]
        )
    model = [c for c in table.columns if c not in ("threshold", "label", "treat_all", "treat_none")]
    rows = table[table["threshold"].round(2).isin([0.1, 0.2, 0.3, 0.5])]
    shown = rows[["label", "threshold", *model, "treat_all"]].rename(columns={model[0]: "model"})
    note = (
        "<p>Net benefit = TP/n − FP/n · p<sub>t</sub>/(1 − p<sub>t</sub>) of treating the "
        "cases the model calls positive at threshold probability p<sub>t</sub>, against "
        "treating everyone and no one (Vickers and Elkin 2006); the full curve is "
        "<code>test/decision_curve.csv</code>.</p>"
    )
    return note + _table(shown.reset_index(drop=True)) + figure


def _sets_section(report: RunReport) -> str:
    sets = report.sets
    if not sets:
        return _not_computed("no conformal prediction sets were fitted", HINTS["sets"])
    kind = "per class (Mondrian)" if sets.get("mondrian") else "pooled"
    note = (
        f"<p>Split-conformal sets ({_e(sets['score'])} scores, {kind} thresholds fitted on the "
        f"validation split) for error rate α = {_number(sets['alpha'])}: each set should hold "
        f"the true class for at least {_number(1 - float(sets['alpha']), 2)} of images. "
        "Abstain: the set is not exactly one class (multi-label: some label unsure); refer "
        "those cases.</p>"
    )
    return note + _table(sets["table"])


def _subgroups_section(report: RunReport) -> str:
    figure = _figure(report.figures.get("subgroups_forest"), "subgroups_forest")
    if report.subgroups is None or report.subgroups.empty:
        return _not_computed("", HINTS["subgroups"]) + figure
    return _subgroup_table(report.subgroups) + figure


def _patients_section(report: RunReport) -> str:
    if report.patients is None or report.patients.empty:
        return _not_computed("patient-level metrics", HINTS["patients"])
    return _interval_table(report.patients)


def _figures_section(report: RunReport) -> str:
    inline = {"reliability", "subgroups_forest", "decision_curve"}
    names = [n for n in FIGURES if n not in inline and n in report.figures]
    names += [n for n in report.figures if n not in FIGURES]
    parts = [_figure(report.figures[n], n) for n in names]
    return "".join(parts) or _not_computed("no figures were written")


def _reproduce_section(report: RunReport) -> str:
    parts = [f"<pre><code>{_e(report.command)}</code></pre>"]
    meta = {"run id": report.run_id, "created": report.created}
    meta = {k: v for k, v in meta.items() if v}
    if meta or report.environment:
        parts.append(_pairs({**meta, **report.environment}))
    else:
        parts.append('<p class="na">Environment: not recorded.</p>')
    return "".join(parts)


def _checklist_section(report: RunReport) -> str:
    rows = []
    for item in checklist(report):
        status = (
            '<span class="ok">✓</span>'
            if item.available
            else '<span class="na">not available</span>'
        )
        rows.append(
            f"<tr><td>{_e(item.claim)}</td><td>{_e(item.item)}</td><td>{status}</td>"
            f"<td>{_e(item.detail)}</td>"
            f'<td><a href="#{item.section}">{_e(SECTIONS[item.section])}</a></td></tr>'
        )
    head = "<th>CLAIM</th><th>item</th><th>status</th><th>detail</th><th>section</th>"
    note = (
        "<p>Items of CLAIM (Mongan et al. 2020, Checklist for Artificial Intelligence in "
        "Medical Imaging) that this tool can fill; the others (study design, ground truth, "
        "annotation, discussion) are the authors' to write.</p>"
    )
    return f"{note}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(report: RunReport) -> str:
    """The report as one HTML document (see ``write_html``)."""
    bodies = {
        "data": _data_section(report.data),
        "model": _model_section(report),
        "metrics": _metrics_section(report),
        "calibration": _calibration_section(report),
        "threshold": _threshold_section(report),
        "decision": _decision_section(report),
        "sets": _sets_section(report),
        "subgroups": _subgroups_section(report),
        "patients": _patients_section(report),
        "figures": _figures_section(report),
        "reproduce": _reproduce_section(report),
        "checklist": _checklist_section(report),
    }
    meta = [f"run {_e(report.run_id)}" if report.run_id else "", _e(report.created or "")]
    meta_line = " · ".join(m for m in meta if m)
    return html_page(
        report.title, meta_line, {k: (SECTIONS[k], body) for k, body in bodies.items()}
    )


def html_page(title: str, meta_line: str, sections: dict[str, tuple[str, str]]) -> str:
    """A self-contained page in the run report's style: ``sections`` maps an anchor id to
    (heading, HTML body), in page order; ``meta_line`` is already escaped."""
    nav = "".join(f'<a href="#{k}">{_e(heading)}</a>' for k, (heading, _) in sections.items())
    body = "".join(
        f'<section><h2 id="{k}">{_e(heading)}</h2>{part}</section>'
        for k, (heading, part) in sections.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        + (f'<p class="meta">{meta_line}</p>' if meta_line else "")
        + f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n"
    )


def write_html(report: RunReport, path: Path) -> Path:
    """Write the report as one self-contained HTML file (atomically) and return its path."""
    return write_text(path, render_html(report))


html_table = _table  # a DataFrame as an escaped table, numbers right-aligned
html_figure = _figure  # a PNG inlined as a data: URI, captioned from tracking.names.FIGURES
escape = _e
number = _number  # a number as the report shows it (4 decimals, — when missing)
