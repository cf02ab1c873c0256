"""Workflows: each of metarec's jobs as one library call, composed from the layers below.

``pretrain`` (``pretrain_seqrec``), ``finetune`` (``finetune_checkpoint``), ``meta_train``
(``meta_train_fold``, with ``adapt_choice`` judging how to adapt), ``evaluate``
(``evaluate_checkpoint``) and ``items`` (``add_items``) own no model, training or adaptation
logic: they wire data, text, models, training, adapt and meta together, write checkpoints and
reports, and are what the CLI, the service's refresh and the protocols call.
"""
