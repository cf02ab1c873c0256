"""The ``metarec`` command: thin wiring over the library (Typer).

Each command module holds the commands of one part of the product (``train``: pretrain,
evaluate, finetune; ``meta``: meta-train, adapt; ``serve``: serve, refresh, items, like;
``data``; ``bench``: the protocols and the demo); this module registers them, in help order,
and turns every ``MetarecError`` into one line without a traceback and exit status 1.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from metarec.cli import bench, data, meta, serve, train
from metarec.errors import ConfigError, MetarecError

app = typer.Typer(
    help="metarec: recommendation with pretrained models that adapt fast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    threads: Annotated[
        int | None,
        typer.Option(
            envvar="METAREC_THREADS",
            help="CPU threads for torch (default: torch's, one per core). Use fewer than the "
            "cores when other heavy processes share the machine: oversubscribed threads spin "
            "and slow training several-fold.",
        ),
    ] = None,
) -> None:
    """metarec: recommendation with pretrained models that adapt fast."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {threads}")
        import torch

        torch.set_num_threads(threads)


app.command()(train.pretrain)
app.command()(train.evaluate)
app.command("meta-train")(meta.meta_train)
app.command()(meta.adapt)
app.command()(bench.demo)
app.command()(train.finetune)
app.command()(serve.serve)
app.command()(serve.refresh)
app.add_typer(data.app, name="data")
app.add_typer(bench.app, name="bench")
app.add_typer(serve.items_app, name="items")
app.add_typer(serve.like_app, name="like")


def main() -> None:
    """Console entry point: library errors become one line on stderr and exit status 1."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except MetarecError as e:
        kind = "config error" if isinstance(e, ConfigError) else "error"
        typer.secho(f"{kind}: {e}", err=True, fg="red")
        sys.exit(1)
    except OSError as e:  # a file system refusal is actionable: say which path and why
        typer.secho(f"error: {e}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
