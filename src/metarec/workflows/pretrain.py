"""Pretraining as one call: text features, model, loop, checkpoint, resume.

This is what ``metarec pretrain`` and the benchmarks call; it composes the data split, the text
encoder, the model and the training loop, and owns none of their logic.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from metarec.data.schema import Dataset
from metarec.data.splits import user_sequences
from metarec.errors import CheckpointError, ConfigError
from metarec.evaluation.next_item import evaluate_next_item
from metarec.models import SeqRec, SeqRecConfig, SeqRecOptions
from metarec.text import cache_key, encode_with_cache
from metarec.training import distributed
from metarec.training.checkpoint import (
    CONFIG,
    Checkpoint,
    load_checkpoint,
    read_json,
    save_checkpoint,
    write_item_text,
)
from metarec.training.cooccurrence import cooccurrence_embeddings
from metarec.training.fusion import FusionFit, fit_text_fusion
from metarec.training.loop import TrainConfig, TrainState, make_optimizer
from metarec.training.pretrain import NextItemData, train_seqrec
from metarec.training.resume import has_resume_state, load_resume_state, save_resume_state

ID_INITS = ("random", "cooccurrence")


@dataclass(frozen=True)
class ModelSpec(SeqRecOptions):
    """A model to pretrain: the architecture (``SeqRecOptions``, its defaults the model's) plus
    what only pretraining needs. The catalogue size and text width come from the data.
    The product's choice of these is ``DEFAULT_SPEC``."""

    text_model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    # "cooccurrence": id embeddings start from the training sequences' item co-occurrence
    # (training/cooccurrence.py) instead of random vectors; pretraining only
    id_init: str = "random"
    # a learned vector per domain of a multi-domain dataset (zero at the start), added to each
    # of its items' vectors; a new domain gets its own row when the model moves there
    domain_embedding: bool = False

    def __post_init__(self) -> None:
        if self.id_init not in ID_INITS:
            raise ConfigError(f"id_init must be one of {ID_INITS}, got {self.id_init!r}")
        if self.id_init != "random" and self.item_repr == "text":
            raise ConfigError(f"id_init={self.id_init!r} needs id embeddings (item_repr id|hybrid)")
        # validate now, before data and text work (identity needs dim == the text width)
        self.seqrec_config(n_items=1, text_dim=self.dim if self.text_init != "random" else 1)

    def with_items(self, item_repr: str) -> ModelSpec:
        """This spec with another item representation, less the settings that representation
        has no use for: a text adaptor's start for id-only, an id start for text-only."""
        unused = {"id": {"text_init": "random"}, "text": {"id_init": "random"}}
        return replace(self, item_repr=item_repr, **unused.get(item_repr, {}))

    def seqrec_config(self, n_items: int, text_dim: int, n_domains: int = 1) -> SeqRecConfig:
        """The model config; ``n_domains``: the dataset's domain count (used only with
        ``domain_embedding``)."""
        d = {f.name: getattr(self, f.name) for f in fields(SeqRecOptions)}
        d["n_domains"] = max(1, n_domains) if self.domain_embedding else 0
        try:
            return SeqRecConfig(n_items=n_items, text_dim=text_dim, **d)
        except ValueError as e:
            raise ConfigError(str(e)) from e


# The product's pretraining recipe: what warm-ml validated for metarec's text + id model
# (bench/README.md, 2026-12-02/03: test NDCG@10 0.0630 over 3 seeds, 1.75x RecBole's SASRec):
# id vectors started from item co-occurrence, a linear text adaptor along the catalogue text's
# principal axes, no id dropout; then six epochs of cosine decay in batches of 8.
# ``metarec pretrain`` starts from these; a protocol that departs says so in its own config.
DEFAULT_SPEC = ModelSpec(id_init="cooccurrence", text_init="pca")
DEFAULT_TRAIN = TrainConfig(batch_size=8, lr=2e-3, schedule="cosine", max_epochs=6)


@dataclass
class TextFeatures:
    embeddings: torch.Tensor | None  # (N, T) or None for id-only models
    info: dict = field(default_factory=dict)  # text model, cache key, encode stats


def item_text_features(dataset: Dataset, spec: ModelSpec, progress: bool = True) -> TextFeatures:
    """Encode the catalogue's text (cached on disk) unless the model is id-only."""
    if spec.item_repr == "id":
        return TextFeatures(None, {"text_model": None})
    emb, stats = encode_with_cache(
        dataset.items.text, model=spec.text_model, progress=progress, return_stats=True
    )
    info = {
        "text_model": spec.text_model or "all-MiniLM-L6-v2",
        "text_cache_key": cache_key(spec.text_model),
        "text_encode": str(stats),
    }
    return TextFeatures(emb, info)


def build_seqrec(spec: ModelSpec, dataset: Dataset, text: TextFeatures) -> SeqRec:
    text_dim = 0 if text.embeddings is None else text.embeddings.shape[1]
    n_domains = len(dataset.domains)
    model = SeqRec(spec.seqrec_config(dataset.n_items, text_dim, n_domains), text.embeddings)
    if spec.domain_embedding:
        model.items.set_item_domains(torch.from_numpy(item_domains(dataset)))
    return model


def item_domains(dataset: Dataset) -> np.ndarray:
    """(n_items,) each item's domain index: the catalogue's own (a combined dataset), else from
    the rows it appears in (0 for a single-domain dataset, and for an item no row names)."""
    if dataset.items.domain is not None:
        return dataset.items.domain.astype(np.int64)
    domains = np.zeros(dataset.n_items, dtype=np.int64)
    inter = dataset.interactions
    if inter.domain is not None:
        domains[inter.item] = inter.domain
    return domains


def init_ids_from_cooccurrence(model: SeqRec, data: NextItemData, seed: int = 0) -> float:
    """Overwrite the id vectors of items that co-occur in ``data.train`` with their PPMI SVD
    vectors (the rest keep their random start); returns the seconds it took."""
    start = time.perf_counter()
    indptr, items = user_sequences(data.train, data.n_users)
    table = model.items.id_embedding.weight
    vectors, covered = cooccurrence_embeddings(
        indptr, items, data.n_items, table.shape[1], seed=seed
    )
    with torch.no_grad():
        table[covered] = vectors[covered].to(table.device, table.dtype)
    return time.perf_counter() - start


@dataclass
class PretrainResult:
    model: SeqRec
    state: TrainState
    valid: dict[str, float]
    test: dict[str, float]
    checkpoint: Path | None = None
    fusion: FusionFit | None = None  # the fitted text-fusion weight, with spec.text_fusion


def _checkpoint(model, dataset, spec, config, state, text, metrics) -> Checkpoint:
    meta = {
        "dataset": dataset.name,
        "dataset_source": str(dataset.source),
        "model_spec": asdict(spec),
        "train_config": config.to_dict(),
        "train_state": state.to_dict(),
        "metrics": metrics,
        **text.info,
    }
    if "cold_start_fold" in dataset.extra:  # trained on one fold's train users only
        meta["cold_start_fold"] = dataset.extra["cold_start_fold"]
    return Checkpoint(model, "seqrec", dataset.users, dataset.items.ids, meta)


# Settings that may change between a run and its resumption; any other change is refused.
RESUMABLE_CHANGES = {"max_epochs", "time_budget_s", "progress", "device"}


def _resume(out: Path, model: SeqRec, optimizer, dataset: Dataset, config: TrainConfig):
    saved = read_json(out / CONFIG, "checkpoint config")
    if (
        saved.get("model_config") != model.config.to_dict()
        or saved.get("items") != dataset.items.ids
    ):
        raise CheckpointError(
            f"cannot resume from {out}: it was trained with another model config or catalogue"
        )
    before = saved.get("train_config") if isinstance(saved.get("train_config"), dict) else {}
    changed = sorted(
        k for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES and before.get(k) != v
    )
    if changed:
        raise CheckpointError(
            f"cannot resume from {out} with other training settings ({', '.join(changed)}); "
            "only max_epochs, time_budget_s and device may change"
        )
    best = load_checkpoint(out).model.state_dict()
    raw = load_resume_state(out, model, optimizer)
    try:
        return TrainState.from_dict(raw), best
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"resume state in {out} is invalid: {e}") from e


def _prepare_out(out: Path | None, resume: bool, overwrite: bool) -> None:
    if out is None:
        if resume:
            raise CheckpointError("nothing to resume: no checkpoint folder given")
        return
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a folder")
    if resume and not has_resume_state(out):
        raise CheckpointError(f"nothing to resume: {out} holds no resume state")
    if not resume and not overwrite and (out / CONFIG).exists():
        raise CheckpointError(
            f"{out} already holds a checkpoint; use --resume to continue it or --overwrite "
            "to replace it"
        )


def pretrain_seqrec(
    dataset: Dataset,
    data: NextItemData,
    spec: ModelSpec,
    config: TrainConfig,
    out: Path | None = None,
    resume: bool = False,
    text: TextFeatures | None = None,
    overwrite: bool = False,
) -> PretrainResult:
    """Pretrain SeqRec on ``data``; with ``out``, checkpoint there (and resume from it).

    The best checkpoint is written whenever validation improves and the resume state after it,
    so an interrupted run can continue with ``resume=True``. Under torchrun (inside
    ``distributed.session``) the loop is data-parallel and only rank 0 writes, evaluates and
    returns metrics; the other ranks return the same model with empty ``valid`` / ``test``.
    """
    out = None if out is None else Path(out)
    here = distributed.current()
    _prepare_out(out, resume, overwrite)
    if text is None:
        with distributed.main_first():  # rank 0 fills the embedding cache, the others read it
            text = item_text_features(dataset, spec, config.progress and here.is_main())
    torch.manual_seed(config.seed)
    model = build_seqrec(spec, dataset, text)
    optimizer = make_optimizer(model, config)
    # under torchrun every rank reads the resume state (its optimizer needs it) ...
    state, best = _resume(out, model, optimizer, dataset, config) if resume else (None, None)
    # ... but only rank 0 starts the id vectors: DDP copies rank 0's weights to the others
    if state is None and spec.id_init == "cooccurrence" and here.is_main():
        state = TrainState(train_seconds=init_ids_from_cooccurrence(model, data, config.seed))
    if out is not None and here.is_main():  # the catalogue's text travels with the checkpoint
        out.mkdir(parents=True, exist_ok=True)
        write_item_text(out, dataset.items.ids, dataset.items.text)

    def on_epoch(st: TrainState, m, opt) -> None:
        if out is not None:
            if st.best_epoch == st.epoch:
                save_checkpoint(out, _checkpoint(m, dataset, spec, config, st, text, {}))
            save_resume_state(out, m, opt, st.to_dict())

    state, best = train_seqrec(
        model,
        data,
        config,
        optimizer=optimizer,
        state=state,
        best_weights=best,
        on_epoch=on_epoch,
        desc=f"pretraining {spec.item_repr}",
    )
    model.load_state_dict(best)
    if not here.is_main():  # rank 0 evaluates, fits the fusion weight and writes; the others
        distributed.barrier()  # wait for it, so that a resume right after reads its last state
        return PretrainResult(model, state, {}, {})
    if spec.text_fusion:  # its fit scores the validation rows at the chosen weight too
        fusion = fit_text_fusion(model, data.valid, data.n_items)
        valid = fusion.metrics
    else:
        fusion, valid = None, evaluate_next_item(model, data.valid, data.n_items)
    test = evaluate_next_item(model, data.test, data.n_items)
    path = None
    if out is not None:
        metrics = {"valid": valid, "test": test}
        if fusion is not None:
            metrics["text_fusion"] = fusion.to_dict()
        path = save_checkpoint(out, _checkpoint(model, dataset, spec, config, state, text, metrics))
    distributed.barrier()
    return PretrainResult(model, state, valid, test, path, fusion)


def write_pretrain_report(
    res: PretrainResult, dataset: Dataset, spec: ModelSpec, seed: int, out: Path
) -> Path:
    """metrics.json + report.md (with the learning curve) beside a pretrained checkpoint."""
    from metarec.evaluation.report import (
        ResultRow,
        plot_learning_curves,
        write_metrics_json,
        write_report_md,
    )

    name = "metarec" if spec.item_repr != "id" else "sasrec-id"
    row = ResultRow(
        method=name,
        setting={"split": "leave-one-out", "item_repr": spec.item_repr, "loss": spec.loss},
        metrics={k: res.test[k] for k in ("HR@10", "NDCG@10", "MRR@10")},
        cost=res.state.cost(),
    )
    curve = plot_learning_curves({name: res.state.curve}, out / "learning_curve.png")
    write_metrics_json(out, "pretrain", dataset.name, [row], [seed])
    intro = (
        f"Pretraining on {dataset.name}: leave-one-out split, full-catalogue ranking of each "
        f"user's last item. Stopped: {res.state.stopped}."
    )
    return write_report_md(out, "metarec pretrain", intro, [row], [("Validation NDCG@10", curve)])
