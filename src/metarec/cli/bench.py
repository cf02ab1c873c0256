"""``metarec bench NAME`` and ``metarec demo``: the protocols of docs/protocols.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from metarec.cli.common import DataOpt, say, writable_folder

# the options of the cold-start protocols (coldstart-ml, coldstart-like), declared once
FoldOpt = Annotated[list[int] | None, typer.Option(help="Run only this fold; repeat for several.")]
NFoldsOpt = Annotated[int, typer.Option(help="Folds the users are split into.")]
FoldSeedOpt = Annotated[int, typer.Option(help="Seed of the fold split.")]
KOpt = Annotated[list[int] | None, typer.Option(help="Support size K; repeat.")]
MethodOpt = Annotated[list[str] | None, typer.Option(help="Method; repeat (default all).")]

app = typer.Typer(help="Run a benchmark protocol (see docs/protocols.md).", no_args_is_help=True)


def _files(res: dict, seconds: float | None = None) -> None:
    """The closing lines every protocol prints: its wall time (when timed), report, metrics."""
    if seconds is not None:
        typer.echo(f"\nfinished in {seconds:.0f} s")
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")


def _warm_ml(out: Path, data: str | None, seeds: list[int], quick: bool, demo: bool) -> None:
    from metarec.evaluation.report import format_table
    from metarec.protocols.warm_ml import config_from_options, run_warm_ml

    writable_folder(out)
    cfg = config_from_options(out, data, seeds, quick, demo)
    start = time.perf_counter()
    res = run_warm_ml(cfg, log=say)
    typer.echo(format_table(res["results"], ["HR@10", "NDCG@10", "MRR@10"]))
    _files(res, time.perf_counter() - start)
    if res["checkpoint"] is not None:
        typer.echo(f"checkpoint:   {res['checkpoint']}")


@app.command("warm-ml")
def bench_warm_ml(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/warm-ml"),
    data: DataOpt = None,
    seed: Annotated[list[int] | None, typer.Option(help="Seed; repeat for several.")] = None,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """PROTOCOLS.md warm-ml: popularity, BPR, id-only SASRec and metarec in one run."""
    _warm_ml(out, data, seed or [0], quick, demo=False)


@app.command("coldstart-ml")
def bench_coldstart_ml(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/coldstart-ml"),
    data: DataOpt = None,
    fold: FoldOpt = None,
    n_folds: NFoldsOpt = 5,
    fold_seed: FoldSeedOpt = 0,
    k: KOpt = None,
    method: MethodOpt = None,
    policy: Annotated[
        str | None, typer.Option(help="Fast parameters of the meta-learners (default: head).")
    ] = None,
    pretrain_budget: Annotated[float, typer.Option(help="Pretraining seconds per fold.")] = 180,
    meta_budget: Annotated[float, typer.Option(help="Meta-training seconds per method.")] = 120,
    outer_lr: Annotated[
        float | None,
        typer.Option(
            help="AdamW outer rate of maml, fomaml and meta-sgd (default: the product's)."
        ),
    ] = None,
    like_weight: Annotated[
        float,
        typer.Option(
            help="Support loss = next-item + W x BCE of liked (rating > 3) / disliked support "
            "items, for every adapting method (needs ratings; 0: next-item only)."
        ),
    ] = 0.0,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """PROTOCOLS.md coldstart-ml: every adaptation method at every K over the folds."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.coldstart_ml import config_from_options, run_coldstart_ml

    writable_folder(out)
    options = {"n_folds": n_folds, "fold_seed": fold_seed, "folds": fold, "ks": k}
    options |= {"methods": method, "policy": policy, "outer_lr": outer_lr}
    options["like_weight"] = like_weight
    cfg = config_from_options(out, data, options, pretrain_budget, meta_budget, quick)
    start = time.perf_counter()
    res = run_coldstart_ml(cfg, log=say)
    typer.echo(format_table(res["results"], ["NDCG@10", "Recall@10", "AUC"]))
    for c in res["comparisons"]:
        if c.k == cfg.select_k:
            typer.echo(
                f"{c.method} vs {c.baseline} at K={c.k}: NDCG@10 {c.diff:+.4f} "
                f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] {c.verdict}"
            )
    _files(res, time.perf_counter() - start)


@app.command("coldstart-like")
def bench_coldstart_like(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/coldstart-like"),
    data: DataOpt = None,
    fold: FoldOpt = None,
    n_folds: NFoldsOpt = 5,
    fold_seed: FoldSeedOpt = 0,
    k: KOpt = None,
    method: MethodOpt = None,
    policy: Annotated[
        str | None,
        typer.Option(help="Fast parameters of the meta-learners (default: the net's head)."),
    ] = None,
    pretrain_budget: Annotated[float, typer.Option(help="Pretraining seconds per fold.")] = 120,
    meta_budget: Annotated[float, typer.Option(help="Meta-training seconds per method.")] = 120,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """docs/protocols.md coldstart-like: new users with K rated items, predict like on the
    next ones (needs ratings: ml-latest-small)."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.coldstart_like import config_from_options, run_coldstart_like

    writable_folder(out)
    options = {"n_folds": n_folds, "fold_seed": fold_seed, "folds": fold, "ks": k}
    options |= {"methods": method, "policy": policy}
    cfg = config_from_options(out, data, options, pretrain_budget, meta_budget, quick)
    start = time.perf_counter()
    res = run_coldstart_like(cfg, log=say)
    typer.echo(format_table(res["results"], ["AUC", "UserAUC", "NDCG@10"]))
    for c in res["comparisons"]:
        if c.k == cfg.select_k and c.metric == "AUC":
            typer.echo(
                f"{c.method} vs {c.baseline} at K={c.k}: AUC {c.diff:+.4f} "
                f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] {c.verdict}"
            )
    _files(res, time.perf_counter() - start)


@app.command("train-throughput")
def bench_train_throughput(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path(
        "metarec-runs/train-throughput"
    ),
    data: DataOpt = None,
    scale: Annotated[list[int] | None, typer.Option(help="Scale factor; repeat.")] = None,
    steps: Annotated[int, typer.Option(help="Timed pretraining steps.")] = 100,
) -> None:
    """PROTOCOLS.md train-throughput: rates against the machine's peak, and growth."""
    from metarec.protocols.throughput import config_from_options, run_throughput

    writable_folder(out)
    cfg = config_from_options(out, data, scale, steps)
    res = run_throughput(cfg, log=say)
    _files(res)


@app.command("fewshot-like")
def bench_fewshot_like(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/fewshot-like"),
    data: DataOpt = None,
    seed: Annotated[list[int] | None, typer.Option(help="Budget-draw seed; repeat.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the 8:1:1 user split.")] = 0,
    budget: Annotated[list[int] | None, typer.Option(help="Labelled samples; repeat.")] = None,
    method: Annotated[list[str] | None, typer.Option(help="Method; repeat (default all).")] = None,
    template: Annotated[
        str | None,
        typer.Option(help="Cross-encoder prompt: format string with {history}, {candidate}."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """PROTOCOLS.md fewshot-like: like/dislike AUC from 16 / 64 / 256 labelled samples."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.fewshot_like import config_from_options, run_fewshot_like

    writable_folder(out)
    options = {"seeds": seed, "budgets": budget, "methods": method}
    cfg = config_from_options(out, data, split_seed, options, template, quick)
    res = run_fewshot_like(cfg, log=say)
    typer.echo(format_table([r for r in res["results"] if r.setting["adapted"]], ["AUC"]))
    _files(res, res["seconds"])


@app.command("serve-load")
def bench_serve_load(
    model: Annotated[Path, typer.Option(help="Checkpoint folder to serve.")],
    data: DataOpt = None,
    db: Annotated[
        str | None, typer.Option(help="Event store URL (default: a fresh SQLite file in --out).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/serve-load"),
    seconds: Annotated[float, typer.Option(help="Seconds per mix.")] = 20.0,
    rate: Annotated[
        list[str] | None,
        typer.Option(help="Offered requests/s per mix, e.g. known-user=100; repeat."),
    ] = None,
) -> None:
    """PROTOCOLS.md serve-load: metarec serve under load from a separate process."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.serve_load import ServeLoadConfig, parse_rates, run_serve_load

    rates = parse_rates(rate)
    writable_folder(out)
    cfg = ServeLoadConfig(model=model, data=data, db=db, out=out, seconds=seconds, rates=rates)
    res = run_serve_load(cfg, log=say)
    typer.echo(format_table(res["results"], ["rps", "p50_ms", "p99_ms", "errors"]))
    _files(res)


@app.command("transfer-scientific")
def bench_transfer_scientific(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path(
        "metarec-runs/transfer-scientific"
    ),
    source: Annotated[
        list[str] | None, typer.Option(help="Source dataset; repeat (default ml + office).")
    ] = None,
    target: Annotated[str, typer.Option(help="Target dataset.")] = "amazon-scientific",
    base: Annotated[
        Path | None, typer.Option(help="Checkpoint already pretrained on the sources.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    strategy: Annotated[list[str] | None, typer.Option(help="Strategy; repeat.")] = None,
    domain_embedding: Annotated[
        bool, typer.Option(help="Pretrain with a learned vector per source domain.")
    ] = False,
    text_fusion: Annotated[
        bool,
        typer.Option(
            help="Fuse every fine-tuned model and the target-only text model with the last "
            "item's raw text similarity (weight picked on validation); off for an ablation."
        ),
    ] = True,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """PROTOCOLS.md transfer-scientific: zero-shot, few-shot and full target training."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.transfer_scientific import config_from_options, run_transfer

    writable_folder(out)
    cfg = config_from_options(
        out, target, seed, base, source, strategy, domain_embedding, text_fusion, quick
    )
    res = run_transfer(cfg, log=say)
    typer.echo(format_table(res["results"], list(res["metrics"])))
    _files(res)


@app.command("refresh-ml")
def bench_refresh_ml(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/refresh-ml"),
    data: DataOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    updates: Annotated[
        int, typer.Option(help="Update periods P after the base period (P + 2 periods).")
    ] = 4,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """docs/protocols.md refresh-ml: drift and periodic re-training, every update method."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.refresh_ml import config_from_options, run_refresh_ml

    writable_folder(out)
    cfg = config_from_options(out, data, seed, updates, quick)
    start = time.perf_counter()
    res = run_refresh_ml(cfg, log=say)
    mean_rows = [r for r in res["results"] if r.setting["period"] == "mean"]
    typer.echo(format_table(mean_rows, ["NDCG@10", "HR@10"]))
    for c in res["comparisons"]:
        typer.echo(
            f"{c.method} vs {c.baseline}: NDCG@10 {c.diff:+.4f} "
            f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] {c.verdict}"
        )
    _files(res, time.perf_counter() - start)


def demo(
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("metarec-demo"),
    quick: Annotated[bool, typer.Option(help="Tiny budgets, for a smoke test.")] = False,
) -> None:
    """Run warm-ml end to end on the bundled data: text, pretraining, baselines, report."""
    _warm_ml(out, None, [0], quick, demo=True)
