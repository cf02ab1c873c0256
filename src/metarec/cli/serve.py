"""``metarec serve``, ``refresh``, ``items add`` and ``like fit``: the service and what feeds it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metarec.cli.common import DataOpt, say, writable_folder

items_app = typer.Typer(help="Grow a model's item catalogue.", no_args_is_help=True)
like_app = typer.Typer(help="P(like): fit a like head over a trained model.", no_args_is_help=True)


@items_app.command("add")
def items_add(
    model: Annotated[Path, typer.Option(help="Checkpoint (text or hybrid seqrec).")],
    items: Annotated[Path, typer.Option(help="CSV/TSV/Parquet with item ids and text.")],
    out: Annotated[Path, typer.Option(help="Folder for the grown checkpoint.")],
    id_column: Annotated[str, typer.Option(help="Column of item ids.")] = "item_id",
    text_column: Annotated[list[str] | None, typer.Option(help="Text column(s); repeat.")] = None,
) -> None:
    """Add items to a trained model; they are scored from their text, without retraining."""
    from metarec.data.loaders.generic import read_item_text
    from metarec.workflows.items import add_items

    writable_folder(out)
    ids, texts = read_item_text(items, id_column, tuple(text_column or ["text"]))
    grown, n = add_items(model, ids, texts, out)
    typer.echo(f"added {n} items: {len(grown.items):,} in the catalogue\ncheckpoint: {out}")


@like_app.command("fit")
def like_fit(
    base: Annotated[Path, typer.Option(help="Pretrained SeqRec checkpoint folder.")],
    data: DataOpt = None,
    budget: Annotated[
        int | None,
        typer.Option(help="Labelled train-user samples to fit on (default: the library's)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw and the fit.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the head (default: BASE/like-head).")
    ] = None,
) -> None:
    """Fit the like head on N labelled samples; show AUC before/after; save the head."""
    from metarec.data.loaders.registry import load_dataset
    from metarec.like.workflow import (
        HEAD_DIR,
        LikeFitConfig,
        fit_like_head,
        load_base,
        save_like_head,
    )

    out = out or base / HEAD_DIR
    writable_folder(out)
    given = {"budget": budget, "seed": seed}
    cfg = LikeFitConfig(**{k: v for k, v in given.items() if v is not None})
    dataset = load_dataset(data)
    fit = fit_like_head(load_base(base, dataset), dataset, cfg, log=say)
    typer.echo(f"{'split':<8}{'history-mean':>14}{'before':>10}{'after':>10}   (AUC)")
    for split, row in fit.auc.items():
        typer.echo(
            f"{split:<8}{row['history-mean']:>14.4f}{row['before']:>10.4f}{row['after']:>10.4f}"
        )
    typer.echo(f"fit loss {fit.fit_loss[0]:.4f} -> {fit.fit_loss[1]:.4f} on {fit.n_fit_rows} rows")
    save_like_head(out, fit.model, {**fit.info, "auc": fit.auc})
    typer.echo(f"like head: {out}")


def serve(
    model: Annotated[
        list[Path], typer.Option(help="Checkpoint folder; repeat to offer several versions.")
    ],
    db: Annotated[str, typer.Option(help="Event store: sqlite:///PATH or a file path.")] = (
        "metarec-events.db"
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="METAREC_API_KEY", help="Required in X-API-Key for writes and admin."),
    ] = None,
    registry: Annotated[
        list[Path] | None,
        typer.Option(help="Folder whose subfolders are more versions (metarec refresh --out)."),
    ] = None,
    retrieval: Annotated[
        str,
        typer.Option(
            help="Top-k: exact (full score row) or faiss (an HNSW index per model version, "
            "approximate; for large catalogues)."
        ),
    ] = "exact",
    ef_search: Annotated[
        int, typer.Option(help="FAISS HNSW candidates per search (recall against time).")
    ] = 128,
) -> None:
    """Serve recommendations over HTTP, adapting to new users at request time."""
    import uvicorn

    from metarec.errors import ConfigError
    from metarec.evaluation.retrieval import IndexConfig
    from metarec.serving import ServeSettings, create_app
    from metarec.serving.registry import load_served_model

    for path in model:  # a missing or corrupt checkpoint stops start-up with its message
        load_served_model(path)
    try:
        settings = ServeSettings(
            models=tuple(model),
            db=db,
            api_key=api_key,
            registry=tuple(registry or ()),
            retrieval=retrieval,
            index=IndexConfig(ef_search=ef_search),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def refresh(
    db: Annotated[str, typer.Option(help="Event store: sqlite:///PATH, postgresql://... or path.")],
    base: Annotated[Path, typer.Option(help="Checkpoint to re-fine-tune.")],
    out: Annotated[Path, typer.Option(help="Registry folder for the new version.")],
    since: Annotated[
        float | None, typer.Option(help="Events received after (epoch s); default: since base.")
    ] = None,
    window: Annotated[
        float, typer.Option(help="Most recent fraction: the evaluation window.")
    ] = 0.1,
    gate: Annotated[float, typer.Option(help="Largest NDCG@10 drop still accepted.")] = 0.0,
    time_budget: Annotated[float, typer.Option(help="Fine-tuning seconds.")] = 300.0,
    activate_url: Annotated[
        str | None, typer.Option(help="Service to activate an accepted version in.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="METAREC_API_KEY")] = None,
    every: Annotated[
        str | None, typer.Option(help="Run again after this long (e.g. 30m, 1h); default once.")
    ] = None,
) -> None:
    """Re-fine-tune a model on the events since it was made; register it, gated."""
    from dataclasses import replace

    from metarec.serving.refresh import RefreshConfig
    from metarec.serving.scheduler import parse_duration, run_every

    cfg = RefreshConfig(
        db=db,
        base=base,
        out=out,
        since=since,
        window=window,
        gate=gate,
        activate_url=activate_url,
        api_key=api_key,
    )
    cfg = replace(cfg, train=replace(cfg.train, time_budget_s=time_budget))
    period = parse_duration(every, "--every") if every else None
    run_every(
        cfg,
        period,
        log=say,
        on_result=lambda res: typer.echo(f"version: {res.path}\nreport:  {res.report}"),
    )
