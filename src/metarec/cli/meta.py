"""``metarec meta-train`` and ``adapt``: meta-learning a model and adapting it to one user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metarec.cli.common import DataOpt, say, writable_folder


def meta_train(
    base: Annotated[Path, typer.Option(help="Pretrained checkpoint folder (metarec pretrain).")],
    out: Annotated[Path, typer.Option(help="Folder for the meta checkpoint and its report.")],
    data: DataOpt = None,
    algorithm: Annotated[
        str | None,
        typer.Option(
            help="maml | fomaml | reptile | meta-sgd | anil | learned-optim; several "
            "comma-separated, or auto (every one), each meta-trained and judged"
        ),
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
    choose: Annotated[
        bool | None,
        typer.Option(
            "--choose/--no-choose",
            help="Judge no adaptation, plain fine-tuning and the meta-learner(s) on held-out "
            "users and record the choice (default: on; [choice] choose in --config).",
        ),
    ] = None,
) -> None:
    """Meta-train a pretrained model on a cold-start fold's train users, choose how to adapt
    on held-out users; write the meta checkpoint, metrics.json and report.md."""
    from metarec.config import meta_train_settings
    from metarec.data.loaders.registry import load_dataset
    from metarec.evaluation.report import format_table
    from metarec.workflows.meta_train import meta_train_fold

    specs, tasks, train, choice = meta_train_settings(
        config,
        {"algorithm": algorithm, "k": k, "fold": fold},
        {"policy": policy},
        {"max_steps": max_steps, "time_budget_s": time_budget, "seed": seed, "device": device},
        {"choose": choose},
    )
    writable_folder(out)
    dataset = load_dataset(data)
    run = meta_train_fold(base, dataset, specs, tasks, train, out, overwrite, say, choice)
    typer.echo(format_table(run.rows, ["NDCG@10", "Recall@10"]))
    chosen = f"not judged (--no-choose): adapts with {next(iter(run.trained))}"
    if run.choice is not None and run.measured is not None:
        m = run.measured
        ci = "-" if m.ci95 is None else f"[{m.ci95[0]:+.4f}, {m.ci95[1]:+.4f}]"
        chosen = f"{run.choice.summary()}\n                 on the cold users: gain {m.gain:+.4f}"
        chosen += f", 95% CI {ci}"
    for name, r in run.trained.items():
        typer.echo(
            f"{name}: best meta-validation {train.select} {r.best_metric:.4f} at step "
            f"{r.best_step} of {r.step} ({r.stopped})"
        )
    typer.echo(f"adaptation:      {chosen}\nmeta checkpoint: {out}\nreport:          {run.report}")


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
    """Show the top-N before and after adapting a meta-trained model to a user's items, as the
    model chose at meta-training (the method, its gain and 95% CI are printed first)."""
    from metarec.meta.checkpoint import load_meta_checkpoint
    from metarec.workflows.meta_train import before_after

    raw = [part for arg in ids for part in arg.split(",") if part]
    typer.echo(before_after(load_meta_checkpoint(model), raw, top, steps))
