"""Move a pretrained SeqRec to another domain's catalogue: the items change, the encoder stays.

A new domain's items are known to the model only through their text (its id embeddings were
never trained). ``to_catalogue`` therefore keeps every weight of the user encoder and of the text
adaptor and swaps the catalogue's text embeddings; the id part is either dropped (a text model:
zero-shot and inductive) or started at zero (a hybrid model whose ids can be learned on the target,
scoring exactly like the text model until they are). A model with domain vectors gets one more
row for the new domain, started at the mean of the source domains' rows, and every new item
belongs to it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from metarec.errors import ConfigError
from metarec.models.item_tower import init_from_text
from metarec.models.seqrec import SeqRec

_ID_WEIGHT = "items.id_embedding.weight"
_TEXT = "items.text_embeddings"
_DOMAIN_WEIGHT = "items.domain_embedding.weight"
_ITEM_DOMAIN = "items.item_domain"


def to_catalogue(
    model: SeqRec,
    text_embeddings: torch.Tensor,
    item_ids: bool = False,
    restart_adaptor: bool = False,
) -> SeqRec:
    """A new SeqRec for a catalogue of N items given by their text embeddings (N, T).

    ``item_ids``: give the new model a (zero-initialised) id embedding per item (hybrid), or none
    (text). ``restart_adaptor``: start a linear text adaptor afresh at the new catalogue text's
    principal directions (as ``text_init="pca"``) instead of keeping the source's. The source
    model must read text (``item_repr`` text or hybrid) with the same text width; its own
    catalogue is left untouched.
    """
    cfg = model.config
    if cfg.item_repr == "id":
        raise ConfigError(
            "an id-only model cannot move to another catalogue: its items have no text; "
            "pretrain with --item-repr text or hybrid"
        )
    if text_embeddings.dim() != 2 or text_embeddings.shape[1] != cfg.text_dim:
        raise ConfigError(
            f"the new catalogue's text embeddings have shape {tuple(text_embeddings.shape)}, "
            f"the model reads ({cfg.text_dim},)-wide text embeddings: encode the items with the "
            "text model the base was pretrained with"
        )
    n = len(text_embeddings)
    new_domain = cfg.n_domains  # the index of the new domain's row, when there are domains
    new_cfg = replace(
        cfg,
        n_items=n,
        item_repr="hybrid" if item_ids else "text",
        n_domains=cfg.n_domains + 1 if cfg.n_domains else 0,
    )
    moved = SeqRec(new_cfg, text_embeddings.detach().float().cpu())
    state = {k: v for k, v in model.state_dict().items() if k not in (_ID_WEIGHT, _TEXT)}
    state[_TEXT] = moved.items.text_embeddings
    if item_ids:
        state[_ID_WEIGHT] = torch.zeros(n, cfg.dim)
    if cfg.n_domains:
        rows = state[_DOMAIN_WEIGHT]
        state[_DOMAIN_WEIGHT] = torch.cat([rows, rows.mean(0, keepdim=True)])
        state[_ITEM_DOMAIN] = torch.full((n,), new_domain, dtype=torch.long)
    moved.load_state_dict(state)
    if restart_adaptor:
        if cfg.text_hidden:
            raise ConfigError(
                "only a linear text adaptor (text_hidden=0) can restart from the text"
            )
        if cfg.dim > cfg.text_dim:
            raise ConfigError(
                f"restarting the adaptor needs a model no wider than its text ({cfg.dim} > "
                f"{cfg.text_dim})"
            )
        init_from_text(moved.items.text_proj, moved.items.text_embeddings, "pca")
    return moved
