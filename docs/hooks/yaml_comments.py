"""Read the packaged Hydra config's YAML files with their comments: each key's dotted path,
its default (as written) and the comment above it. The files are plain block YAML, so a
line reader does (PyYAML drops comments; ruamel.yaml would be a new dependency)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_@][\w@./-]*|\"[^\"]+\"):(?: +(?P<value>.*))?$")
PACKAGE = re.compile(r"^# @package (?P<package>\S+)")


@dataclass
class Entry:
    """One key of a YAML file: ``path`` dotted from the file's package, ``default`` as
    written (``None`` for a mapping of further keys), ``comment`` the lines above it."""

    path: str
    default: str | None
    comment: str
    depth: int


@dataclass
class YamlDoc:
    """A config file: its description (the leading comment), its defaults list and keys."""

    description: str = ""
    defaults: list[str] = field(default_factory=list)
    package: str | None = None
    entries: list[Entry] = field(default_factory=list)


def _comment_text(lines: list[str]) -> list[str]:
    return [line.strip()[1:].removeprefix(" ") for line in lines]


def _split_comment(lines: list[str]) -> tuple[str, str]:
    """A comment block's earlier paragraphs (separated by a bare ``#``) and its last one."""
    paragraphs, current = [], []
    for text in _comment_text(lines):
        if text.strip():
            current.append(text)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    if not paragraphs:
        return "", ""
    last = " ".join(" ".join(paragraphs[-1]).split())
    earlier = "\n\n".join(" ".join(" ".join(p).split()) for p in paragraphs[:-1])
    return earlier, last


def _value_block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines of a key's block value (a list, a flow list over several lines, a literal
    block scalar) from ``start``: more indented, or list items at the key's indent."""
    taken = []
    i = start
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        width = len(line) - len(line.lstrip(" "))
        if stripped and width <= indent and not (width == indent and stripped.startswith("- ")):
            break
        taken.append(line)
        i += 1
    while taken and not taken[-1].strip():
        taken.pop()
        i -= 1
    return taken, i


def _summary(block: list[str]) -> str:
    """A short default for a block value: a flow list as one line, a list of mappings by
    their ``_target_`` names, a block scalar as ``(text)``."""
    items = [line.strip() for line in block if line.strip() and not line.strip().startswith("#")]
    text = " ".join(items)
    if text.startswith("["):
        return " ".join(text.split())
    targets = [i.split(":", 1)[1].strip().rsplit(".", 1)[-1] for i in items if "_target_:" in i]
    if targets:
        return "[" + ", ".join(targets) + "]"
    if all(i.startswith("- ") for i in items):
        return "[" + ", ".join(i[2:] for i in items) + "]"
    return "(text)"


def read_yaml(path: Path, package: str) -> YamlDoc:
    """The keys of one config file under ``package`` (its ``# @package`` line wins)."""
    lines = path.read_text().splitlines()
    doc = YamlDoc()
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        found = PACKAGE.match(stripped)
        if found:
            doc.package = found["package"]
            package = "" if doc.package == "_global_" else doc.package
            i += 1
            continue
        if not stripped:
            if pending and not doc.entries and not doc.description:
                doc.description = " ".join(" ".join(_comment_text(pending)).split())
            pending = []
            i += 1
            continue
        if stripped.startswith("#"):
            pending.append(line)
            i += 1
            continue
        match = KEY.match(line)
        if not match:
            i += 1
            continue
        indent, key = len(match["indent"]), match["key"].strip('"')
        value = (match["value"] or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        earlier, comment = _split_comment(pending)
        pending = []
        if earlier and not doc.entries:
            doc.description = (doc.description + "\n\n" + earlier).strip()
        if key == "defaults" and indent == 0:
            block, i = _value_block(lines, i + 1, indent)
            doc.defaults = [b.strip()[2:] for b in block if b.strip().startswith("- ")]
            doc.description = (doc.description + "\n\n" + comment).strip()
            continue
        prefix = ".".join([p for p in (package, *(k for _, k in stack)) if p])
        dotted = f"{prefix}.{key}" if prefix else key
        if value in ("|", "|-", ">", ">-") or (not value and _block_follows(lines, i, indent)):
            block, i = _value_block(lines, i + 1, indent)
            doc.entries.append(Entry(dotted, _summary(block), comment, len(stack)))
            continue
        doc.entries.append(Entry(dotted, value or None, comment, len(stack)))
        if not value:
            stack.append((indent, key))
        i += 1
    return doc


def _block_follows(lines: list[str], i: int, indent: int) -> bool:
    """Whether the key on line ``i`` has a list (not a mapping) as its value."""
    for line in lines[i + 1 :]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        width = len(line) - len(line.lstrip(" "))
        return stripped.startswith(("- ", "[")) and width >= indent
    return False


def python_comments(source: str, lineno: int) -> str:
    """The comment block right above line ``lineno`` (1-based) of ``source`` and the comment
    at that line's end, joined."""
    lines = source.splitlines()
    above = []
    j = lineno - 2
    while j >= 0 and lines[j].strip().startswith("#"):
        above.insert(0, lines[j].strip()[1:].strip())
        j -= 1
    line = lines[lineno - 1]
    inline = ""
    if "  # " in line:
        inline = line.split("  # ", 1)[1].strip()
    return " ".join(" ".join([*above, inline]).split())


def dataclass_fields(path: Path) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """Each dataclass of a module: its docstring and (field, default, comment) rows."""
    source = path.read_text()
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        rows = []
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                name = item.target.id
                if name in ("defaults",):
                    continue
                default = ast.unparse(item.value) if item.value is not None else "???"
                if default == "MISSING":
                    default = "???"
                rows.append((name, default, python_comments(source, item.lineno)))
        found[node.name] = (" ".join((ast.get_docstring(node) or "").split()), rows)
    return found
