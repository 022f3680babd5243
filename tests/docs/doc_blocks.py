"""The tested blocks of the documentation's pages: a fenced block right after a line
``<!-- test -->`` (or ``<!-- test visit=NAME -->``) runs in CI, in page order, in one
folder per page (docs/site.md says how to write one).

- ``bash``: each command line. medclf's commands run in this process (tests/docs/doc_runner.py);
  any other line (``ls``, ``head``, a ``VAR=$(...)`` assignment) runs in bash.
- ``python``: executed in this process, in the page's folder.
- any block with ``title="PATH"`` (a file the page tells you to write): written to PATH.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
MARKER = re.compile(r"^\s*<!-- test(?P<options>(?: [\w-]+=[\w-]+)*) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+)(?P<lang>[\w-]*)(?P<attrs>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclass
class Block:
    """One tested block: where it is, its language, its text (dedented) and options."""

    page: Path
    line: int
    lang: str
    text: str
    title: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(DOCS)}:{self.line}"


def marked_blocks(page: Path) -> list[Block]:
    """The page's tested blocks in order; a marker not followed by a fenced block is an
    error (a test that would silently test nothing)."""
    lines = page.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if not marker:
            i += 1
            continue
        options = dict(o.split("=", 1) for o in marker["options"].split())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        opening = FENCE.match(lines[j]) if j < len(lines) else None
        if opening is None:
            raise ValueError(f"{page}:{i + 1}: <!-- test --> is not followed by a fenced block")
        indent, fence = opening["indent"], opening["fence"]
        body = []
        k = j + 1
        while k < len(lines) and lines[k].strip() != fence:
            body.append(lines[k][len(indent) :] if lines[k].startswith(indent) else lines[k])
            k += 1
        if k == len(lines):
            raise ValueError(f"{page}:{j + 1}: the fenced block is not closed")
        title = TITLE.search(opening["attrs"])
        blocks.append(
            Block(
                page=page,
                line=j + 1,
                lang=opening["lang"],
                text=textwrap.dedent("\n".join(body)) + "\n",
                title=title["title"] if title else None,
                options=options,
            )
        )
        i = k + 1
    return blocks


def logical_lines(text: str) -> list[str]:
    """A shell block's command lines: continuations (a trailing backslash) joined; blank
    lines and whole-line comments dropped."""
    found, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        found.append((current + line).strip())
        current = ""
    if current.strip():
        found.append(current.strip())
    return found


def marked_pages() -> list[Path]:
    """Every page of the site that holds a tested block."""
    return sorted(
        p for p in DOCS.rglob("*.md") if any(map(MARKER.match, p.read_text().splitlines()))
    )
