"""The configuration reference, generated from the packaged config (src/medclf/conf) when the
site is built: every group, option and key with its default and the comment above it in the
YAML, the backbone options from the registry, and the Optuna sweeper's keys from its
structured config. Nothing here is written by hand, so it cannot drift from the config."""

from __future__ import annotations

import ast
from pathlib import Path

from yaml_comments import Entry, dataclass_fields, python_comments, read_yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "src" / "medclf" / "conf"
SWEEPER = ROOT / "src" / "hydra_plugins" / "medclf_optuna_sweeper" / "config.py"
# files every option of a group includes (``/NAME@_here_``)
SHARED = {
    "datamodule": "datamodule_base",
    "augment": "augment_base",
    "callbacks": "callbacks_platform",
}
COMMANDS = {
    "eval": "medclf-eval",
    "predict": "medclf-predict",
    "export": "medclf-export",
    "label": "medclf-label",
    "ensemble": "medclf-ensemble",
    "automl": "medclf-automl",
}


def cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped; ``<``, ``>`` and ``[`` (a link) escaped
    outside code spans."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("[", "\\[")
    return "`".join(parts)


def code(value: str) -> str:
    value = value.replace("|", "\\|")
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def table(entries: list[Entry]) -> list[str]:
    """A key | default | meaning table (mapping keys show no default)."""
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]
    for entry in entries:
        default = "" if entry.default is None else code(entry.default)
        if entry.default == "???":
            default = "`???` (required)"
        rows.append(f"| {code(entry.path)} | {default} | {cell(entry.comment)} |")
    return rows


def _defaults_line(defaults: list[str], group: str) -> str:
    shown = [d for d in defaults if d not in ("_self_",) and not d.endswith("@_here_")]
    if not shown:
        return ""
    return "Its defaults list: " + ", ".join(code(d) for d in shown) + "."


def _option_section(path: Path, package: str, title: str) -> list[str]:
    doc = read_yaml(path, package)
    entries = doc.entries
    description = doc.description
    if not description and entries and entries[0].default is None and entries[0].comment:
        description, entries[0].comment = entries[0].comment, ""
    lines = [f"### {title}", "", f"File: `conf/{path.relative_to(CONF)}`.", ""]
    if description:
        lines += [cell(description).replace("\\|", "|"), ""]
    included = [d for d in doc.defaults if d.endswith("@_here_")]
    if included:
        names = ", ".join(code(d.split("@")[0].strip("/")) for d in included)
        lines += [f"Includes the shared keys of {names} (above).", ""]
    extra = _defaults_line(doc.defaults, package)
    if extra:
        lines += [extra, ""]
    if entries:
        lines += [*table(entries), ""]
    else:
        lines += ["(no keys of its own)", ""]
    return lines


def backbone_section() -> list[str]:
    """The backbone group: options from the registry, keys from medclf.config."""
    from medclf.models.registry import BACKBONES

    source = (ROOT / "src" / "medclf" / "config.py").read_text()
    tree = ast.parse(source)
    rows = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "BACKBONE_DEFAULTS"
        ):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                default = ast.literal_eval(value)
                shown = "null" if default is None else str(default).lower()
                rows.append(
                    Entry(f"backbone.{key.value}", shown, python_comments(source, key.lineno), 0)
                )
    rows.insert(
        0,
        Entry(
            "backbone.name",
            "the option's name",
            "The registry entry built (medclf.models.registry.BACKBONES).",
            0,
        ),
    )
    lines = [
        "## `backbone`",
        "",
        "Chosen with `backbone=NAME`; default `resnet18`. The options are not YAML files: every "
        "entry of the backbone registry (`medclf.models.registry.BACKBONES`) is one, with the "
        "keys below. A file `backbone/NAME.yaml` in your `--config-dir` adds one "
        "(`defaults: [resnet18]` to start from another).",
        "",
        *table(rows),
        "",
        "| option | network | smallest input (registry) | dims |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(BACKBONES):
        spec = BACKBONES[name]
        network = f"{spec.library} `{spec.model_id}`"
        lines.append(f"| `{name}` | {network} | {spec.min_size} | {spec.spatial_dims}D |")
    return [*lines, ""]


def group_order() -> list[str]:
    doc = read_yaml(CONF / "train.yaml", "")
    return [d.split(":")[0].strip() for d in doc.defaults if ":" in d]


def train_defaults() -> dict[str, str]:
    doc = read_yaml(CONF / "train.yaml", "")
    return {d.split(":")[0].strip(): d.split(":")[1].strip() for d in doc.defaults if ":" in d}


def groups_markdown() -> str:
    """Every group of training's config, then the top-level keys."""
    defaults = train_defaults()
    lines = ["## Top-level keys (`train.yaml`)", ""]
    top = read_yaml(CONF / "train.yaml", "")
    lines += [*table(top.entries), ""]
    for group in group_order():
        if group == "backbone":
            lines += backbone_section()
            continue
        folder = CONF / group
        if not folder.is_dir():
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        chosen = defaults.get(group, "null")
        lines += [
            f"## `{group}`",
            "",
            f"Chosen with `{group}=OPTION`; default `{chosen}`. Options: "
            + ", ".join(f"`{o}`" for o in options)
            + ".",
            "",
        ]
        if group in SHARED:
            shared = CONF / f"{SHARED[group]}.yaml"
            lines += _option_section(shared, group, f"Shared by every option (`{shared.name}`)")
        for option in options:
            lines += _option_section(folder / f"{option}.yaml", group, f"`{group}={option}`")
    return "\n".join(lines)


def hydra_markdown() -> str:
    """Hydra's own keys that medclf sets, the SLURM launcher and the Optuna sweeper."""
    lines = _option_section(
        CONF / "hydra" / "default.yaml", "hydra", "`hydra` (run directories, help)"
    )
    for path in sorted((CONF / "hydra").glob("*/*.yaml")):
        group = f"hydra/{path.parent.name}"
        lines += _option_section(path, f"hydra.{path.parent.name}", f"`{group}={path.stem}`")
    classes = dataclass_fields(SWEEPER)
    where = {
        "OptunaSweeperConf": (
            "hydra.sweeper",
            "`hydra/sweeper=medclf_optuna` (hparams_search=optuna)",
        ),
        "TPESamplerConfig": ("hydra.sweeper.sampler", "`hydra/sweeper/sampler=tpe` (default)"),
        "RandomSamplerConfig": ("hydra.sweeper.sampler", "`hydra/sweeper/sampler=random`"),
        "MedianPrunerConfig": ("hydra.sweeper.pruner", "`hydra/sweeper/pruner=median`"),
        "HyperbandPrunerConfig": ("hydra.sweeper.pruner", "`hydra/sweeper/pruner=hyperband`"),
        "NopPrunerConfig": ("hydra.sweeper.pruner", "`hydra/sweeper/pruner=none` (default)"),
    }
    for name, (prefix, title) in where.items():
        if name not in classes:
            continue
        doc, rows = classes[name]
        lines += [f"### {title}", "", f"`{SWEEPER.relative_to(ROOT)}`, `{name}`.", ""]
        if doc:
            lines += [cell(doc), ""]
        entries = [
            Entry(f"{prefix}.{field}", default.strip("'\""), comment, 0)
            for field, default, comment in rows
        ]
        lines += [*table(entries), ""]
    return "\n".join(lines)


def commands_markdown() -> str:
    """The configs of the other Hydra commands: their own keys (and the groups they use)."""
    lines = []
    for stem, command in COMMANDS.items():
        path = CONF / f"{stem}.yaml"
        if not path.exists():
            continue
        doc = read_yaml(path, "")
        entries = [e for e in doc.entries if not e.path.startswith("hydra")]
        groups = [d.split(":")[0].strip() for d in doc.defaults if ":" in d and "override" not in d]
        lines += [f"## `{command}` (`{stem}.yaml`)", ""]
        if doc.description:
            lines += [cell(doc.description), ""]
        if groups:
            lines += [
                "Groups of the training config it uses: "
                + ", ".join(f"`{g}`" for g in groups)
                + ".",
                "",
            ]
        lines += [*table(entries), ""]
    return "\n".join(lines)
