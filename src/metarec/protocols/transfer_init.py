"""A meta-learned initialisation for new domains: Reptile over domain tasks of the sources.

A domain task is a sample of one source domain's users: a few inner steps on some of them
(support) should make the model better at the others' next items (query). Meta-training on such
tasks moves the pretrained weights toward a point from which fine-tuning on a few users of a
domain goes far, which is what a new domain offers. The result is an ordinary checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metarec.adapt.policies import PolicyConfig
from metarec.data.schema import Dataset
from metarec.data.splits import leave_one_out
from metarec.errors import ConfigError
from metarec.meta.learners import LearnerSpec, build_learner, default_config
from metarec.meta.tasks import domain_tasks
from metarec.meta.train import MetaTrainConfig, meta_train
from metarec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class MetaInitConfig:
    algorithm: str = "reptile"
    policy: str = "all"
    users_per_task: int = 32
    tasks_per_domain: int = 64
    valid_tasks_per_domain: int = 4
    meta: MetaTrainConfig = field(
        default_factory=lambda: MetaTrainConfig(
            meta_batch_size=4, max_steps=400, eval_every=20, patience=4, time_budget_s=180
        )
    )

    def __post_init__(self) -> None:
        default_config(self.algorithm)  # validates the name
        if self.users_per_task < 2 or self.tasks_per_domain < 1:
            raise ValueError("users_per_task must be >= 2 and tasks_per_domain >= 1")


def meta_init(
    base: Checkpoint,
    source: Dataset,
    cfg: MetaInitConfig,
    out: Path,
    log: Callable[[str], None] = lambda msg: None,
) -> Checkpoint:
    """Meta-train a copy of ``base`` on ``source``'s domain tasks; saved to and loaded from
    ``out``. Validation tasks end at each user's validation item, training tasks before it."""
    if source.interactions.domain is None:
        raise ConfigError("a meta-learned initialisation needs multi-domain source data")
    split = leave_one_out(source)
    max_len = base.model.config.max_len
    train = domain_tasks(split.train, max_len, cfg.users_per_task, cfg.tasks_per_domain, seed=0)
    valid = domain_tasks(
        split.train.concat(split.valid),
        max_len,
        cfg.users_per_task,
        cfg.valid_tasks_per_domain,
        seed=1,
    )
    model = copy.deepcopy(base.model).eval()
    learner = build_learner(model, LearnerSpec(cfg.algorithm, PolicyConfig(cfg.policy)))
    log(f"meta-learned initialisation: {cfg.algorithm} on {len(train)} domain tasks")
    res = meta_train(learner, train, valid, cfg.meta)
    log(
        f"meta-init: {res.stopped}; validation NDCG@10 {res.curve[0][1]:.4f} -> "
        f"{res.best_metric:.4f} after {res.best_step} steps"
    )
    meta = {**base.meta, "meta_init": {"algorithm": cfg.algorithm, "result": res.summary()}}
    save_checkpoint(out, Checkpoint(model, base.model_type, base.users, base.items, meta))
    return load_checkpoint(out)
