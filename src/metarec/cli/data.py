"""``metarec data``: inspect, download, export and synthesise (scale up) datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metarec.cli.common import DataOpt
from metarec.errors import ConfigError

app = typer.Typer(help="Inspect and download datasets.", no_args_is_help=True)


@app.command("inspect")
def data_inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset name or path to a folder or file.")],
) -> None:
    """Print users, items, interactions, density, history lengths and text coverage."""
    from metarec.data.inspection import format_inspection, inspect_dataset
    from metarec.data.loaders.registry import load_dataset

    typer.echo(format_inspection(inspect_dataset(load_dataset(dataset))))


@app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="ml-100k, ml-1m, ml-latest-small or ml-25m.")],
    dest: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("data"),
) -> None:
    """Download a public MovieLens dataset (needs network access)."""
    from metarec.data.download import download

    typer.echo(f"dataset folder: {download(name, dest)}")


@app.command("export")
def data_export(
    out: Annotated[Path, typer.Option(help="Folder for the exported files.")],
    data: DataOpt = None,
    format: Annotated[str, typer.Option(help="recbole (atomic benchmark files).")] = "recbole",
    split: Annotated[str, typer.Option(help="leave-one-out (warm-ml) | given")] = "leave-one-out",
    name: Annotated[str | None, typer.Option(help="File prefix (default: dataset name).")] = None,
    max_len: Annotated[int, typer.Option(help="History items per row.")] = 50,
) -> None:
    """Export a dataset's split for another library (RecBole), exactly as metarec uses it."""
    from metarec.data.export import export_recbole
    from metarec.data.loaders.registry import load_dataset
    from metarec.data.splits import given, leave_one_out

    if format != "recbole":
        raise ConfigError(f"--format {format!r}: only 'recbole' is supported")
    if split not in ("leave-one-out", "given"):
        raise ConfigError(f"--split {split!r}: expected leave-one-out or given")
    dataset = load_dataset(data)
    parts = leave_one_out(dataset) if split == "leave-one-out" else given(dataset)
    prefix = name or dataset.name.replace("-", "_")
    counts = export_recbole(dataset, parts, out, prefix, max_len)
    typer.echo(
        f"wrote {out}/{prefix}.{{train,valid,test}}.inter: "
        + ", ".join(f"{k} {v:,} rows" for k, v in counts.items())
    )


@app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write (new, empty, or a synth folder).")],
    copies: Annotated[int, typer.Option(help="How many disjoint copies of the dataset.")],
    data: DataOpt = None,
    rows_per_file: Annotated[
        int | None,
        typer.Option(help="Rows per Parquet file at most; a larger copy is split into several."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a synth dataset already in --out.")
    ] = False,
) -> None:
    """Write K disjoint copies of a dataset as partitioned Parquet: K times the size, the same
    statistics (ids renamed per copy, item text tagged). Load it back with --data OUT."""
    from metarec.data.loaders.registry import load_dataset
    from metarec.data.synth import SynthConfig, check_out_folder, write_synth

    config = SynthConfig(copies) if rows_per_file is None else SynthConfig(copies, rows_per_file)
    check_out_folder(out, overwrite)
    dataset = load_dataset(data)
    manifest = write_synth(dataset, out, config, overwrite=overwrite)
    counts = manifest.counts
    typer.echo(
        f"wrote {out}: {copies} copies of {dataset.name}, {counts['users']:,} users, "
        f"{counts['items']:,} items, {counts['interactions']:,} interactions"
    )
