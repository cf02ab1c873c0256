"""Configuration at the edge: TOML files and flags become frozen dataclasses, unknown keys fail.

Only the CLI reads files; library code takes the dataclasses.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, fields
from pathlib import Path

from metarec.adapt.finetune import FinetuneConfig, finetune_train
from metarec.adapt.policies import PolicyConfig
from metarec.errors import ConfigError
from metarec.meta.learners import LEARNERS, LearnerSpec, accepted_policy
from metarec.meta.train import MetaTrainConfig
from metarec.training.loop import TrainConfig
from metarec.workflows.adapt_choice import ChoiceConfig
from metarec.workflows.meta_train import FoldTasks
from metarec.workflows.pretrain import DEFAULT_SPEC, DEFAULT_TRAIN, ModelSpec

_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _checked(name: str, value, annotation: str, where: str):
    """``value`` if it fits the field's annotation ("int", "float | None"), else ConfigError."""
    options = [a.strip() for a in annotation.split("|")]
    if value is None and "None" in options:
        return None
    for option in options:
        if option.startswith("tuple[") and isinstance(value, list | tuple):
            return _checked_tuple(name, value, option, where)
        kinds = _KINDS.get(option)
        if kinds is None:
            continue
        if isinstance(value, kinds) and (option == "bool" or not isinstance(value, bool)):
            return float(value) if option == "float" else value
    raise ConfigError(f"{where}: {name} must be {annotation}, got {value!r}")


def _checked_tuple(name: str, value: list | tuple, annotation: str, where: str) -> tuple:
    """A TOML list as the tuple a field annotated ``tuple[str, ...]`` / ``tuple[float, float]``
    takes, each element checked like a field of its own."""
    kinds = [k.strip() for k in annotation[len("tuple[") : -1].split(",")]
    if kinds[-1] == "...":
        kinds = kinds[:1] * len(value)
    elif len(kinds) != len(value):
        raise ConfigError(f"{where}: {name} must be a list of {len(kinds)} values, got {value!r}")
    pairs = enumerate(zip(value, kinds, strict=True))
    return tuple(_checked(f"{name}[{i}]", v, k, where) for i, (v, k) in pairs)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {values!r}")
    types = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(types))}"
        )
    values = {k: _checked(k, v, str(types[k]), where) for k, v in values.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError, ConfigError) as e:
        raise ConfigError(f"{where}: {e}") from e


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e


def pretrain_settings(
    path: Path | None, model_flags: dict, train_flags: dict
) -> tuple[ModelSpec, TrainConfig]:
    """Merge the product's defaults (``DEFAULT_SPEC``, ``DEFAULT_TRAIN``) < TOML file ([model],
    [train]) < command-line flags that were given. Choosing another item representation drops
    the defaults it has no use for (an id start for text-only, a text start for id-only) unless
    the file or a flag sets them."""
    doc = read_toml(path) if path is not None else {}
    unknown = sorted(set(doc) - {"model", "train"})
    if unknown:
        raise ConfigError(f"{path}: unknown table {unknown[0]!r}; expected [model] and [train]")
    for table in ("model", "train"):
        if not isinstance(doc.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}] must be a table of settings")
    chosen = {**doc.get("model", {}), **{k: v for k, v in model_flags.items() if v is not None}}
    base = DEFAULT_SPEC.with_items(chosen.get("item_repr", DEFAULT_SPEC.item_repr))
    model = {**asdict(base), **chosen}
    train = {**DEFAULT_TRAIN.to_dict(), **doc.get("train", {})}
    train.update({k: v for k, v in train_flags.items() if v is not None})
    where = str(path) if path is not None else "options"
    return _build(ModelSpec, model, f"{where} [model]"), _build(
        TrainConfig, train, f"{where} [train]"
    )


def finetune_settings(
    path: Path | None, model_flags: dict, train_flags: dict
) -> tuple[FinetuneConfig, TrainConfig]:
    """Merge the product's defaults < TOML file < flags for ``metarec finetune``.

    [model]: ``FinetuneConfig`` (strategy, lora_rank, item_ids, ...; its defaults are the
    settings transfer-scientific validated); [train]: ``TrainConfig``, starting from the
    strategy's validated loop (``adapt.finetune.finetune_train``)."""
    doc = _read_tables(path, ("model", "train"))
    where = str(path) if path is not None else "options"
    model = {**doc["model"], **_given(model_flags)}
    config = _build(FinetuneConfig, model, f"{where} [model]")
    train = {**finetune_train(config.strategy).to_dict(), **doc["train"], **_given(train_flags)}
    return config, _build(TrainConfig, train, f"{where} [train]")


def _read_tables(path: Path | None, allowed: tuple[str, ...]) -> dict[str, dict]:
    """The TOML file's tables (only ``allowed`` ones, each a table); {} without a file."""
    doc = read_toml(path) if path is not None else {}
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        expected = ", ".join(f"[{t}]" for t in allowed)
        raise ConfigError(f"{path}: unknown table {unknown[0]!r}; expected {expected}")
    for table in allowed:
        if not isinstance(doc.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}] must be a table of settings")
    return {table: dict(doc.get(table, {})) for table in allowed}


def _given(flags: dict) -> dict:
    return {k: v for k, v in flags.items() if v is not None}


AUTO = "auto"  # [meta] algorithm: every registered meta-learner, judged against each other


def meta_train_settings(
    path: Path | None,
    meta_flags: dict,
    policy_flags: dict,
    train_flags: dict,
    choice_flags: dict | None = None,
) -> tuple[tuple[LearnerSpec, ...], FoldTasks, MetaTrainConfig, ChoiceConfig]:
    """Merge defaults < TOML file < flags for ``metarec meta-train``.

    [meta]: ``algorithm`` (one name, several as a list or comma-separated, or ``auto``: every
    registered one), the task keys (``FoldTasks``: k, n_query, fold, ...) and the keys of the
    algorithms' configs (e.g. inner_lr, inner_steps; each goes to every algorithm that has it);
    [model]: the fast-parameter ``policy`` and its options (rank, alpha, targets, seed; with
    several algorithms, one that adapts a fixed set, anil, keeps its own); [train]:
    ``MetaTrainConfig`` (its budget is each algorithm's); [choice]: ``ChoiceConfig`` (choose,
    finetune_lrs, finetune_steps). Returns one spec per algorithm, in the order given.
    """
    doc = _read_tables(path, ("model", "meta", "train", "choice"))
    where = str(path) if path is not None else "options"
    meta = {**doc["meta"], **_given(meta_flags)}
    asked = meta.pop("algorithm", "maml")
    names = _algorithms(asked, f"{where} [meta]")
    task_keys = {f.name for f in fields(FoldTasks)}
    config_keys = {n: {f.name for f in fields(LEARNERS[n].config_class)} for n in names}
    known = task_keys.union(*config_keys.values()) | {"algorithm"}
    if unknown := sorted(set(meta) - known):
        raise ConfigError(
            f"{where} [meta]: unknown key {unknown[0]!r} for algorithm {', '.join(names)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    tasks = _build(FoldTasks, {k: v for k, v in meta.items() if k in task_keys}, f"{where} [meta]")
    policy = _policy_config({**doc["model"], **_given(policy_flags)}, where)
    specs = []
    for name in names:
        values = {
            **LEARNERS[name].defaults,
            **{k: v for k, v in meta.items() if k in config_keys[name]},
        }
        config = _build(LEARNERS[name].config_class, values, f"{where} [meta]")
        fast = policy if len(names) == 1 else accepted_policy(name, policy)
        try:
            specs.append(LearnerSpec(name, fast, config))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from e
    if isinstance(asked, str) and asked.strip() == AUTO:
        specs = _distinct(specs)
    train = _build(MetaTrainConfig, {**doc["train"], **_given(train_flags)}, f"{where} [train]")
    choice = {**doc["choice"], **_given(choice_flags or {})}
    return tuple(specs), tasks, train, _build(ChoiceConfig, choice, f"{where} [choice]")


def _distinct(specs: list[LearnerSpec]) -> list[LearnerSpec]:
    """``auto`` without the learners that are an earlier one under another name (anil with the
    head policy is maml with the head policy: same builder, config and policy)."""
    kept: list[LearnerSpec] = []
    for spec in specs:
        same = (LEARNERS[spec.algorithm].build, spec.config, spec.policy)
        if all((LEARNERS[k.algorithm].build, k.config, k.policy) != same for k in kept):
            kept.append(spec)
    return kept


def _algorithms(value, where: str) -> tuple[str, ...]:
    """The algorithm names of [meta] algorithm / --algorithm; ConfigError naming a bad one."""
    if isinstance(value, str):
        text = value.strip()
        names = list(LEARNERS) if text == AUTO else [n.strip() for n in text.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise ConfigError(f"{where}: algorithm must be a name or a list of names, got {value!r}")
    choices = f"one of {', '.join(LEARNERS)} (several comma-separated), or {AUTO}"
    if not names or any(n not in LEARNERS for n in names):
        bad = next((n for n in names if n not in LEARNERS), "")
        raise ConfigError(f"{where}: algorithm must be {choices}; got {bad!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: algorithm names each algorithm once, got {names}")
    return tuple(names)


def _policy_config(values: dict, where: str) -> PolicyConfig:
    """[model] of meta-train: ``policy`` (PolicyConfig's name; unset: its default) + options."""
    known = {"policy"} | {f.name for f in fields(PolicyConfig)} - {"name"}
    if unknown := sorted(set(values) - known):
        raise ConfigError(
            f"{where} [model]: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
        )
    if "policy" in values:
        values["name"] = values.pop("policy")
    return _build(PolicyConfig, values, f"{where} [model]")
