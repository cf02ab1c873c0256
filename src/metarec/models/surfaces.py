"""What a model offers to adaptation: the names adaptation code may move, declared by the model.

Adaptation (fast-parameter policies, fine-tuning strategies, meta-learners) never asks which
class a model is: it reads ``model.adaptation_surfaces()`` and acts on the names it finds.
Names are ``fnmatch`` patterns over parameter or module names; a pattern matches a name or any
of its dotted prefixes (``"norm"`` matches ``norm.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass

# the model attribute holding the text-fusion weight: a buffer, fitted after training (never by
# gradient), carried by checkpoints and adapters
FUSION_WEIGHT = "text_fusion_weight"
# the model attribute holding the last-item gate (a trainable scalar)
LAST_ITEM_GATE = "last_item_gate"


@dataclass(frozen=True)
class AdaptationSurfaces:
    """``head``: the part a light adaptation moves (the ``head`` policy and strategy).
    ``lora``: the ``nn.Linear`` layers LoRA targets inside the user encoder (the request-time
    ``lora`` policy); ``item_lora``: more of them in the item tower, added by LoRA fine-tuning
    on a new catalogue. ``user_vector``: the parameter(s) a per-user vector is added to.
    ``text_adaptor``: the module that maps item text to item vectors, and ``id_table``: the
    item id embedding, each if the model has one (the ``adaptor`` strategy trains both)."""

    head: tuple[str, ...] = ()
    lora: tuple[str, ...] = ()
    item_lora: tuple[str, ...] = ()
    user_vector: tuple[str, ...] = ()
    text_adaptor: str | None = None
    id_table: str | None = None
