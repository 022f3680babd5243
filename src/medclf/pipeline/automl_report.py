"""The AutoML's one report, ``automl.html`` (in the run report's style, self-contained): the
data and what was picked from it, the search's leaderboard, the ensemble against its members
on the test split with paired tests, the budget spent step by step, and the command that
reproduces each step. Also ``leaderboard.csv``; both are logged into the ensemble's run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from medclf.tracking import names

SECTIONS = {
    "data": "Data and choices",
    "leaderboard": "Leaderboard (search trials)",
    "ensemble": "Ensemble against its members (test split)",
    "budget": "Budget",
    "reproduce": "Reproduce each step",
}
HEADLINE = ("accuracy", "f1", "auroc")


def leaderboard(automl) -> pd.DataFrame:
    """One row per trial of the search, best first: number, state, value, seconds, the
    searched values and its MLflow run."""
    from medclf.tracking.sweeps import trial_run_id

    study = automl._study()
    if study is None:
        return pd.DataFrame(columns=["trial", "state", "value"])
    uri, experiment = automl._tracking()
    members = {m["trial"] for m in automl.state.data.get("members") or []}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "ensemble member": "yes" if trial.number in members else "",
                "seconds": seconds,
                **{k: str(v) for k, v in trial.params.items()},
                "mlflow run": trial_run_id(uri, experiment, str(automl.search_dir), trial.number),
            }
        )
    frame = pd.DataFrame(rows)
    ascending = study.direction.name != "MAXIMIZE"
    return frame.sort_values("value", ascending=ascending, na_position="last")


def _versus(ensemble: dict) -> pd.DataFrame | None:
    """Each member against the ensemble on the headline metrics (class "all")."""
    path = Path(ensemble["report"]).parent / names.TEST_DIR / names.ENSEMBLE_COMPARISON_FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    table = table[(table["class"].astype(str) == "all") & table["metric"].isin(HEADLINE)]
    return pd.DataFrame(
        {
            "member": table["model_b"],
            "metric": table["metric"],
            "ensemble": table["value_a"],
            "member value": table["value_b"],
            "member − ensemble [95% CI]": [
                f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                for d, lo, hi in zip(
                    table["difference"], table["ci_low"], table["ci_high"], strict=True
                )
            ],
            "test": table["test"],
            "p (Holm)": table["p_holm"],
        }
    )


def write_report(automl, plan: dict, ensemble: dict) -> Path:
    """Write ``automl.html`` and ``leaderboard.csv`` into the AutoML's folder; log them into
    the ensemble's run."""
    from medclf.evaluation.report_page import (
        escape,
        format_interval,
        html_figure,
        html_page,
        html_table,
    )
    from medclf.files import write_text
    from medclf.pipeline.automl_state import quote
    from medclf.tracking.ensembles import attach_file

    folder = automl.folder
    board = leaderboard(automl)
    board_path = folder / names.LEADERBOARD_FILE
    board.to_csv(board_path, index=False)
    summary = plan["summary"]
    data = pd.DataFrame(
        {
            "property": [
                "source",
                "samples",
                "splits",
                "classes",
                "task",
                "dimensions",
                "channels",
                "groups",
                "median image size",
                "bit depth",
            ],
            "value": [
                summary["source"],
                summary["samples"],
                summary["splits"],
                summary["classes"],
                summary["task"],
                f"{summary['spatial_dims']}D",
                summary["channels"],
                summary["groups"] or "none",
                summary["size"],
                summary["bit_depth"],
            ],
        }
    ).astype(str)
    choices = pd.DataFrame(plan["choices"]).rename(
        columns={"applied": "applied (not set on the command line)"}
    )
    picked = (
        f"<p>Backbones searched: <b>{escape(', '.join(plan['backbones']))}</b>.</p>"
        + html_table(data, numeric=False)
        + "<h3>Picked from the data</h3>"
        + (html_table(choices.astype(str), numeric=False) if not choices.empty else "")
    )
    versus = _versus(ensemble)
    got = ensemble.get("metrics", {})
    shown = [m for m in HEADLINE if f"test/{m}" in got]
    metrics = pd.DataFrame(
        {
            "metric": shown,
            "ensemble on the test split [95% CI]": [
                format_interval(
                    got[f"test/{m}"], got.get(f"test/{m}_ci_low"), got.get(f"test/{m}_ci_high")
                )
                for m in shown
            ],
            "cross-validated on its held-out rows": [
                got.get(f"val/{m}", float("nan")) for m in shown
            ],
        }
    )
    figure = Path(ensemble["report"]).parent / names.TEST_DIR / names.figure_file("comparison")
    stacked = (
        f"<p>Stacked ensemble ({escape(automl.state.data.get('folds'))}-fold members, "
        f"metalearner fitted on their out-of-fold predictions): MLflow run "
        f"<code>{escape(ensemble.get('run_id'))}</code>, full report "
        f"<code>{escape(ensemble['report'])}</code>, artifact <code>{escape(ensemble['folder'])}"
        "</code>.</p>"
        + html_table(metrics)
        + ("<h3>Paired tests</h3>" + html_table(versus) if versus is not None else "")
        + (html_figure(figure, "comparison") if figure.is_file() else "")
    )
    steps = pd.DataFrame(automl.state.data["steps"])
    spent = automl.state.spent()
    budget = (
        f"<p>Budget {automl.total:.0f} s (wall time, every session of this command); spent "
        f"{spent:.0f} s ({100 * spent / automl.total:.0f} %) in "
        f"{automl.state.data['sessions']} session(s).</p>"
        + (html_table(steps[["step", "seconds", "status"]]) if not steps.empty else "")
    )
    commands = [
        ("this AutoML (run it again to continue it)", "medclf-automl " + quote(automl.argv))
    ]
    if automl.state.data.get("search_command"):
        commands.append(("the search (the same study)", automl.state.data["search_command"]))
    for member in automl.state.data.get("members") or []:
        if member.get("command"):
            commands.append((f"member: trial {member['trial']}", member["command"]))
    commands.append(("the stacked ensemble", ensemble["command"]))
    reproduce = "".join(
        f"<h3>{escape(title)}</h3><pre><code>{escape(command)}</code></pre>"
        for title, command in commands
    )
    sections = {
        "data": (SECTIONS["data"], picked),
        "leaderboard": (SECTIONS["leaderboard"], html_table(board) if not board.empty else ""),
        "ensemble": (SECTIONS["ensemble"], stacked),
        "budget": (SECTIONS["budget"], budget),
        "reproduce": (SECTIONS["reproduce"], reproduce),
    }
    title = f"medclf AutoML {folder.name}"
    meta = escape(datetime.now().strftime("%Y-%m-%d %H:%M"))
    page = write_text(folder / names.AUTOML_REPORT, html_page(title, meta, sections))
    if ensemble.get("run_id"):
        uri, _ = automl._tracking()
        for path in (page, board_path):
            attach_file(uri, ensemble["run_id"], path)
    automl.state.data["report"] = str(page)
    return page
