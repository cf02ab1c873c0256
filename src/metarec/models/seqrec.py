"""SeqRec: a SASRec-style causal transformer over a user's history, scoring the full catalogue.

The model is plain: it knows nothing of meta-learning, PEFT or training loops. ``loss`` and
``score`` are the whole contract (see docs/architecture.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from metarec.models.batch import PAD, SeqBatch
from metarec.models.item_tower import ItemTower, ItemTowerConfig
from metarec.models.surfaces import FUSION_WEIGHT, LAST_ITEM_GATE, AdaptationSurfaces

LOSSES = ("ce", "sampled", "bce")
# AdamW rate of the last-item gate when a model is trained: a single scalar that has to travel
# from 0 to values of order 1 in a few epochs (fine-tuning: FinetuneConfig.gate_lr)
GATE_LR = 0.03


@dataclass(frozen=True)
class SeqRecOptions:
    """The architecture a user chooses; its defaults are the model's, written once here.

    ``SeqRecConfig`` adds what the data decides (catalogue size, text width, domains), and the
    pretraining spec (``workflows.pretrain.ModelSpec``) adds how training starts."""

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    item_repr: str = "hybrid"  # "id" | "text" | "hybrid"
    text_hidden: int = 0  # 0: linear text adaptor; > 0: MLP hidden width
    id_dropout: float = 0.0  # hybrid: fraction of items whose id part is dropped in training
    # "ce": softmax over the full catalogue; "sampled": softmax over the target and
    # ``n_negatives`` uniform negatives shared by the batch; "bce": pointwise, sampled negatives
    loss: str = "ce"
    n_negatives: int = 1  # "bce": negatives per position; "sampled": per batch
    # "identity": item vectors start as the text embeddings; "pca": a linear adaptor along the
    # catalogue text's principal axes (text similarity is there before any training)
    text_init: str = "random"
    # a learned scalar g (starting at 0) adds g x the item's own vector to each position's
    # output, so the model can learn how much the next item resembles the last one (on Amazon
    # data the text similarity to the last item alone is a strong ranker)
    last_item_gate: bool = False
    # a fixed weight w (a buffer, 0 until ``training.fusion.fit_text_fusion`` sets it on
    # validation data) adds w x the cosine between the last item's and each candidate's raw text
    # embeddings to the scores: the untrained text similarity, which ranks well on catalogues
    # where the next item reads like the last one, fused with what the model learned
    text_fusion: bool = False


@dataclass(frozen=True, kw_only=True)
class SeqRecConfig(SeqRecOptions):
    n_items: int
    text_dim: int = 0
    n_domains: int = 0  # > 0: a learned vector per domain added to its items' vectors

    def __post_init__(self) -> None:
        if self.n_heads < 1 or self.dim < 1:
            raise ValueError(f"dim and n_heads must be positive, got {self.dim}, {self.n_heads}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_len < 1 or self.n_layers < 1 or self.n_negatives < 1:
            raise ValueError("max_len, n_layers and n_negatives must be positive")
        self.tower_config()  # validates item_repr / text_dim
        if self.text_fusion and self.item_repr == "id":
            raise ValueError("text_fusion needs item text (item_repr 'text' or 'hybrid'), got 'id'")

    def tower_config(self) -> ItemTowerConfig:
        return ItemTowerConfig(
            self.n_items,
            self.dim,
            self.item_repr,
            self.text_dim,
            self.text_hidden,
            self.id_dropout,
            self.text_init,
            self.n_domains,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, H, T, d)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention then feed-forward, each with a residual."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        return x + self.drop(self.ff(self.norm2(x)))


class SeqRec(nn.Module):
    """Causal transformer user encoder + item tower; scores are dot products."""

    def __init__(self, config: SeqRecConfig, text_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.items = ItemTower(config.tower_config(), text_embeddings)
        self.position = nn.Embedding(config.max_len, config.dim)
        self.input_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.position.weight, std=0.02)
        if config.last_item_gate:
            setattr(self, LAST_ITEM_GATE, nn.Parameter(torch.zeros(())))
        if config.text_fusion:
            self.register_buffer(FUSION_WEIGHT, torch.zeros(()))

    def adaptation_surfaces(self) -> AdaptationSurfaces:
        """The head is the last transformer block and the final LayerNorm; LoRA targets the
        attention and feed-forward projections (and, on a new catalogue, the text adaptor); the
        user vector shifts the final LayerNorm's bias (every position's output, not items)."""
        has_ids, has_text = hasattr(self.items, "id_embedding"), hasattr(self.items, "text_proj")
        return AdaptationSurfaces(
            head=(f"blocks.{len(self.blocks) - 1}", "norm"),
            lora=("blocks.*.attn.qkv", "blocks.*.attn.out", "blocks.*.ff.0", "blocks.*.ff.3"),
            item_lora=("items.text_proj*",),
            user_vector=("norm.bias",),
            text_adaptor="items.text_proj" if has_text else None,
            id_table="items.id_embedding" if has_ids else None,
        )

    def encode(self, items: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices -> (B, L, D) hidden states; position t sees items[:, :t+1]."""
        items = items[:, -self.config.max_len :]
        t = items.shape[1]
        valid = items != PAD  # (B, T)
        own = item_vectors[items.clamp(min=0)] * valid.unsqueeze(-1)  # (B, T, D)
        x = own * math.sqrt(self.config.dim) + self.position.weight[-t:]
        x = self.input_drop(x)
        causal = torch.ones(t, t, dtype=torch.bool, device=items.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=items.device)
        allowed = (causal & valid[:, None, :]) | eye  # (B, T, T): no row is fully masked
        for block in self.blocks:
            x = block(x, allowed.unsqueeze(1))
        out = self.norm(x) * valid.unsqueeze(-1)
        if self.config.last_item_gate:
            out = out + self.last_item_gate * own
        return out

    def user_vectors(self, batch: SeqBatch, item_vectors: torch.Tensor) -> torch.Tensor:
        """(B, D): the hidden state at the most recent position."""
        return self.encode(batch.items, item_vectors)[:, -1]

    def score(
        self,
        batch: SeqBatch,
        items: torch.Tensor | None = None,
        item_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N) scores over the catalogue, or (B, M) over ``items`` (M,) / (B, M).

        ``item_vectors`` (N, D), when given, stands in for ``self.items.all_items()``: callers that
        score many batches with an unchanged item tower compute it once.
        """
        if item_vectors is None:
            item_vectors = self.items.all_items()  # (N, D)
        user = self.user_vectors(batch, item_vectors)  # (B, D)
        if items is None:
            scores = user @ item_vectors.T
        else:
            cand = item_vectors[items]  # (M, D) or (B, M, D)
            scores = user @ cand.T if cand.dim() == 2 else torch.einsum("bd,bmd->bm", user, cand)
        if self.config.text_fusion:
            scores = scores + self.text_fusion_weight * self.last_item_text_similarity(batch, items)
        return scores

    def retrieval_keys(self, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """(N, E) one key per catalogue item such that ``score(batch)`` equals
        ``retrieval_queries(batch) @ retrieval_keys().T``: the item vectors, followed with text
        fusion by each item's unit text embedding. What a nearest-neighbour index holds; it
        depends on the item tower only, so adapting the user side leaves it valid."""
        if item_vectors is None:
            item_vectors = self.items.all_items()
        if not self.config.text_fusion:
            return item_vectors
        return torch.cat([item_vectors, F.normalize(self.items.text_embeddings, dim=1)], dim=1)

    def retrieval_queries(
        self, batch: SeqBatch, item_vectors: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, E) the query of each row against ``retrieval_keys`` (inner product): the user
        vector, followed with text fusion by the weighted unit text of the last history item."""
        if item_vectors is None:
            item_vectors = self.items.all_items()
        user = self.user_vectors(batch, item_vectors)
        if not self.config.text_fusion:
            return user
        unit = F.normalize(self.items.text_embeddings, dim=1)
        last = batch.items[:, -1]
        query = unit[last.clamp(min=0)] * (last != PAD).unsqueeze(-1)
        return torch.cat([user, self.text_fusion_weight * query], dim=1)

    def last_item_text_similarity(
        self, batch: SeqBatch, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cosine between the raw text embeddings of each row's last history item and of the
        catalogue (B, N), or of ``items`` (M,) / (B, M); 0 for a row with an empty history."""
        unit = F.normalize(self.items.text_embeddings, dim=1)  # (N, T)
        last = batch.items[:, -1]
        query = unit[last.clamp(min=0)] * (last != PAD).unsqueeze(-1)  # (B, T)
        if items is None:
            return query @ unit.T
        cand = unit[items]
        return query @ cand.T if cand.dim() == 2 else torch.einsum("bt,bmt->bm", query, cand)

    def loss(self, batch: SeqBatch, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item loss at every position with a target (``item_vectors`` as in ``score``)."""
        if item_vectors is None:
            item_vectors = self.items.all_items()  # (N, D)
        hidden = self.encode(batch.items, item_vectors)  # (B, L, D)
        has_target = batch.targets != PAD  # (B, L)
        h = hidden[has_target]  # (M, D)
        targets = batch.targets[has_target]  # (M,)
        if self.config.loss == "ce" or (self.config.loss == "sampled" and batch.negatives is None):
            return F.cross_entropy(h @ item_vectors.T, targets)
        if self.config.loss == "sampled":
            return sampled_softmax_loss(h, targets, batch.negatives, item_vectors)
        negatives = batch.negatives[has_target]  # (M, S)
        pos = (h * item_vectors[targets]).sum(-1, keepdim=True)  # (M, 1)
        neg = torch.einsum("md,msd->ms", h, item_vectors[negatives])  # (M, S)
        logits = torch.cat([pos, neg], dim=1)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)


def sampled_softmax_loss(
    h: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, item_vectors: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of each target against S negatives shared by the whole batch.

    h: (M, D) hidden states; targets: (M,); negatives: (S,) items drawn uniformly (a uniform
    proposal shifts every logit by the same log-probability, so no correction is needed); a
    negative that is the row's own target is masked out. Costs S / N of the full softmax.
    """
    if negatives.dim() != 1:
        raise ValueError(f"the sampled loss takes (S,) shared negatives, got {negatives.shape}")
    pos = (h * item_vectors[targets]).sum(-1, keepdim=True)  # (M, 1)
    neg = h @ item_vectors[negatives].T  # (M, S)
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def add_last_item_gate(model: SeqRec) -> SeqRec:
    """Give ``model`` (in place) a last-item gate at 0, if it has none: its scores are unchanged
    until the gate is trained. Returns ``model``."""
    if not model.config.last_item_gate:
        model.config = replace(model.config, last_item_gate=True)
        device = model.norm.weight.device
        setattr(model, LAST_ITEM_GATE, nn.Parameter(torch.zeros((), device=device)))
    return model


def add_text_fusion(model: SeqRec) -> SeqRec:
    """Give ``model`` (in place) a text-fusion weight at 0, if it has none: its scores are
    unchanged until the weight is fitted (``training.fusion.fit_text_fusion``). Returns
    ``model``."""
    if not model.config.text_fusion:
        model.config = replace(model.config, text_fusion=True)  # validates: needs item text
        device = model.norm.weight.device
        model.register_buffer(FUSION_WEIGHT, torch.zeros((), device=device))
    return model


def with_new_items(model: SeqRec, text_embeddings: torch.Tensor) -> SeqRec:
    """A copy of ``model`` whose catalogue ends with M new items known by their text alone.

    text_embeddings: (M, T) from the model's text encoder. The new items' id embeddings are zero
    (in a hybrid model, as for an item whose id was dropped in training), so their vectors come
    from the text adaptor (and, with domain vectors, the catalogue's most common domain); every
    old item scores exactly as before. ValueError for an id-only model, which cannot score an
    item it was not trained on.
    """
    cfg = model.config
    if cfg.item_repr == "id":
        raise ValueError("an id-only model cannot score new items from their text")
    if text_embeddings.dim() != 2 or text_embeddings.shape[1] != cfg.text_dim:
        raise ValueError(
            f"new items' text embeddings have shape {tuple(text_embeddings.shape)}, "
            f"expected (M, {cfg.text_dim})"
        )
    old = model.items.text_embeddings
    text = torch.cat([old, text_embeddings.to(old.dtype).to(old.device)])
    grown = SeqRec(replace(cfg, n_items=cfg.n_items + len(text_embeddings)), text.cpu())
    state = model.state_dict()
    state["items.text_embeddings"] = text
    if "items.id_embedding.weight" in state:
        ids = state["items.id_embedding.weight"]
        zeros = ids.new_zeros(len(text_embeddings), ids.shape[1])
        state["items.id_embedding.weight"] = torch.cat([ids, zeros])
    if cfg.n_domains:  # new items join the catalogue's most common domain
        domains = state["items.item_domain"]
        common = torch.bincount(domains, minlength=cfg.n_domains).argmax()
        state["items.item_domain"] = torch.cat([domains, common.repeat(len(text_embeddings))])
    grown.load_state_dict(state)
    return grown.to(old.device).train(model.training)
