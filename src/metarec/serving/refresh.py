"""Continual re-fine-tuning: new behaviour in the event store -> a new model version, gated.

``refresh`` reads the events received since the base model was made (or since ``since``),
keeps those on items the base model knows, splits them in time (the most recent ``window`` of
events is the evaluation window, the ``valid`` fraction before it picks the epoch), fine-tunes a
copy of the base on the rest, scores base and candidate on the evaluation window, and writes the
candidate as a new version folder in ``out`` (the service's registry folder). It is *accepted*
when its NDCG@10 is not worse than the base's by more than ``gate``; an accepted version can be
activated in a running service through its admin API (``activate_url``).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np

from metarec.data.schema import Dataset, Interactions, ItemCatalog
from metarec.data.sequences import group_positions, in_time_order
from metarec.data.splits import Split, temporal_fraction
from metarec.errors import CheckpointError, ConfigError, DataError
from metarec.evaluation.next_item import evaluate_next_item
from metarec.evaluation.report import ResultRow, write_metrics_json, write_report_md
from metarec.serving.registry import checkpoint_version
from metarec.serving.store import NEGATIVE_TYPES, Event, open_store
from metarec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from metarec.training.fusion import fit_text_fusion
from metarec.training.loop import TrainConfig, make_optimizer
from metarec.training.pretrain import prepare_next_item, train_seqrec

REPORTED = ("HR@10", "NDCG@10", "MRR@10")
MIN_EVENTS = 20


@dataclass(frozen=True)
class RefreshConfig:
    db: str
    base: Path
    out: Path  # registry folder: the new version is written to out/<version>/
    since: float | None = None  # events received after this; None: the base's refreshed_until
    window: float = 0.1  # the most recent fraction of the events: the evaluation window
    valid: float = 0.1  # the fraction before it: picks the best epoch
    gate: float = 0.0  # accepted when new NDCG@10 >= base NDCG@10 - gate
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            batch_size=32, lr=5e-4, max_epochs=20, patience=3, time_budget_s=300
        )
    )
    activate_url: str | None = None  # e.g. http://127.0.0.1:8000
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.window < 1 or not 0 <= self.valid < 1 or self.window + self.valid >= 1:
            raise ConfigError("window and valid must be fractions in (0, 1) with a sum below 1")
        if self.gate < 0:
            raise ConfigError(f"gate must be >= 0, got {self.gate}")


@dataclass
class RefreshResult:
    version: str
    path: Path
    accepted: bool
    activated: bool
    base: dict[str, float]
    new: dict[str, float]
    events: int
    report: Path


def events_dataset(events: list[Event], items: list[str], text: list[str]) -> Dataset:
    """The events as a Dataset over the model's catalogue; events on unknown items and
    negative events are left out; users get contiguous indices in first-seen order."""
    index = {raw: i for i, raw in enumerate(items)}
    kept = [e for e in events if e.item in index and e.type not in NEGATIVE_TYPES]
    users: dict[str, int] = {}
    for e in kept:
        users.setdefault(e.user, len(users))
    inter = Interactions(
        np.array([users[e.user] for e in kept], dtype=np.int64),
        np.array([index[e.item] for e in kept], dtype=np.int64),
        np.floor([e.timestamp for e in kept]).astype(np.int64),
    ).sort_by_user_time()
    return Dataset("events", inter, list(users), ItemCatalog(list(items), list(text)))


def _next_items(split: Split) -> Split:
    """Each user's first interaction in the validation and in the evaluation window: the next
    item after everything before it (one target per user, as full-ranking evaluation takes)."""

    def first(inter: Interactions) -> Interactions:
        inter = in_time_order(inter)
        return inter.take(group_positions(inter.user) == 0)

    return Split(split.name, split.train, first(split.valid), first(split.test))


def refresh(cfg: RefreshConfig, log: Callable[[str], None] = print) -> RefreshResult:
    base = load_checkpoint(cfg.base)
    if base.model_type != "seqrec":
        raise CheckpointError(f"{cfg.base} holds a {base.model_type} model; refresh needs seqrec")
    store = open_store(cfg.db)
    since = cfg.since if cfg.since is not None else float(base.meta.get("refreshed_until", 0.0))
    events = store.events_since(since)
    until = store.last_received()
    text = [""] * len(base.items)
    ds = events_dataset(events, base.items, text)
    n = len(ds.interactions)
    log(f"{len(events):,} events since {since:.0f}; {n:,} on known items from {ds.n_users:,} users")
    if n < MIN_EVENTS or ds.n_users < 2:
        raise DataError(
            f"too few new events to refresh on: {n} on known items from {ds.n_users} users "
            f"(need {MIN_EVENTS} from 2 users)"
        )
    split = _next_items(temporal_fraction(ds, cfg.valid, cfg.window))
    max_len = base.model.config.max_len
    data = prepare_next_item(split, ds.n_users, len(base.items), max_len)
    if len(data.test.targets) == 0:
        raise DataError("the evaluation window holds no user with earlier history")
    before = evaluate_next_item(base.model, data.test, data.n_items)
    model = copy.deepcopy(base.model)
    config = replace(cfg.train, progress=False)
    state, best = train_seqrec(model, data, config, optimizer=make_optimizer(model, config))
    model.load_state_dict(best)
    model.eval()
    fusion = None  # a fused model's weight is refitted on the refresh's validation rows
    if model.config.text_fusion:
        fusion = fit_text_fusion(model, data.valid, data.n_items).to_dict()
    after = evaluate_next_item(model, data.test, data.n_items)
    accepted = after["NDCG@10"] >= before["NDCG@10"] - cfg.gate
    meta = {
        **{k: v for k, v in base.meta.items() if k not in ("metrics",)},
        "refreshed_from": checkpoint_version(Path(cfg.base)),
        "refreshed_until": until,
        "refresh": {
            "events": n,
            "base": before,
            "new": after,
            "accepted": accepted,
            "text_fusion": fusion,
        },
    }
    path, version = _save_version(cfg.out, replace(base, model=model, meta=meta))
    activated = False
    if accepted and cfg.activate_url:
        activated = _activate(cfg.activate_url, version, cfg.api_key)
    report = _report(cfg, path, before, after, accepted, activated, n, state.cost())
    verdict = "accepted" if accepted else f"rejected by the gate ({cfg.gate:g})"
    log(
        f"version {version}: NDCG@10 {before['NDCG@10']:.4f} -> {after['NDCG@10']:.4f} "
        f"on the last {cfg.window:.0%} of events, {verdict}" + ("; activated" if activated else "")
    )
    return RefreshResult(version, path, accepted, activated, before, after, n, report)


def _save_version(out: Path, ckpt: Checkpoint) -> tuple[Path, str]:
    """Write the checkpoint to ``out/<version>`` (the version named by its weights)."""
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".incoming-{time.time_ns()}"
    save_checkpoint(staging, ckpt)
    version = checkpoint_version(staging)
    final = out / version
    if final.exists():  # the same weights are already registered
        shutil.rmtree(staging)
    else:
        staging.rename(final)
    return final, version


def _activate(url: str, version: str, api_key: str | None) -> bool:
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        r = httpx.post(f"{url.rstrip('/')}/models/{version}/activate", headers=headers, timeout=60)
    except httpx.HTTPError as e:
        raise DataError(f"could not reach the service at {url} to activate {version}: {e}") from e
    if r.status_code != 200:
        raise DataError(f"the service at {url} refused to activate {version}: {r.text[:300]}")
    return True


def _report(cfg, path, before, after, accepted, activated, n, cost) -> Path:
    rows = [
        ResultRow("base", {"window": cfg.window}, {k: before[k] for k in REPORTED}),
        ResultRow("refreshed", {"window": cfg.window}, {k: after[k] for k in REPORTED}, cost),
    ]
    extra = {"accepted": accepted, "activated": activated, "events": n, "gate": cfg.gate}
    write_metrics_json(path, "refresh", "events", rows, [cfg.train.seed], extra)
    intro = (
        f"Re-fine-tuned {cfg.base} on {n:,} events from the store; both models scored on the "
        f"most recent {cfg.window:.0%} of those events (temporal split, full ranking). "
        f"Gate: NDCG@10 may drop by at most {cfg.gate:g}. Result: "
        + ("accepted" if accepted else "rejected")
        + (", activated." if activated else ".")
    )
    return write_report_md(path, "metarec refresh", intro, rows)
