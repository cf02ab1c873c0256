"""Meta-learning over tasks: one functional inner loop and the algorithms built on it.

``adapt`` (meta.inner) is the inner loop every algorithm, the evaluation and the service share;
``maml``/``anil``/``meta_sgd``/``learned_optim`` build a ``MetaLearner`` (meta.core), ``Reptile``
has its own outer update. All of them expose ``meta_step(tasks)``, ``adapt_task(support)`` and
``score(fast, batch, items=None)``.
"""

from __future__ import annotations

from metarec.meta.anil import anil
from metarec.meta.core import META_LEARN, FixedRule, MetaLearner, adamw_outer
from metarec.meta.functional import call_method, functional_loss, functional_score
from metarec.meta.inner import adapt
from metarec.meta.inner_optim import InnerOptimizer, adagrad, adamw, sgd
from metarec.meta.learned_optim import LearnedOptimConfig, LearnedOptimRule, learned_optim
from metarec.meta.maml import MAMLConfig, maml
from metarec.meta.meta_sgd import MetaSGDConfig, MetaSGDRule, meta_sgd
from metarec.meta.reptile import Reptile, ReptileConfig

__all__ = [
    "META_LEARN",
    "FixedRule",
    "InnerOptimizer",
    "LearnedOptimConfig",
    "LearnedOptimRule",
    "MAMLConfig",
    "MetaLearner",
    "MetaSGDConfig",
    "MetaSGDRule",
    "Reptile",
    "ReptileConfig",
    "adagrad",
    "adamw",
    "adamw_outer",
    "adapt",
    "anil",
    "call_method",
    "functional_loss",
    "functional_score",
    "learned_optim",
    "maml",
    "meta_sgd",
    "sgd",
]
