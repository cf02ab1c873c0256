"""Meta-learning over tasks: one functional inner loop and the algorithms built on it.

``adapt`` (meta.inner) is the inner loop every algorithm, the evaluation and the service share;
``maml``/``meta_sgd``/``learned_optim`` build a ``MetaLearner`` (meta.core; ANIL is MAML over the
``head`` policy, a registry entry), ``Reptile`` has its own outer update. All of them satisfy
``Learner``: ``meta_step(tasks)``, ``adapt_task(support)`` and ``score(fast, batch, items=None)``.

Around them: ``meta.tasks`` (user next-item / like-click tasks, domain tasks, ``TaskSampler``),
``meta.learners`` (algorithms by name: ``LearnerSpec``, ``build_learner``), ``meta.train``
(``meta_train`` with meta-validation and early stopping), ``meta.choice`` (no adaptation, plain
fine-tuning or a meta-learner, chosen on held-out users outside the noise), ``meta.checkpoint``
(save / load a meta-trained model and its choice), and ``meta.inference`` (``adapt_user``,
``recommend``, ``chosen_adapter``). One cold-start
fold end to end (what ``metarec meta-train`` runs) is ``metarec.workflows.meta_train``.
"""

from __future__ import annotations

from metarec.meta.checkpoint import MetaCheckpoint, load_meta_checkpoint, save_meta_checkpoint
from metarec.meta.choice import Choice, choose
from metarec.meta.core import (
    INNER_LR,
    INNER_STEPS,
    META_LEARN,
    OUTER_LR,
    FixedRule,
    Learner,
    MetaLearner,
    adamw_outer,
)
from metarec.meta.functional import (
    call_method,
    functional_loss,
    functional_score,
    pointwise_logits,
    pointwise_loss,
)
from metarec.meta.inference import (
    PolicyBundle,
    adapt_latency,
    adapt_user,
    chosen_adapter,
    recommend,
)
from metarec.meta.inner import adapt
from metarec.meta.inner_optim import InnerOptimizer, adagrad, adamw, sgd
from metarec.meta.learned_optim import LearnedOptimConfig, LearnedOptimRule, learned_optim
from metarec.meta.learners import LEARNERS, LearnerEntry, LearnerSpec, algorithms, build_learner
from metarec.meta.maml import MAMLConfig, maml
from metarec.meta.meta_sgd import MetaSGDConfig, MetaSGDRule, meta_sgd
from metarec.meta.reptile import Reptile, ReptileConfig
from metarec.meta.tasks import (
    Ranking,
    Task,
    TaskSampler,
    domain_tasks,
    like_tasks,
    next_item_tasks,
)
from metarec.meta.train import MetaTrainConfig, MetaTrainResult, evaluate_tasks, meta_train

__all__ = [
    "INNER_LR",
    "INNER_STEPS",
    "LEARNERS",
    "META_LEARN",
    "OUTER_LR",
    "Choice",
    "FixedRule",
    "InnerOptimizer",
    "LearnedOptimConfig",
    "LearnedOptimRule",
    "Learner",
    "LearnerEntry",
    "LearnerSpec",
    "MAMLConfig",
    "MetaCheckpoint",
    "MetaLearner",
    "MetaSGDConfig",
    "MetaSGDRule",
    "MetaTrainConfig",
    "MetaTrainResult",
    "PolicyBundle",
    "Ranking",
    "Reptile",
    "ReptileConfig",
    "Task",
    "TaskSampler",
    "adagrad",
    "adamw",
    "adamw_outer",
    "adapt",
    "adapt_latency",
    "adapt_user",
    "algorithms",
    "build_learner",
    "call_method",
    "choose",
    "chosen_adapter",
    "domain_tasks",
    "evaluate_tasks",
    "functional_loss",
    "functional_score",
    "learned_optim",
    "like_tasks",
    "load_meta_checkpoint",
    "maml",
    "meta_sgd",
    "meta_train",
    "next_item_tasks",
    "pointwise_logits",
    "pointwise_loss",
    "recommend",
    "save_meta_checkpoint",
    "sgd",
]
