"""Reference pages generated from the code when the site is built: the console commands
(pyproject's [project.scripts] and each one's ``--help``), what a run records in MLflow
(medclf.tracking.names), the error messages (every ConfigError / DataError raised in
src/medclf, found by an AST scan) and the Python API pages (mkdocstrings directives for
every module of a package)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import tomllib
from config_reference import cell

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "medclf"
HELP_SCRIPT = Path(__file__).resolve().parent / "command_help.py"
# a check's message begins with the key it checks: "datamodule.batch_size=0 must be ..."
LEADING_KEY = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+|[a-z_]+_[a-z_]+)(?:=|:| )")
ERRORS = ("ConfigError", "DataError", "MedclfError", "NonFiniteLossError")
AREAS = {
    "data": "Data files, folders and tables",
    "pipeline": "Runs, resuming and checks",
    "models": "Models, checkpoints and registries",
    "inference": "Prediction and export",
    "evaluation": "Reports and statistics",
    "labelling": "The labelling page",
    "audit": "The data audit",
    "tracking": "MLflow",
    "search": "Searches",
}


def scripts() -> dict[str, str]:
    """pyproject's console scripts: command → ``module:function``."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def commands_markdown() -> str:
    """Each console command with what ``--help`` prints (run in one helper process, so that
    the commands' start-up code never runs inside mkdocs)."""
    env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, str(HELP_SCRIPT), json.dumps(scripts())],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"command_help.py failed:\n{done.stderr[-3000:]}")
    helps = json.loads(done.stdout.strip().splitlines()[-1])
    lines = []
    for name, target in scripts().items():
        text = helps[name].rstrip()
        lines += [f"## `{name}`", "", f"{cell(_description(text))} Entry point `{target}`.", ""]
        lines += [f'??? example "`{name} --help`"', "", "    ```text"]
        lines += [f"    {line}".rstrip() for line in text.splitlines()]
        lines += ["    ```", ""]
    return "\n".join(lines)


def _description(text: str) -> str:
    """The first paragraph of prose of a --help: after argparse's usage, or a Hydra app's
    header line."""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if paragraph and not paragraph.startswith("usage:"):
            return " ".join(paragraph.split())
    return ""


def _sections(source: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """names.py's constants by heading: a ``# --- section ---`` line, or the comment lines
    that open a paragraph of constants; each constant with its end-of-line comment."""
    sections: list[tuple[str, list]] = []
    lines = source.splitlines()
    section, comment_lines, fresh = "", [], True
    for line in lines:
        stripped = line.strip()
        found = re.match(r"^# --- (.+?) -+$", stripped)
        if found:
            section, comment_lines, fresh = found[1], [], True
        elif not stripped:
            comment_lines, fresh = [], True
        elif stripped.startswith("#"):
            comment_lines.append(stripped[1:].strip())
        else:
            match = re.match(r'^([A-Z_]+) = "([^"]*)"(?:\s+# (.*))?$', stripped)
            if match is None:
                comment_lines, fresh = [], False
                continue
            if fresh:
                heading = " ".join(comment_lines)
                title = f"{section}: {heading}" if heading else section
                sections.append((title, []))
            elif comment_lines and sections:
                sections[-1][1].append(("", "", " ".join(comment_lines)))
            sections[-1][1].append((match[1], match[2], match[3] or ""))
            comment_lines, fresh = [], False
    return [(title, [r for r in rows if r[0]]) for title, rows in sections]


def mlflow_markdown() -> str:
    """Every tag, param prefix, artifact and figure name of medclf.tracking.names."""
    source = (SRC / "tracking" / "names.py").read_text()
    lines = []
    for title, rows in _sections(source):
        lines += [
            f"### {title[0].upper() + title[1:]}",
            "",
            "| name | constant | what it is |",
            "| --- | --- | --- |",
        ]
        lines += [f"| `{value}` | `{name}` | {cell(comment)} |" for name, value, comment in rows]
        lines.append("")
    from medclf.tracking.names import FIGURES

    lines += ["### Figures", "", "| file | caption |", "| --- | --- |"]
    lines += [f"| `{stem}.png` | {cell(caption)} |" for stem, caption in FIGURES.items()]
    return "\n".join(lines) + "\n"


def _message(node: ast.expr) -> str:
    """The text of a message expression, each value it interpolates as ``{expression}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                text += str(part.value)
            else:
                text += "{" + ast.unparse(part.value) + "}"
        return text
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _message(node.left) + _message(node.right)
    return "{" + ast.unparse(node) + "}"


def _problem_lists(function: ast.AST) -> set[str]:
    """Names bound to a ``Problems()`` in a function (their ``.add`` calls are messages)."""
    names = set()
    for node in ast.walk(function):
        call = node.value if isinstance(node, ast.Assign) else None
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Problems":
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def error_sites() -> list[tuple[str, str, str, int]]:
    """(kind, message, module, line) of every user error medclf raises."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        module = str(path.relative_to(SRC.parent)).removesuffix(".py").replace("/", ".")
        lists = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                lists |= _problem_lists(node)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            kind = getattr(node.func, "id", "")
            if kind in ERRORS:
                found.append((kind, _message(node.args[0]), module, node.lineno))
            elif (
                isinstance(node.func, ast.Attribute)
                and node.func.attr == "add"
                and getattr(node.func.value, "id", "") in lists
            ):
                kind = ast.unparse(node.args[1]) if len(node.args) > 1 else "DataError"
                found.append((kind, _message(node.args[0]), module, node.lineno))
    return [f for f in found if f[1].strip("{}") and not f[1].startswith("{exc")]


def errors_markdown() -> str:
    """The messages grouped by the config key they name first, then by package."""
    by_key: dict[str, list] = defaultdict(list)
    by_area: dict[str, list] = defaultdict(list)
    for kind, message, module, line in error_sites():
        match = LEADING_KEY.match(message)
        if kind == "ConfigError" and match and "." in match.group(1):
            by_key[match.group(1)].append((kind, message, module, line))
        else:
            by_area[module.split(".")[1]].append((kind, message, module, line))
    lines = ["## By config key", ""]
    for key in sorted(by_key):
        lines += [f"### `{key}`", ""]
        lines += [_item(*site) for site in by_key[key]]
        lines.append("")
    lines += ["## By area", ""]
    for area in sorted(by_area, key=lambda a: list(AREAS).index(a) if a in AREAS else 99):
        lines += [f"### {AREAS.get(area, area)} (`medclf.{area}`)", ""]
        lines += [_item(*site) for site in by_area[area]]
        lines.append("")
    return "\n".join(lines)


def _item(kind: str, message: str, module: str, line: int) -> str:
    text = " ".join(message.split()).replace("`", "'")
    return f"- `{text}`  \n  <small>{kind}, `{module}` line {line}</small>"


def api_markdown(package: str) -> str:
    """mkdocstrings directives for every public module of ``package`` (medclf.data ...)."""
    folder = SRC.parent / package.replace(".", "/")
    lines = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        name = package if path.name == "__init__.py" else f"{package}.{path.stem}"
        if path.name == "__init__.py" and not ast.get_docstring(ast.parse(path.read_text())):
            continue
        lines += [f"::: {name}", ""]
    return "\n".join(lines)
