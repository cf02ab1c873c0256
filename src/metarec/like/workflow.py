"""P(like) as a product: fit the light like head on a labelled budget, save it, load it, predict.

``fit_like_head`` is ``metarec like fit``: the ``seqrec-head`` method of ``metarec bench
fewshot-like`` (same samples, features, start, L2-SP fit and scoring: ``like.fit``) over an
already trained SeqRec checkpoint, on ``budget`` samples of the dataset's train users, reporting
validation / test AUC before and after beside the history-mean baseline. The base may have seen
the validation and test users' behaviour (not their ratings) while pretraining; the clean
comparison is the bench protocol, which pretrains on the train users only.

A saved head is a folder (by default ``<base>/like-head``): ``like_head.safetensors`` (head
weights and the items' popularity feature) + ``like_head.json`` (config, versions, the sha256 of
that file and of the base checkpoint's weights). A head only loads over the base it was fit on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from metarec.atomic_io import atomic_json, save_tensors, sha256_file
from metarec.data.schema import Dataset
from metarec.errors import CheckpointError, ConfigError, DataError
from metarec.evaluation.metrics import auc
from metarec.like.fit import HeadFitConfig, ItemSpace, fit_head, like_features, predict
from metarec.like.head import LikeHead, LikeHeadConfig
from metarec.like.samples import (
    LikeSamples,
    build_like_samples,
    draw_budget,
    item_counts,
    split_users,
    with_history_targets,
)
from metarec.models.seqrec import SeqRec
from metarec.training.checkpoint import Checkpoint, load_checkpoint, read_json, versions

DEFAULT_BUDGET = 64  # labelled samples: the middle budget of the fewshot-like protocol
DEFAULT_SEED = 0
HEAD_DIR = "like-head"  # where ``metarec like fit`` writes and ``metarec serve`` looks
HEAD_WEIGHTS, HEAD_CONFIG = "like_head.safetensors", "like_head.json"
FORMAT = "metarec-like-head"
FORMAT_VERSION = 1
NEUTRAL_RATING = 3.5  # a history item without a rating (the rating features' centre)


@dataclass(frozen=True)
class LikeFitConfig:
    budget: int = DEFAULT_BUDGET
    seed: int = DEFAULT_SEED  # of the budget draw and the fit
    split_seed: int = 0  # of the 8:1:1 user split
    history: int = 10  # rated items before each target
    threshold: float = 3.0  # like = rating above it
    head: HeadFitConfig = field(default_factory=HeadFitConfig)

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 2:
            raise ConfigError(f"budget must be an integer >= 2, got {self.budget!r}")
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 1:
            raise ConfigError(f"history must be a positive integer, got {self.history!r}")


@dataclass(eq=False)
class LikeModel:
    """A like head and what its features need beside the base SeqRec (log_pop: (N,))."""

    head: LikeHead
    log_pop: np.ndarray
    base_sha256: str
    threshold: float = 3.0
    history: int = 10

    def space(self, base: SeqRec) -> ItemSpace:
        """The item features over ``base``'s catalogue; items added after the fit get the mean
        popularity (0 after standardising)."""
        n = base.config.n_items
        log_pop = np.zeros(n)
        log_pop[: min(n, len(self.log_pop))] = self.log_pop[:n]
        with torch.no_grad():
            seq = base.eval().items.all_items().cpu().numpy()
        return ItemSpace(seq, item_text(base), log_pop)


@dataclass
class LikeFit:
    model: LikeModel
    auc: dict[str, dict[str, float]]  # split -> {"history-mean", "before", "after"}
    fit_loss: tuple[float, float]  # BCE on the fit rows at the start and after the last step
    n_fit_rows: int
    info: dict


def item_text(base: SeqRec) -> np.ndarray:
    """(N, T) the base's frozen item text embeddings; (N, 0) for an id-only model."""
    if base.config.item_repr == "id":
        return np.zeros((base.config.n_items, 0), np.float32)
    return base.items.text_embeddings.cpu().numpy()


def base_sha256(ckpt: Checkpoint) -> str:
    sha = ckpt.meta.get("weights_sha256")
    if not isinstance(sha, str):
        raise CheckpointError(f"checkpoint {ckpt.path}: no weights_sha256 in its config")
    return sha


def load_base(path: str | Path, dataset: Dataset) -> Checkpoint:
    """The SeqRec checkpoint at ``path``; CheckpointError unless it knows ``dataset``'s items."""
    ckpt = load_checkpoint(path)
    if ckpt.model_type != "seqrec":
        raise CheckpointError(f"{path} holds a {ckpt.model_type} model; the like head needs seqrec")
    if list(ckpt.items) != list(dataset.items.ids):
        raise CheckpointError(
            f"checkpoint {path} was trained on another catalogue than {dataset.name} "
            f"({len(ckpt.items)} vs {dataset.n_items} items)"
        )
    return ckpt


def fit_like_head(
    ckpt: Checkpoint, dataset: Dataset, cfg: LikeFitConfig, log: Callable[[str], None] = print
) -> LikeFit:
    """The head fitted on ``cfg.budget`` samples of the train users, with AUC before/after."""
    samples = build_like_samples(dataset.interactions, cfg.history, cfg.threshold)
    users = split_users(samples.user, cfg.split_seed)
    draw = draw_budget(samples.of_users(users.train), cfg.budget, cfg.seed)
    counts = item_counts(dataset.interactions, users.train, dataset.n_items)
    base = ckpt.model.eval()
    space = ItemSpace.build(base, torch.from_numpy(item_text(base)), counts)
    rows = like_features(with_history_targets(draw, cfg.threshold), space, base)
    head = LikeHead(LikeHeadConfig(rows.item.shape[1]))
    splits = {"valid": samples.of_users(users.valid), "test": samples.of_users(users.test)}
    feats = {k: like_features(s, space, base) for k, s in splits.items()}
    scores = {k: {"history-mean": _auc(s, s.history_mean())} for k, s in splits.items()}
    for k, f in feats.items():
        scores[k]["before"] = _auc(splits[k], predict(head, f))
    losses = fit_head(head, rows, cfg.head)
    for k, f in feats.items():
        scores[k]["after"] = _auc(splits[k], predict(head, f))
    end = float(head.eval().loss(rows).detach())
    log(f"like head fitted on {cfg.budget} samples ({len(rows)} rows with their histories)")
    model = LikeModel(head, space.log_pop, base_sha256(ckpt), cfg.threshold, cfg.history)
    info = {"budget": cfg.budget, "seed": cfg.seed, "split_seed": cfg.split_seed}
    info |= {"dataset": dataset.name, "n_users": {k: len(getattr(users, k)) for k in splits}}
    start = losses[0] if losses else end
    return LikeFit(model, scores, (start, end), len(rows), info)


def _auc(samples: LikeSamples, scores: np.ndarray) -> float:
    if len(np.unique(samples.label)) < 2:
        raise DataError("an evaluation split holds one label only; AUC is undefined")
    return float(auc(samples.label, scores))


def predict_like(
    like: LikeModel,
    base: SeqRec,
    history: Sequence[int],
    ratings: Sequence[float],
    items: Sequence[int],
    space: ItemSpace | None = None,
) -> np.ndarray:
    """(C,) P(like) of each candidate ``items`` after one user's rated history (catalogue
    indices, oldest first; the last ``like.history`` are read): the bench's scoring path."""
    hist = np.asarray(history, np.int64)[-like.history :]
    rate = np.asarray(ratings, np.float32)[-like.history :]
    if len(hist) == 0 or len(hist) != len(rate):
        raise ValueError("predict_like needs a non-empty history with one rating per item")
    c = len(items)
    samples = LikeSamples(
        user=np.zeros(c, np.int64),
        history=np.tile(hist, (c, 1)),
        history_rating=np.tile(rate, (c, 1)),
        item=np.asarray(items, np.int64),
        rating=np.zeros(c, np.float32),
        label=np.zeros(c, np.float32),
        time=np.zeros(c, np.int64),
    )
    feats = like_features(samples, space or like.space(base), base)
    return 1.0 / (1.0 + np.exp(-predict(like.head, feats)))


def save_like_head(path: str | Path, like: LikeModel, info: dict | None = None) -> Path:
    """Write the head folder (weights first, then the JSON that names their sha256)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v for k, v in like.head.state_dict().items()}
    tensors["log_pop"] = torch.from_numpy(np.asarray(like.log_pop, np.float64))
    save_tensors(tensors, path / HEAD_WEIGHTS)
    cfg = like.head.config
    atomic_json(
        path / HEAD_CONFIG,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "base_weights_sha256": like.base_sha256,
            "weights_sha256": sha256_file(path / HEAD_WEIGHTS),
            "head_config": {"item_dim": cfg.item_dim, "prior": list(cfg.prior), "bias": cfg.bias},
            "threshold": like.threshold,
            "history": like.history,
            "versions": versions(),
            "fit": info or {},
        },
    )
    return path


def load_like_head(path: str | Path, base: Checkpoint) -> LikeModel:
    """The head folder at ``path`` over ``base``; CheckpointError naming the file when anything
    is missing, corrupt or from another base."""
    path = Path(path)
    config_path, weights_path = path / HEAD_CONFIG, path / HEAD_WEIGHTS
    config = read_json(config_path, "like-head config")
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: not a {FORMAT} version {FORMAT_VERSION} file "
            f"(format {config.get('format')!r}, version {config.get('format_version')!r})"
        )
    for key in ("base_weights_sha256", "weights_sha256", "head_config", "threshold", "history"):
        if key not in config:
            raise CheckpointError(f"{config_path}: missing key {key!r}")
    expected, actual = config["base_weights_sha256"], base_sha256(base)
    if expected != actual:
        raise CheckpointError(
            f"{config_path}: this like head was fit on base weights {expected}, but the base "
            f"checkpoint {base.path} has weights {actual}"
        )
    if not weights_path.is_file():
        raise CheckpointError(f"like-head weights {weights_path} are missing")
    if sha256_file(weights_path) != config["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path} does not match the sha256 in {config_path}: corrupt or replaced"
        )
    try:
        hc = config["head_config"]
        head = LikeHead(LikeHeadConfig(int(hc["item_dim"]), tuple(hc["prior"]), float(hc["bias"])))
        like = LikeModel(
            head, np.zeros(0), actual, float(config["threshold"]), int(config["history"])
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: invalid head_config: {e}") from e
    like.log_pop = _load_tensors(weights_path, head, base.model.config.n_items)
    return like


def _load_tensors(path: Path, head: LikeHead, n_items: int) -> np.ndarray:
    """Load the head's weights from ``path`` into ``head``; returns the (N,) log_pop."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    expected = {f"head.{k}": v for k, v in head.state_dict().items()}
    expected["log_pop"] = torch.zeros(n_items, dtype=torch.float64)
    if tensors.keys() != expected.keys():
        missing, extra = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
        raise CheckpointError(f"{path}: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(t.shape)}, "
                f"expected {tuple(expected[name].shape)}"
            )
    head.load_state_dict({k[len("head.") :]: v for k, v in tensors.items() if k != "log_pop"})
    head.eval()
    return tensors["log_pop"].numpy()
