"""The ``metarec`` command: thin wiring over the library (Typer).

Every ``MetarecError`` is printed as one line, without a traceback, and exits with status 1.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from metarec.errors import ConfigError, MetarecError

app = typer.Typer(
    help="metarec: recommendation with pretrained models that adapt fast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and download datasets.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Run a benchmark protocol (see docs/protocols.md).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
items_app = typer.Typer(help="Grow a model's item catalogue.", no_args_is_help=True)
app.add_typer(items_app, name="items")
like_app = typer.Typer(help="P(like): fit a like head over a trained model.", no_args_is_help=True)
app.add_typer(like_app, name="like")

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


def _say(msg: str) -> None:
    typer.echo(msg, err=True)


def _writable_folder(path: Path) -> None:
    """Fail before any work when an output folder cannot be one."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {path} exists and is not a folder")
    parent = path if path.exists() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"output folder {path} is not writable")


@data_app.command("inspect")
def data_inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset name or path to a folder or file.")],
) -> None:
    """Print users, items, interactions, density, history lengths and text coverage."""
    from metarec.data.inspection import format_inspection, inspect_dataset
    from metarec.data.loaders.registry import load_dataset

    typer.echo(format_inspection(inspect_dataset(load_dataset(dataset))))


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="ml-100k, ml-1m, ml-latest-small or ml-25m.")],
    dest: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("data"),
) -> None:
    """Download a public MovieLens dataset (needs network access)."""
    from metarec.data.download import download

    typer.echo(f"dataset folder: {download(name, dest)}")


@data_app.command("export")
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


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write.")] = Path("metarec-model"),
    data: DataListOpt = None,
    domain_tag: Annotated[
        bool, typer.Option(help="Several --data: prefix each item's text with its domain name.")
    ] = False,
    domain_embedding: Annotated[
        bool | None,
        typer.Option(
            "--domain-embedding/--no-domain-embedding",
            help="Several --data: a learned vector per domain, added to its items' vectors.",
        ),
    ] = None,
    last_item_gate: Annotated[
        bool | None,
        typer.Option(
            "--last-item-gate/--no-last-item-gate",
            help="A learned scalar adding that much of the last item's vector to the user's.",
        ),
    ] = None,
    text_fusion: Annotated[
        bool | None,
        typer.Option(
            "--text-fusion/--no-text-fusion",
            help="Add the last item's raw text similarity to the scores, at a weight picked "
            "on validation after training.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with [model] and [train] tables.")
    ] = None,
    item_repr: Annotated[str | None, typer.Option(help="id | text | hybrid")] = None,
    loss: Annotated[
        str | None, typer.Option(help="ce (full softmax) | sampled (shared negatives) | bce")
    ] = None,
    id_init: Annotated[
        str | None, typer.Option(help="random | cooccurrence (id vectors from the sequences)")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training windows per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="constant | cosine | linear (decay to 0 at max-epochs)")
    ] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop training after N s.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]")] = None,
    text_model: Annotated[
        str | None, typer.Option(help="Local path of a sentence-transformers/HF model.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a checkpoint already in --out.")] = False,
    cold_start_fold: Annotated[
        int | None,
        typer.Option(help="Train on this cold-start fold's train users only (for meta-train)."),
    ] = None,
    n_folds: Annotated[int, typer.Option(help="Folds of --cold-start-fold.")] = 5,
    fold_seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
) -> None:
    """Pretrain the sequential model (next-item prediction) and write a checkpoint."""
    from metarec.config import pretrain_settings
    from metarec.data.combine import load_combined
    from metarec.data.splits import fold_train_dataset, leave_one_out
    from metarec.training.pretrain import prepare_next_item
    from metarec.workflows.pretrain import pretrain_seqrec, write_pretrain_report

    flags = {
        "item_repr": item_repr,
        "loss": loss,
        "id_init": id_init,
        "text_model": text_model,
        "domain_embedding": domain_embedding,
        "last_item_gate": last_item_gate,
        "text_fusion": text_fusion,
    }
    train_flags = {
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "schedule": schedule,
        "time_budget_s": time_budget,
        "seed": seed,
        "device": device,
    }
    spec, train = pretrain_settings(config, flags, train_flags)
    _writable_folder(out)
    dataset = load_combined(data or [], domain_tag)
    if cold_start_fold is not None:
        dataset = fold_train_dataset(dataset, cold_start_fold, n_folds, fold_seed)
    nid = prepare_next_item(leave_one_out(dataset), dataset.n_users, dataset.n_items, spec.max_len)
    res = pretrain_seqrec(dataset, nid, spec, train, out=out, resume=resume, overwrite=overwrite)
    report = write_pretrain_report(res, dataset, spec, train.seed, out)
    typer.echo(
        f"best epoch {res.state.best_epoch} of {res.state.epoch} ({res.state.stopped}); "
        f"valid NDCG@10 {res.valid['NDCG@10']:.4f}, test NDCG@10 {res.test['NDCG@10']:.4f} "
        f"HR@10 {res.test['HR@10']:.4f}\ncheckpoint: {res.checkpoint}\nreport:     {report}"
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Checkpoint folder.")],
    data: DataOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json/report.md.")] = Path(
        "metarec-runs/evaluate"
    ),
) -> None:
    """Evaluate a checkpoint on the leave-one-out test users of a dataset (full ranking)."""
    from metarec.workflows.evaluate import evaluate_checkpoint

    _writable_folder(out)
    result = evaluate_checkpoint(model, data, out)
    typer.echo(result["table"])
    typer.echo(f"report: {result['report']}")


@app.command("meta-train")
def meta_train(
    base: Annotated[Path, typer.Option(help="Pretrained checkpoint folder (metarec pretrain).")],
    out: Annotated[Path, typer.Option(help="Folder for the meta checkpoint and its report.")],
    data: DataOpt = None,
    algorithm: Annotated[
        str | None, typer.Option(help="maml | fomaml | reptile | meta-sgd | anil | learned-optim")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="all | head | bias | lora | user-embedding")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", help="Support items per user (>= 2).")] = None,
    fold: Annotated[
        int | None, typer.Option(help="Cold-start fold whose train users to use.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with [model], [meta] and [train] tables.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Meta steps at most.")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop after N s.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a checkpoint already in --out.")] = False,
) -> None:
    """Meta-train a pretrained model on a cold-start fold's train users; write the meta
    checkpoint, metrics.json and report.md."""
    from metarec.config import meta_train_settings
    from metarec.data.loaders.registry import load_dataset
    from metarec.evaluation.report import format_table
    from metarec.workflows.meta_train import meta_train_fold

    spec, tasks, train = meta_train_settings(
        config,
        {"algorithm": algorithm, "k": k, "fold": fold},
        {"policy": policy},
        {"max_steps": max_steps, "time_budget_s": time_budget, "seed": seed, "device": device},
    )
    _writable_folder(out)
    dataset = load_dataset(data)
    run = meta_train_fold(base, dataset, spec, tasks, train, out, overwrite, log=_say)
    typer.echo(format_table(run.rows, ["NDCG@10", "Recall@10"]))
    typer.echo(
        f"best meta-validation {train.select} {run.train.best_metric:.4f} at step "
        f"{run.train.best_step} of {run.train.step} ({run.train.stopped})\n"
        f"meta checkpoint: {out}\nreport:          {run.report}"
    )


@app.command()
def adapt(
    model: Annotated[Path, typer.Option(help="Meta-trained model folder (metarec meta-train).")],
    ids: Annotated[
        list[str],
        typer.Argument(
            metavar="ID...", help="Raw item ids of the user's interactions, oldest first."
        ),
    ],
    # the ids are the arguments; ``--items`` before them is accepted so that command lines
    # written as ``--items ID [ID ...]`` keep working, and hidden from the help
    items: Annotated[bool, typer.Option("--items", hidden=True)] = False,
    top: Annotated[int, typer.Option(help="How many recommendations to show.")] = 10,
    steps: Annotated[int | None, typer.Option(help="Inner steps (default: the learner's).")] = None,
) -> None:
    """Show the top-N before and after adapting a meta-trained model to a user's items."""
    from metarec.meta.checkpoint import load_meta_checkpoint
    from metarec.workflows.meta_train import before_after

    raw = [part for arg in ids for part in arg.split(",") if part]
    typer.echo(before_after(load_meta_checkpoint(model), raw, top, steps))


def _warm_ml(out: Path, data: str | None, seeds: list[int], quick: bool, demo: bool) -> None:
    from metarec.evaluation.report import format_table
    from metarec.protocols.warm_ml import config_from_options, run_warm_ml

    _writable_folder(out)
    cfg = config_from_options(out, data, seeds, quick, demo)
    start = time.perf_counter()
    res = run_warm_ml(cfg, log=_say)
    typer.echo(format_table(res["results"], ["HR@10", "NDCG@10", "MRR@10"]))
    typer.echo(f"\nfinished in {time.perf_counter() - start:.0f} s")
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")
    if res["checkpoint"] is not None:
        typer.echo(f"checkpoint:   {res['checkpoint']}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("metarec-demo"),
    quick: Annotated[bool, typer.Option(help="Tiny budgets, for a smoke test.")] = False,
) -> None:
    """Run warm-ml end to end on the bundled data: text, pretraining, baselines, report."""
    _warm_ml(out, None, [0], quick, demo=True)


@bench_app.command("warm-ml")
def bench_warm_ml(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/warm-ml"),
    data: DataOpt = None,
    seed: Annotated[list[int] | None, typer.Option(help="Seed; repeat for several.")] = None,
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """PROTOCOLS.md warm-ml: popularity, BPR, id-only SASRec and metarec in one run."""
    _warm_ml(out, data, seed or [0], quick, demo=False)


@bench_app.command("coldstart-ml")
def bench_coldstart_ml(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("metarec-runs/coldstart-ml"),
    data: DataOpt = None,
    fold: Annotated[
        list[int] | None, typer.Option(help="Run only this fold; repeat for several.")
    ] = None,
    n_folds: Annotated[int, typer.Option(help="Folds the users are split into.")] = 5,
    fold_seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    k: Annotated[list[int] | None, typer.Option(help="Support size K; repeat.")] = None,
    method: Annotated[list[str] | None, typer.Option(help="Method; repeat (default all).")] = None,
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
    quick: Annotated[bool, typer.Option(help="Smoke-test budgets; never reported.")] = False,
) -> None:
    """PROTOCOLS.md coldstart-ml: every adaptation method at every K over the folds."""
    from metarec.evaluation.report import format_table
    from metarec.protocols.coldstart_ml import config_from_options, run_coldstart_ml

    _writable_folder(out)
    options = {"n_folds": n_folds, "fold_seed": fold_seed, "folds": fold, "ks": k}
    options |= {"methods": method, "policy": policy, "outer_lr": outer_lr}
    cfg = config_from_options(out, data, options, pretrain_budget, meta_budget, quick)
    start = time.perf_counter()
    res = run_coldstart_ml(cfg, log=_say)
    typer.echo(format_table(res["results"], ["NDCG@10", "Recall@10", "AUC"]))
    for c in res["comparisons"]:
        if c.k == cfg.select_k:
            typer.echo(
                f"{c.method} vs {c.baseline} at K={c.k}: NDCG@10 {c.diff:+.4f} "
                f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] {c.verdict}"
            )
    typer.echo(f"\nfinished in {time.perf_counter() - start:.0f} s")
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")


@bench_app.command("train-throughput")
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

    _writable_folder(out)
    cfg = config_from_options(out, data, scale, steps)
    res = run_throughput(cfg, log=_say)
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")


@bench_app.command("fewshot-like")
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

    _writable_folder(out)
    options = {"seeds": seed, "budgets": budget, "methods": method}
    cfg = config_from_options(out, data, split_seed, options, template, quick)
    res = run_fewshot_like(cfg, log=_say)
    typer.echo(format_table([r for r in res["results"] if r.setting["adapted"]], ["AUC"]))
    typer.echo(f"\nfinished in {res['seconds']:.0f} s")
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")


@bench_app.command("serve-load")
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
    _writable_folder(out)
    cfg = ServeLoadConfig(model=model, data=data, db=db, out=out, seconds=seconds, rates=rates)
    res = run_serve_load(cfg, log=_say)
    typer.echo(format_table(res["results"], ["rps", "p50_ms", "p99_ms", "errors"]))
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")


@app.command()
def finetune(
    base: Annotated[Path, typer.Option(help="Pretrained checkpoint folder.")],
    data: Annotated[str, typer.Option("--data", help="Target dataset name or path.")],
    strategy: Annotated[
        str | None, typer.Option(help="full | lora | adapter | adaptor | head (default: lora)")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the adapter or checkpoint.")] = Path(
        "metarec-finetuned"
    ),
    config: Annotated[
        Path | None, typer.Option(help="TOML file with [model] and [train] tables.")
    ] = None,
    fraction: Annotated[float, typer.Option(help="Share of the target's training users.")] = 1.0,
    optimizer: Annotated[str | None, typer.Option(help="adamw | adagrad | sgd")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: the strategy's).")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option()] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop training after N s.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (default 4).")] = None,
    id_rank: Annotated[
        int | None,
        typer.Option(
            help="lora with item ids: a rank-N LoRA on the id table (0: the whole table; "
            "default 2)."
        ),
    ] = None,
    item_ids: Annotated[
        bool | None,
        typer.Option(help="Train id vectors for the target's items (default: full and lora)."),
    ] = None,
    id_init: Annotated[
        str | None,
        typer.Option(
            help="With item ids: zero | cooccurrence (start them from the target's own item "
            "co-occurrence; frozen there under lora; default: cooccurrence under lora)."
        ),
    ] = None,
    merge: Annotated[
        bool, typer.Option(help="Also write a plain merged checkpoint to OUT/merged.")
    ] = False,
    restart_adaptor: Annotated[
        bool | None,
        typer.Option(
            "--restart-adaptor/--no-restart-adaptor",
            help="New domain: start the text adaptor at the target text's principal axes "
            "(default: on).",
        ),
    ] = None,
    last_item_gate: Annotated[
        bool | None,
        typer.Option(
            "--last-item-gate/--no-last-item-gate",
            help="A learned scalar (from 0) that mixes the last item's vector into the user's "
            "(default: on).",
        ),
    ] = None,
    text_fusion: Annotated[
        bool | None,
        typer.Option(
            "--text-fusion/--no-text-fusion",
            help="Add the last item's raw text similarity to the scores, at a weight picked "
            "on the validation rows after training (default: when the model reads text).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Adapt a pretrained model to a target dataset (a new domain or new behaviour)."""
    from metarec.config import finetune_settings
    from metarec.data.loaders.registry import load_dataset
    from metarec.workflows.finetune import finetune_checkpoint, write_finetune_report

    options = {
        "strategy": strategy,
        "optimizer": optimizer,
        "lora_rank": lora_rank,
        "item_ids": item_ids,
        "restart_adaptor": restart_adaptor,
        "id_rank": id_rank,
        "id_init": id_init,
        "last_item_gate": last_item_gate,
        "text_fusion": text_fusion,
    }
    train_flags = {"lr": lr, "max_epochs": max_epochs, "time_budget_s": time_budget, "seed": seed}
    settings, train = finetune_settings(config, options, train_flags)
    if not 0 < fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1], got {fraction}")
    _writable_folder(out)
    target = load_dataset(data)
    res, files = finetune_checkpoint(base, target, settings, train, out, fraction, merge)
    report = write_finetune_report(res, target, settings, fraction, out)
    _print_finetune(res, files, report)


def _print_finetune(res, files: dict, report: Path) -> None:
    for name, metrics in (("before", res.before), ("after", res.after)):
        typer.echo(f"{name:7s}" + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if res.fusion is not None:
        typer.echo(f"text fusion: weight {res.fusion.weight:g} (picked on validation)")
    size = res.params.get("adapter_bytes")
    typer.echo(
        f"trained {res.params['trainable']:,} of {res.params['total']:,} parameters "
        f"({res.params['fraction']:.2%}) in {res.state.train_seconds:.0f} s"
        + (f"; adapter {size / 1024:.1f} KiB on disk" if size else "")
    )
    for kind, path in files.items():
        typer.echo(f"{kind}: {path}")
    typer.echo(f"report: {report}")


@bench_app.command("transfer-scientific")
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

    _writable_folder(out)
    cfg = config_from_options(
        out, target, seed, base, source, strategy, domain_embedding, text_fusion, quick
    )
    res = run_transfer(cfg, log=_say)
    typer.echo(format_table(res["results"], list(res["metrics"])))
    typer.echo(f"report:       {res['report']}")
    typer.echo(f"metrics.json: {res['metrics_json']}")


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

    _writable_folder(out)
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
    _writable_folder(out)
    given = {"budget": budget, "seed": seed}
    cfg = LikeFitConfig(**{k: v for k, v in given.items() if v is not None})
    dataset = load_dataset(data)
    fit = fit_like_head(load_base(base, dataset), dataset, cfg, log=_say)
    typer.echo(f"{'split':<8}{'history-mean':>14}{'before':>10}{'after':>10}   (AUC)")
    for split, row in fit.auc.items():
        typer.echo(
            f"{split:<8}{row['history-mean']:>14.4f}{row['before']:>10.4f}{row['after']:>10.4f}"
        )
    typer.echo(f"fit loss {fit.fit_loss[0]:.4f} -> {fit.fit_loss[1]:.4f} on {fit.n_fit_rows} rows")
    save_like_head(out, fit.model, {**fit.info, "auc": fit.auc})
    typer.echo(f"like head: {out}")


@app.command()
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
) -> None:
    """Serve recommendations over HTTP, adapting to new users at request time."""
    import uvicorn

    from metarec.serving import ServeSettings, create_app
    from metarec.serving.registry import load_served_model

    for path in model:  # a missing or corrupt checkpoint stops start-up with its message
        load_served_model(path)
    settings = ServeSettings(
        models=tuple(model), db=db, api_key=api_key, registry=tuple(registry or ())
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
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
        log=_say,
        on_result=lambda res: typer.echo(f"version: {res.path}\nreport:  {res.report}"),
    )


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
