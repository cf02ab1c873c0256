"""``metarec pretrain``, ``evaluate`` and ``finetune``: training jobs as flags over workflows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metarec.cli.common import DataListOpt, DataOpt, FusionOpt, GateOpt, writable_folder
from metarec.errors import ConfigError


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
    last_item_gate: GateOpt = None,
    text_fusion: FusionOpt = None,
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
    nproc: Annotated[
        int | None,
        typer.Option(
            help="Data-parallel over N processes: re-run this command under torchrun "
            "(DDP; --batch-size stays the global batch, split across them)."
        ),
    ] = None,
) -> None:
    """Pretrain the sequential model (next-item prediction) and write a checkpoint."""
    import sys

    from metarec.training import distributed

    if nproc is not None:
        raise typer.Exit(distributed.relaunch(nproc, sys.argv[1:]))
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
    writable_folder(out)
    dataset = load_combined(data or [], domain_tag)
    if cold_start_fold is not None:
        dataset = fold_train_dataset(dataset, cold_start_fold, n_folds, fold_seed)
    nid = prepare_next_item(leave_one_out(dataset), dataset.n_users, dataset.n_items, spec.max_len)
    with distributed.session(train.device) as here:  # a no-op outside torchrun
        res = pretrain_seqrec(
            dataset, nid, spec, train, out=out, resume=resume, overwrite=overwrite
        )
    if not here.is_main():
        return
    report = write_pretrain_report(res, dataset, spec, train.seed, out)
    typer.echo(
        f"best epoch {res.state.best_epoch} of {res.state.epoch} ({res.state.stopped}); "
        f"valid NDCG@10 {res.valid['NDCG@10']:.4f}, test NDCG@10 {res.test['NDCG@10']:.4f} "
        f"HR@10 {res.test['HR@10']:.4f}\ncheckpoint: {res.checkpoint}\nreport:     {report}"
    )


def evaluate(
    model: Annotated[Path, typer.Option(help="Checkpoint folder.")],
    data: DataOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json/report.md.")] = Path(
        "metarec-runs/evaluate"
    ),
) -> None:
    """Evaluate a checkpoint on the leave-one-out test users of a dataset (full ranking)."""
    from metarec.workflows.evaluate import evaluate_checkpoint

    writable_folder(out)
    result = evaluate_checkpoint(model, data, out)
    typer.echo(result["table"])
    typer.echo(f"report: {result['report']}")


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
    last_item_gate: GateOpt = None,
    text_fusion: FusionOpt = None,
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
    writable_folder(out)
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
