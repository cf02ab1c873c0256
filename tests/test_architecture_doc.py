"""docs/architecture.md shows the layers CI checks: generated from pyproject.toml's contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layers_module():
    spec = importlib.util.spec_from_file_location("layers", ROOT / "docs" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_shows_the_checked_layers():
    layers = _layers_module()
    assert layers.current() == layers.render(), "run: python docs/layers.py --write"


def test_every_package_is_in_a_layer_and_says_what_it_holds():
    layers = _layers_module()
    named = {m for layer in layers.layers() for m in layer}
    src = ROOT / "src" / "metarec"
    present = {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
    present |= {p.stem for p in src.glob("*.py") if p.stem != "__init__"}
    assert present - {"datasets"} == named
    assert all(layers.summary(m) for m in named)
