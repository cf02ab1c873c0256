"""Cross-encoder like scorer: a pretrained language model reads history and candidate together.

The prompt is built from ``CrossEncoderConfig.template`` (a ``str.format`` template with the
fields ``{history}`` and ``{candidate}``); each history item is rendered with ``item_template``
(fields ``{title}`` and ``{rating}``), most recent last. The encoder (any local Hugging Face
folder, default all-MiniLM-L6-v2) is mean-pooled over tokens; a linear head over the pooled text
plus the numeric history features of ``like.head`` gives the logit. The numeric part
starts at the same prior as ``LikeHead`` and the text part at zero, so the untrained model
scores like the prior and fine-tuning only has to learn what the text adds.

A plain ``nn.Module``; LoRA is injected from outside (``like.cross_encoder_fit.add_lora``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarec.like.head import NUMERIC

DEFAULT_TEMPLATE = "Recently rated: {history}. Candidate: {candidate}. Will the user like it?"


@dataclass(frozen=True)
class CrossEncoderConfig:
    template: str = DEFAULT_TEMPLATE
    item_template: str = "{title} ({rating:g})"
    history_items: int = 5  # most recent history items written into the prompt
    max_length: int = 128  # tokens; longer prompts are truncated from the left-most history
    numeric: bool = True  # add the numeric history features to the head
    prior: tuple[float, ...] = (4.0, 1.0, 0, 0, 0, 0, 0, 0)
    bias: float = 0.4
    text_model: str | None = None  # None: the bundled all-MiniLM-L6-v2

    def __post_init__(self) -> None:
        for name, fields in (("template", ("history", "candidate")), ("item_template", ())):
            text = getattr(self, name)
            try:
                text.format(history="h", candidate="c", title="t", rating=4.0)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"{name} {text!r} is not a valid format string: {e}") from e
            missing = [f for f in fields if "{" + f not in text]
            if missing:
                raise ValueError(f"{name} {text!r} must use the field(s) {missing}")
        if self.history_items < 1 or self.max_length < 8:
            raise ValueError("history_items must be >= 1 and max_length >= 8")
        if len(self.prior) != len(NUMERIC):
            raise ValueError(f"prior has {len(self.prior)} weights, expected {len(NUMERIC)}")


def build_prompts(
    config: CrossEncoderConfig,
    titles: Sequence[str],
    history: np.ndarray,
    history_rating: np.ndarray,
    item: np.ndarray,
    candidate_texts: Sequence[str] | None = None,
) -> list[str]:
    """One prompt per sample. history, history_rating: (S, H), most recent last; item: (S,).

    History items are written by ``titles``; the candidate by ``candidate_texts`` (e.g. title
    and genres) when given, else by its title.
    """
    cands = titles if candidate_texts is None else candidate_texts
    keep = min(config.history_items, history.shape[1])
    prompts = []
    for hist, rates, cand in zip(history[:, -keep:], history_rating[:, -keep:], item, strict=True):
        parts = [
            config.item_template.format(title=titles[i], rating=float(r))
            for i, r in zip(hist, rates, strict=True)
        ]
        prompts.append(config.template.format(history="; ".join(parts), candidate=cands[cand]))
    return prompts


class CrossEncoder(nn.Module):
    """Pooled encoder output (B, H) [+ numeric features (B, F)] -> (B,) like logits."""

    def __init__(self, config: CrossEncoderConfig, encoder: nn.Module):
        super().__init__()
        self.config = config
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.text_head = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.text_head.weight)
        self.numeric = nn.Linear(len(NUMERIC), 1)
        with torch.no_grad():
            prior = config.prior if config.numeric else (0.0,) * len(NUMERIC)
            self.numeric.weight.copy_(torch.tensor([prior], dtype=torch.float32))
            self.numeric.bias.fill_(config.bias)
        self.numeric.requires_grad_(config.numeric)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, H) mean of the last hidden states over real tokens."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def score_numeric(self, numeric: torch.Tensor) -> torch.Tensor:
        """(B,) the numeric part of the logit (the bias alone unless ``config.numeric``)."""
        if self.config.numeric:
            return self.numeric(numeric)[:, 0]
        return self.numeric.bias.expand(len(numeric))

    def score(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        """(B,) logits; numeric: (B, F) ``like.head.NUMERIC`` features."""
        text = self.text_head(self.pooled(input_ids, attention_mask))[:, 0]
        return text + self.score_numeric(numeric)

    def loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        numeric: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        logits = self.score(input_ids, attention_mask, numeric)
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def load_encoder(text_model: str | Path | None = None) -> tuple[nn.Module, object]:
    """(AutoModel, tokenizer) from a local folder (the bundled MiniLM by default); offline."""
    from transformers import AutoModel, AutoTokenizer

    from metarec.text.encoder import resolve_model_path

    _, path = resolve_model_path(text_model)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    return encoder, tokenizer
