"""Render the layer diagram of docs/architecture.md from the import-linter contract.

The contract in pyproject.toml is what CI checks (`lint-imports`); this script turns it into the
picture the architecture page shows, each layer with the first paragraph of its package's
docstring, so the page cannot drift from the code: tests/test_architecture_doc.py fails when
they differ. `python docs/layers.py --write` updates the page.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin (docs/layers.py) -->", "<!-- layers:end -->"


def layers() -> list[list[str]]:
    """The layers contract's layers, top first, each a list of sibling module names."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in doc["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]


def summary(module: str) -> str:
    """The first paragraph of ``metarec.<module>``'s docstring, on one line."""
    pkg = ROOT / "src" / "metarec" / module
    path = pkg / "__init__.py" if pkg.is_dir() else pkg.with_suffix(".py")
    text = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(text.split("\n\n")[0].split())


def render() -> str:
    """One row per package, top layer first; packages of one layer share its number and may
    not import each other."""
    rows = [
        "| layer | package | what it holds |",
        "|---|---|---|",
    ]
    top = len(layers())
    for i, layer in enumerate(layers()):
        for module in layer:
            rows.append(f"| {top - i} | `{module}` | {summary(module)} |")
    return "\n".join([BEGIN, *rows, END])


def current() -> str:
    page = PAGE.read_text()
    start, end = page.index(BEGIN), page.index(END) + len(END)
    return page[start:end]


if __name__ == "__main__":
    if "--write" in sys.argv:
        page = PAGE.read_text()
        PAGE.write_text(page.replace(current(), render()))
    else:
        print(render())
