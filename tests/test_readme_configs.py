"""The README's example TOML files are valid for the commands they are shown for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metarec.config import finetune_settings, meta_train_settings, pretrain_settings

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = re.compile(
    r"Example config for `metarec ([a-z-]+) --config [^`]+`[^\n]*\n\n```toml\n(.*?)```", re.S
)


def _examples() -> dict[str, str]:
    return {command: body for command, body in EXAMPLE.findall(README.read_text())}


def test_the_readme_shows_one_example_per_training_command():
    assert set(_examples()) == {"pretrain", "finetune", "meta-train"}


@pytest.mark.parametrize("command", ["pretrain", "finetune", "meta-train"])
def test_each_example_is_accepted(command, tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(_examples()[command])
    if command == "pretrain":
        spec, train = pretrain_settings(path, {}, {})
        assert (spec.id_init, train.schedule) == ("cooccurrence", "cosine")
    elif command == "finetune":
        config, train = finetune_settings(path, {}, {})
        assert (config.strategy, config.id_rank, train.lr) == ("lora", 2, 0.003)
        assert train.batch_size == 64  # the strategy's validated loop under the file
    else:
        (spec,), tasks, train, choice = meta_train_settings(path, {}, {}, {})
        assert choice.choose and choice.finetune_lrs == (1e-4, 1e-3, 1e-2)
        assert (spec.algorithm, spec.policy.name, tasks.k) == ("meta-sgd", "lora", 5)
