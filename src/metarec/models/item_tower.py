"""Item vectors from projected text embeddings, from id embeddings, or both (hybrid), plus an
optional learned vector per domain (``n_domains > 0``): each item's vector gains its domain's
row, so that one catalogue holding several scenarios (films, office products, ...) can shift
each scenario's items as a block. The rows start at zero: a model with domain vectors scores
exactly like one without until they are trained."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ITEM_REPRS = ("id", "text", "hybrid")
TEXT_INITS = ("random", "identity", "pca")


@dataclass(frozen=True)
class ItemTowerConfig:
    n_items: int
    dim: int = 64
    item_repr: str = "hybrid"  # "id" | "text" | "hybrid"
    text_dim: int = 0  # width of the frozen text embeddings; 0 when item_repr == "id"
    text_hidden: int = 0  # 0: linear text adaptor; > 0: two-layer MLP with this hidden width
    id_dropout: float = 0.0  # hybrid, training only: drop the id part of this fraction of items
    # "identity": a linear adaptor that starts as the identity map (dim == text_dim); "pca": one
    # that starts as the projection on the catalogue text's top-``dim`` principal directions
    text_init: str = "random"
    n_domains: int = 0  # > 0: a learned vector per domain added to each of its items' vectors

    def __post_init__(self) -> None:
        if isinstance(self.n_domains, bool) or not isinstance(self.n_domains, int):
            raise ValueError(f"n_domains must be an integer, got {self.n_domains!r}")
        if self.n_domains < 0:
            raise ValueError(f"n_domains must be >= 0, got {self.n_domains}")
        if self.item_repr not in ITEM_REPRS:
            raise ValueError(f"item_repr must be one of {ITEM_REPRS}, got {self.item_repr!r}")
        if self.n_items < 1 or self.dim < 1:
            raise ValueError(f"n_items and dim must be positive, got {self.n_items}, {self.dim}")
        if self.item_repr != "id" and self.text_dim < 1:
            raise ValueError(f"item_repr={self.item_repr!r} needs text_dim > 0")
        if not 0.0 <= self.id_dropout < 1.0 or self.text_hidden < 0:
            raise ValueError("id_dropout must be in [0, 1) and text_hidden >= 0")
        if self.text_init not in TEXT_INITS:
            raise ValueError(f"text_init must be one of {TEXT_INITS}, got {self.text_init!r}")
        if self.text_init != "random" and self.text_hidden:
            raise ValueError(f"text_init={self.text_init!r} needs a linear adaptor (text_hidden=0)")
        if self.text_init == "pca" and self.dim > self.text_dim:
            raise ValueError(
                f"text_init='pca' needs dim <= text_dim, got {self.dim} > {self.text_dim}"
            )
        if self.text_init == "identity" and self.text_dim != self.dim:
            raise ValueError(
                f"text_init='identity' needs a linear adaptor (text_hidden=0) and "
                f"dim == text_dim, got dim={self.dim}, text_dim={self.text_dim}, "
                f"text_hidden={self.text_hidden}"
            )


class ItemTower(nn.Module):
    """Maps every catalogue item to a ``dim`` vector.

    Text embeddings are a frozen buffer (so they travel inside checkpoints); the projection
    ("adaptor") and the optional id embedding are trained. With domains, ``item_domain`` (a
    buffer: each item's domain index, all 0 until ``set_item_domains``) picks each item's row
    of the trained ``domain_embedding``.
    """

    def __init__(self, config: ItemTowerConfig, text_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        uses_text = config.item_repr in ("text", "hybrid")
        if uses_text:
            if text_embeddings is None:
                text_embeddings = torch.zeros(config.n_items, config.text_dim)
            if tuple(text_embeddings.shape) != (config.n_items, config.text_dim):
                raise ValueError(
                    f"text embeddings have shape {tuple(text_embeddings.shape)}, "
                    f"expected ({config.n_items}, {config.text_dim})"
                )
            self.register_buffer("text_embeddings", text_embeddings.float().clone())
            self.text_proj = _adaptor(config.text_dim, config.text_hidden, config.dim)
            if config.text_init != "random":  # text similarity is there before any training
                init_from_text(self.text_proj, self.text_embeddings, config.text_init)
        if config.item_repr in ("id", "hybrid"):
            self.id_embedding = nn.Embedding(config.n_items, config.dim)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
        if config.n_domains:
            self.domain_embedding = nn.Embedding(config.n_domains, config.dim)
            nn.init.zeros_(self.domain_embedding.weight)
            self.register_buffer("item_domain", torch.zeros(config.n_items, dtype=torch.long))

    @torch.no_grad()
    def set_item_domains(self, domains: torch.Tensor) -> None:
        """Each item's domain index, (n_items,) integers in [0, n_domains)."""
        n = self.config.n_domains
        if not n:
            raise ValueError("this item tower has no domain vectors (n_domains=0)")
        domains = torch.as_tensor(domains)
        if domains.shape != (self.config.n_items,) or domains.is_floating_point():
            raise ValueError(
                f"item domains must be ({self.config.n_items},) integers, got "
                f"{tuple(domains.shape)} {domains.dtype}"
            )
        if len(domains) and (int(domains.min()) < 0 or int(domains.max()) >= n):
            raise ValueError(f"item domains must lie in [0, {n}), got {int(domains.max())}")
        self.item_domain.copy_(domains.to(self.item_domain.device))

    def all_items(self) -> torch.Tensor:
        """(N, D) vectors of the whole catalogue."""
        vec = None
        if self.config.item_repr in ("text", "hybrid"):
            vec = self.text_proj(self.text_embeddings)  # (N, D)
        if self.config.item_repr in ("id", "hybrid"):
            table = self.id_embedding  # (N, D); a wrapper (LoRA) is called so its delta applies
            if type(table) is nn.Embedding:  # the plain table: no gather copy on the hot path
                emb = table.weight
            else:
                emb = table(torch.arange(self.config.n_items, device=table.weight.device))
            if vec is not None and self.training and self.config.id_dropout > 0:
                keep = torch.rand(emb.shape[0], 1, device=emb.device) >= self.config.id_dropout
                emb = emb * keep  # those items must be recognised from their text alone
            vec = emb if vec is None else vec + emb
        if self.config.n_domains:
            vec = vec + self.domain_embedding.weight[self.item_domain]
        return vec


def _adaptor(text_dim: int, hidden: int, dim: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(text_dim, dim)
    return nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


@torch.no_grad()
def init_from_text(proj: nn.Linear, text: torch.Tensor, how: str) -> None:
    """Identity, or centred projection on the top principal directions of ``text`` (N, T):
    similar texts give similar item vectors from the start. Skipped for all-zero text (a model
    built only to receive a checkpoint's weights)."""
    if how == "identity":
        proj.weight.copy_(torch.eye(proj.out_features, proj.in_features))
        proj.bias.zero_()
        return
    if not text.any():
        return
    mean = text.double().mean(0)  # (T,)
    centred = text.double() - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues, (T, T)
    top = vectors[:, -proj.out_features :].flip(1).T  # (D, T), largest first
    top = top * torch.where(top.sum(1, keepdim=True) < 0, -1.0, 1.0)  # deterministic signs
    proj.weight.copy_(top.float())
    proj.bias.copy_(-(top @ mean).float())
