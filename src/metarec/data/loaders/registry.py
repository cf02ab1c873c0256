"""``load_dataset``: one entry point that resolves a dataset name or path and picks the loader."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from metarec.data.loaders.amazon import load_office, load_unisrec
from metarec.data.loaders.generic import load_generic
from metarec.data.loaders.movielens import load_ml1m, load_ml100k, load_movielens_csv
from metarec.data.loaders.synth import is_synth_folder, load_synth
from metarec.data.schema import Dataset
from metarec.errors import ConfigError, DataError

DATA_DIR_ENV = "METAREC_DATA_DIR"
DEFAULT_DATASET = "ml-latest-small"
BUNDLED = ("ml-latest-small",)
SHARED = ("amazon-office", "amazon-scientific")


@dataclass(frozen=True)
class FolderFormat:
    """A folder layout: how to recognise it and which loader reads it."""

    name: str
    recognise: Callable[[Path], bool]
    load: Callable[..., Dataset]
    options: tuple[str, ...] = ("name",)
    looks_like: str = ""


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda folder: all((folder / n).is_file() for n in names)


FOLDER_FORMATS = (
    FolderFormat(
        "movielens-csv",
        _has("ratings.csv", "movies.csv"),
        load_movielens_csv,
        looks_like="ratings.csv + movies.csv",
    ),
    FolderFormat("ml-100k", _has("u.data"), load_ml100k, looks_like="u.data + u.item"),
    FolderFormat(
        "ml-1m",
        _has("ratings.dat"),
        load_ml1m,
        ("name", "encoding"),
        looks_like="ratings.dat + movies.dat",
    ),
    FolderFormat(
        "unisrec",
        lambda folder: any(folder.glob("*.train.inter")),
        load_unisrec,
        looks_like="NAME.train.inter / .valid.inter / .test.inter + NAME.item2index + NAME.text",
    ),
    FolderFormat(
        "rechorus",
        _has("train.csv", "dev.csv", "test.csv"),
        load_office,
        looks_like="train.csv + dev.csv + test.csv (tab-separated)",
    ),
    FolderFormat(
        "parquet-synth",
        is_synth_folder,
        load_synth,
        looks_like="synth.json + interactions/ users/ items/ Parquet (metarec data synth)",
    ),
)


def load_dataset(name_or_path: str | Path | None = None, **options) -> Dataset:
    """Load a dataset by name (bundled, or a folder under ``$METAREC_DATA_DIR``) or by path.

    A folder's layout is recognised from its files (``format=`` forces one of
    ``FOLDER_FORMATS``); a file is read by ``load_generic`` with ``options`` as its columns.
    """
    path, name = resolve_dataset(name_or_path)
    if path.is_file():
        return load_generic(path, name=options.pop("name", None), **options)
    fmt = _folder_format(path, options.pop("format", None))
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for a {fmt.name} folder; "
            f"known: {', '.join(fmt.options)}"
        )
    options.setdefault("name", name)
    return fmt.load(path, **options)


def resolve_dataset(name_or_path: str | Path | None) -> tuple[Path, str]:
    """(path, dataset name) for a bundled name, a name under ``$METAREC_DATA_DIR``, or a path."""
    if name_or_path is None:
        name_or_path = DEFAULT_DATASET
    text = str(name_or_path)
    if text in BUNDLED:
        return bundled_path(text), text
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir and _is_plain_name(text) and (Path(data_dir) / text).exists():
        return Path(data_dir) / text, text
    path = Path(text).expanduser()
    if path.exists():
        return path, path.stem if path.is_file() else path.name
    if not _is_plain_name(text):
        raise DataError(f"{path}: no such file or folder")
    raise DataError(_unknown_name_message(text, data_dir))


def bundled_path(name: str) -> Path:
    """Folder of a dataset shipped inside the package."""
    return Path(str(files("metarec.datasets") / name))


def known_names() -> list[str]:
    """Names ``load_dataset`` resolves: bundled ones, the shared Amazon sets, data-dir folders."""
    names = set(BUNDLED) | set(SHARED)
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir and Path(data_dir).is_dir():
        names |= {p.name for p in Path(data_dir).iterdir() if not p.name.startswith(".")}
    return sorted(names)


def sniff_format(folder: Path | str) -> FolderFormat:
    """The layout of a dataset folder, recognised from the files it holds."""
    return _folder_format(Path(folder), None)


def _folder_format(folder: Path, forced: str | None) -> FolderFormat:
    if forced is not None:
        by_name = {f.name: f for f in FOLDER_FORMATS}
        if forced not in by_name:
            raise ConfigError(f"unknown folder format {forced!r}; known: {', '.join(by_name)}")
        return by_name[forced]
    for fmt in FOLDER_FORMATS:
        if fmt.recognise(folder):
            return fmt
    expected = "; ".join(f"{f.name}: {f.looks_like}" for f in FOLDER_FORMATS)
    raise DataError(f"{folder}: not a dataset folder metarec recognises; expected {expected}")


def _is_plain_name(text: str) -> bool:
    return "/" not in text and os.sep not in text and not text.startswith((".", "~"))


def _unknown_name_message(name: str, data_dir: str | None) -> str:
    if name in SHARED:
        place = f"{DATA_DIR_ENV}={data_dir}" if data_dir else f"{DATA_DIR_ENV} (not set)"
        return (
            f"dataset {name!r} is not bundled with metarec and was not found under {place}; "
            f"set {DATA_DIR_ENV} to the folder that holds it, or pass its path"
        )
    message = f"unknown dataset {name!r}; known names: {', '.join(known_names())}"
    if not data_dir:
        message += f" (set {DATA_DIR_ENV} to a folder of datasets to load more by name)"
    return message
