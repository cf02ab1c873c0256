"""coldstart-ml's methods by kind, read by its runner and its report alike."""

from __future__ import annotations

BASELINES = ("popularity", "no-adapt")
FINETUNE = ("finetune-all", "finetune-head", "lora")
META = ("maml", "fomaml", "reptile", "meta-sgd")
METHODS = BASELINES + FINETUNE + META
# the fast-parameter policy each fine-tuning baseline adapts
FINETUNE_POLICY = {"finetune-all": "all", "finetune-head": "head", "lora": "lora"}
