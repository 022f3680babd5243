"""Files that others read while they are written (a page a browser reloads, a state file a
resumed command reads, a marker a test polls): written to a hidden temporary file beside
them and renamed over them, so a reader finds the whole old file or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path


def write_text(path: Path, text: str) -> Path:
    """``text`` (UTF-8) into ``path`` atomically, its folder made if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
