"""Strip outputs and execution counts from Jupyter notebooks, in place.

``python scripts/strip_notebook_outputs.py [NOTEBOOK ...]`` cleans the given notebooks (default:
every ``notebooks/**/*.ipynb``); ``--check`` changes nothing and exits 1, listing the notebooks
that still hold outputs, so CI can verify that the committed notebooks are clean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def default_notebooks() -> list[Path]:
    """Every notebook under the repository's ``notebooks/`` folder."""
    return sorted(
        p for p in (REPO / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


def strip(notebook: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts and run timings; True if anything was removed."""
    changed = False
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            cell.outputs = []
            changed = True
        if cell.get("execution_count") is not None:
            cell.execution_count = None
            changed = True
        if cell.metadata.pop("execution", None) is not None:
            changed = True
    return changed


def has_outputs(path: Path) -> bool:
    """Whether the notebook at ``path`` holds outputs, execution counts or run timings."""
    return strip(nbformat.read(path, as_version=4))


def check(paths: list[Path]) -> list[Path]:
    """The notebooks among ``paths`` that are not clean."""
    return [path for path in paths if has_outputs(path)]


def strip_files(paths: list[Path]) -> list[Path]:
    """Strip each notebook in place (untouched if already clean); return the changed ones."""
    changed = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if strip(notebook):
            nbformat.write(notebook, path)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/**/*.ipynb")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if not clean")
    args = parser.parse_args(argv)
    paths = args.notebooks or default_notebooks()
    if args.check:
        dirty = check(paths)
        if dirty:
            print("notebooks with outputs (run scripts/strip_notebook_outputs.py on them):")
            print("\n".join(f"  {path}" for path in dirty))
            return 1
        print(f"{len(paths)} notebook(s) clean")
        return 0
    for path in strip_files(paths):
        print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
