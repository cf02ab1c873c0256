"""Dataset loaders; ``load_dataset`` picks one from a name or path."""

from __future__ import annotations

from metarec.data.loaders.amazon import load_office, load_unisrec
from metarec.data.loaders.generic import GenericFormat, load_generic, read_item_text
from metarec.data.loaders.movielens import load_ml1m, load_ml100k, load_movielens_csv, movie_text
from metarec.data.loaders.registry import (
    FOLDER_FORMATS,
    bundled_path,
    known_names,
    load_dataset,
    resolve_dataset,
    sniff_format,
)
from metarec.data.loaders.synth import load_synth

__all__ = [
    "FOLDER_FORMATS",
    "GenericFormat",
    "bundled_path",
    "known_names",
    "load_dataset",
    "load_generic",
    "load_ml1m",
    "load_ml100k",
    "load_movielens_csv",
    "load_office",
    "load_synth",
    "load_unisrec",
    "movie_text",
    "read_item_text",
    "resolve_dataset",
    "sniff_format",
]
