"""What the command modules share: dataset options, messages, output-folder checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from metarec.errors import ConfigError

DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="Dataset name (ml-latest-small, amazon-office, ...) or path."),
]
DataListOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="Dataset name or path; repeat to pretrain on several domains at once "
        "(e.g. --data ml-latest-small --data amazon-office).",
    ),
]

# pretrain and finetune: off by default for pretraining, on for fine-tuning (its validated
# settings; FinetuneConfig)
GateOpt = Annotated[
    bool | None,
    typer.Option(
        "--last-item-gate/--no-last-item-gate",
        help="A learned scalar (from 0) that mixes the last item's vector into the user's "
        "(finetune: on by default).",
    ),
]
FusionOpt = Annotated[
    bool | None,
    typer.Option(
        "--text-fusion/--no-text-fusion",
        help="Add the last item's raw text similarity to the scores, at a weight picked on the "
        "validation rows after training (finetune: on by default when the model reads text).",
    ),
]


def say(msg: str) -> None:
    typer.echo(msg, err=True)


def writable_folder(path: Path) -> None:
    """Fail before any work when an output folder cannot be one."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {path} exists and is not a folder")
    parent = path if path.exists() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"output folder {path} is not writable")
