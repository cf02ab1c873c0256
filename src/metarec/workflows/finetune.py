"""Fine-tuning as one call: base checkpoint + target data -> adapted model, before/after figures.

What ``metarec finetune`` and the transfer benchmark call. The target is a dataset of its own
(another domain, or the base's own data with new behaviour); when its catalogue differs from
the base's, the model is moved onto it first (``adapt.transfer``), so the "before" figures are
the zero-shot ones: the pretrained encoder scoring the new items from their text alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from metarec.adapt.adapter_io import Adapter, adapter_size_bytes, save_adapter
from metarec.adapt.finetune import (
    FinetuneConfig,
    count_parameters,
    make_optimizer,
    merge_lora,
    prepare,
)
from metarec.adapt.transfer import to_catalogue
from metarec.data.schema import Dataset
from metarec.data.splits import Split, given, leave_one_out, user_fraction
from metarec.errors import CheckpointError, ConfigError
from metarec.evaluation.next_item import build_eval_set, evaluate_next_item
from metarec.models.seqrec import SeqRec
from metarec.text import encode_with_cache
from metarec.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_item_text,
)
from metarec.training.fusion import FusionFit, fit_text_fusion
from metarec.training.loop import TrainConfig, TrainState
from metarec.training.pretrain import NextItemData, prepare_next_item, train_seqrec
from metarec.workflows.pretrain import init_ids_from_cooccurrence

KS = (10, 50)
METRICS = ("Recall@10", "NDCG@10", "Recall@50", "NDCG@50")


def target_split(target: Dataset) -> Split:
    """The target's given split (its train/valid/test files), else leave-one-out."""
    return given(target) if target.interactions.split is not None else leave_one_out(target)


def target_data(
    target: Dataset, fraction: float = 1.0, seed: int = 0, max_len: int = 50
) -> NextItemData:
    """Training windows and validation rows of a ``fraction`` of the training users; the test
    rows of every user, each with that user's whole train + valid history as model input (only
    the training is few-shot: a test user's own history is always known)."""
    full = target_split(target)
    data = prepare_next_item(
        user_fraction(full, fraction, seed), target.n_users, target.n_items, max_len
    )
    if fraction == 1:
        return data
    history = full.train.concat(full.valid)
    return replace(data, test=build_eval_set(history, full.test, target.n_users, max_len))


def base_text_model(base: Checkpoint) -> str | None:
    """The text model a base checkpoint was pretrained with (None: the bundled one)."""
    spec = base.meta.get("model_spec")
    return spec.get("text_model") if isinstance(spec, dict) else None


def starting_model(
    base: Checkpoint, target: Dataset, config: FinetuneConfig, progress: bool = True
) -> tuple[SeqRec, bool]:
    """A fresh copy of the base model on the target's catalogue, and whether it was moved."""
    if not isinstance(base.model, SeqRec):
        raise CheckpointError(f"fine-tuning needs a SeqRec checkpoint, got {base.model_type}")
    if list(base.items) == list(target.items.ids):
        return _plain_copy(base.model), False
    text = encode_with_cache(target.items.text, model=base_text_model(base), progress=progress)
    return to_catalogue(base.model, text, config.uses_item_ids, config.restart_adaptor), True


def _plain_copy(model: SeqRec) -> SeqRec:
    """A plain SeqRec with ``model``'s weights (LoRA / adapter modules, if any, not carried)."""
    copy = SeqRec(model.config, getattr(model.items, "text_embeddings", None))
    copy.load_state_dict(model.state_dict())
    return copy


def evaluate(model: SeqRec, data: NextItemData) -> dict[str, float]:
    """Recall/NDCG at 10 and 50 on the test rows (full catalogue, history excluded)."""
    res = evaluate_next_item(model, data.test, data.n_items, ks=KS)
    return {k: res[k] for k in METRICS}


@dataclass
class FinetuneResult:
    model: SeqRec
    trainable: list[str]
    state: TrainState
    before: dict[str, float]
    after: dict[str, float]
    params: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    fusion: FusionFit | None = None  # the fitted text-fusion weight, with text_fusion


def finetune(
    model: SeqRec,
    data: NextItemData,
    config: FinetuneConfig,
    train: TrainConfig,
) -> FinetuneResult:
    """Apply ``config.strategy`` to ``model`` (in place) and train it on ``data``, selecting the
    epoch by validation NDCG@10 (the untrained start is epoch 0, kept when no epoch beats it);
    when ``config.fuses_text(model)``, then fit the fusion weight on the validation rows. Test
    figures before and after."""
    start = time.perf_counter()
    state = TrainState()
    if config.id_init == "cooccurrence":  # before LoRA wraps the table; counts as training time
        if not hasattr(model.items, "id_embedding"):
            raise ConfigError("id_init='cooccurrence' needs a model with item ids")
        state.train_seconds = init_ids_from_cooccurrence(model, data, train.seed)
    trainable = prepare(model, config)
    before = evaluate(model, data)
    n_train, n_total = count_parameters(model)
    optimizer = make_optimizer(model, config, train.lr, train.weight_decay)
    state, best = train_seqrec(  # the starting weights compete too: epoch 0
        model,
        data,
        replace(train, validate_start=True),
        optimizer=optimizer,
        state=state,
        desc=f"fine-tuning ({config.strategy})",
    )
    model.load_state_dict(best)
    fusion = fit_text_fusion(model, data.valid, data.n_items) if config.fuses_text(model) else None
    after = evaluate(model, data)
    params = {"trainable": n_train, "total": n_total, "fraction": n_train / n_total}
    return FinetuneResult(
        model, trainable, state, before, after, params, time.perf_counter() - start, fusion
    )


def plain_model(model: SeqRec, config: FinetuneConfig) -> SeqRec:
    """The fine-tuned model as a plain SeqRec, for serving: LoRA merged into the base weights,
    other strategies as they are. Bottleneck adapters add layers and cannot be merged."""
    if config.strategy == "adapter":
        raise ConfigError(
            "bottleneck adapters add layers to the model and cannot be merged into it; "
            "load the adapter on its base instead (metarec.adapt.adapter_io.load_adapter)"
        )
    return merge_lora(model) if config.strategy == "lora" else _plain_copy(model)


def finetune_checkpoint(
    base_path: Path,
    target: Dataset,
    config: FinetuneConfig,
    train: TrainConfig,
    out: Path,
    fraction: float = 1.0,
    merge: bool = False,
) -> tuple[FinetuneResult, dict]:
    """``metarec finetune``: fine-tune checkpoint ``base_path`` on ``target`` and write to
    ``out`` an adapter (or, for ``full``, a whole checkpoint), plus with ``merge`` a plain
    checkpoint in ``out/merged``. Returns the result and the files written."""
    base = load_checkpoint(base_path)
    model, moved = starting_model(base, target, config, progress=train.progress)
    data = target_data(target, fraction, train.seed, model.config.max_len)
    res = finetune(model, data, config, train)
    meta = {
        "dataset": target.name,
        "base_checkpoint": str(Path(base_path).resolve()),
        "finetune": config.to_dict(),
        "fraction": fraction,
        "train_config": train.to_dict(),
        "train_state": res.state.to_dict(),
        "metrics": {"before": res.before, "after": res.after},
        "text_fusion": None if res.fusion is None else res.fusion.to_dict(),
        "model_spec": base.meta.get("model_spec"),
    }
    files: dict[str, Path] = {}
    if config.strategy == "full":
        files["checkpoint"] = _save_plain(out, res.model, target, meta)
    else:
        adapter = Adapter(res.model, config, target.users, target.items.ids, meta)
        files["adapter"] = save_adapter(out, adapter, res.trainable, base, moved)
        res.params["adapter_bytes"] = adapter_size_bytes(out)
        if merge:
            files["merged"] = _save_plain(
                out / "merged", plain_model(res.model, config), target, meta
            )
    return res, files


def _save_plain(out: Path, model: SeqRec, target: Dataset, meta: dict) -> Path:
    path = save_checkpoint(out, Checkpoint(model, "seqrec", target.users, target.items.ids, meta))
    write_item_text(out, target.items.ids, target.items.text)
    return path


def write_finetune_report(
    res: FinetuneResult, target: Dataset, config: FinetuneConfig, fraction: float, out: Path
) -> Path:
    """metrics.json (rows "before" and the strategy) and report.md beside the written model."""
    from metarec.evaluation.report import (
        ResultRow,
        plot_learning_curves,
        write_metrics_json,
        write_report_md,
    )

    setting = {"strategy": config.strategy, "optimizer": config.optimizer, "fraction": fraction}
    names = {
        "trainable": "trainable_params",
        "total": "total_params",
        "fraction": "trainable_fraction",
    }
    cost = {**res.state.cost(), **{names.get(k, k): v for k, v in res.params.items()}}
    rows = [
        ResultRow("before", {**setting, "adapted": False}, res.before),
        ResultRow(f"finetune-{config.strategy}", {**setting, "adapted": True}, res.after, cost),
    ]
    write_metrics_json(out, "finetune", target.name, rows, [0])
    curve = plot_learning_curves({config.strategy: res.state.curve}, out / "learning_curve.png")
    intro = (
        f"Fine-tuning on {target.describe()} with strategy {config.strategy!r} and "
        f"{config.optimizer}; {fraction:.0%} of the training users; stopped: {res.state.stopped}. "
        f"{res.params['trainable']:,} of {res.params['total']:,} parameters trained "
        f"({res.params['fraction']:.2%})."
    )
    return write_report_md(out, "metarec finetune", intro, rows, [("Validation NDCG@10", curve)])
