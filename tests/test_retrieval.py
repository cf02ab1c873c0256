"""Top-k through FAISS: the model's retrieval keys reproduce its scores, the index finds what
exact ranking finds, recommend() uses it only where the keys still hold, and the service serves
from it (new items included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from metarec.errors import ConfigError
from metarec.evaluation.retrieval import IndexConfig, ItemIndex, recall_at
from metarec.meta.inference import recommend
from metarec.models.seqrec import add_text_fusion
from metarec.serving import ServeSettings, create_app
from test_last_item_gate import _batch, _model
from test_serving import _checkpoint, _hybrid_checkpoint


@pytest.mark.parametrize("fusion", [False, True])
def test_queries_times_keys_are_the_models_scores(fusion):
    model = _model(gate=True)
    with torch.no_grad():
        model.last_item_gate.fill_(0.7)
        if fusion:
            model = add_text_fusion(model)
            model.text_fusion_weight.fill_(2.5)
    batch = _batch(empty_row=True)
    with torch.no_grad():
        keys, queries = model.retrieval_keys(), model.retrieval_queries(batch)
        assert torch.allclose(queries @ keys.T, model.score(batch), atol=1e-5)
    width = model.config.dim + (model.config.text_dim if fusion else 0)
    assert keys.shape == (model.config.n_items, width) and queries.shape == (3, width)


def _exact_top(keys: np.ndarray, queries: np.ndarray, k: int, banned=()):
    scores = queries @ keys.T
    scores[:, list(banned)] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_flat_search_is_exact_and_leaves_out_the_excluded_items():
    rng = np.random.default_rng(0)
    keys, queries = rng.normal(size=(200, 8)), rng.normal(size=(5, 8))
    index = ItemIndex.build(keys, IndexConfig(kind="flat"))
    idx, scores = index.search(queries, 10, exclude=[3, 17])
    assert idx.shape == (5, 10) and not np.isin(idx, [3, 17]).any()
    np.testing.assert_array_equal(idx, _exact_top(keys, queries, 10, [3, 17]))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ keys.T, idx, 1), rtol=1e-5)
    # asking for more than remain gives what remains
    small = ItemIndex.build(keys[:4], IndexConfig(kind="flat"))
    assert small.search(queries[:1], 10, exclude=[0])[0].shape == (1, 3)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_recall_what_exact_ranking_finds(kind):
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(5000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    index = ItemIndex.build(keys, IndexConfig(kind=kind, threads=1))
    idx, _ = index.search(queries, 20)
    recall = recall_at(idx, _exact_top(keys, queries, 20))
    assert recall >= 0.9, recall
    assert recall_at(_exact_top(keys, queries, 20), _exact_top(keys, queries, 20)) == 1.0


def test_an_extended_index_is_a_copy_that_finds_the_new_items():
    rng = np.random.default_rng(2)
    keys = rng.normal(size=(300, 8)).astype(np.float32)
    index = ItemIndex.build(keys, IndexConfig(kind="hnsw"))
    query = rng.normal(size=(1, 8)).astype(np.float32)
    new = (10 * query).astype(np.float32)  # the best match by far
    grown = index.extended(new)
    assert (index.n_items, grown.n_items) == (300, 301)
    assert grown.search(query, 1)[0][0, 0] == 300
    assert index.search(query, 1)[0][0, 0] != 300  # the old one is untouched


def test_bad_keys_queries_and_settings_are_named():
    index = ItemIndex.build(np.eye(4), IndexConfig(kind="flat"))
    with pytest.raises(ConfigError, match="queries have width 3"):
        index.search(np.ones((1, 3)), 2)
    with pytest.raises(ConfigError, match="non-finite"):
        ItemIndex.build(np.array([[1.0, np.nan]]))
    with pytest.raises(ConfigError, match="2-D"):
        ItemIndex.build(np.ones(4))
    with pytest.raises(ConfigError, match="index kind"):
        IndexConfig(kind="lsh")
    with pytest.raises(ConfigError, match="ef_search"):
        IndexConfig(ef_search=0)
    with pytest.raises(ValueError, match="retrieval must be one of"):
        ServeSettings(models=(), retrieval="annoy")


def test_recommend_uses_the_index_only_while_the_item_tower_is_untouched():
    model = _model()
    history = [3, 1, 4]
    with torch.no_grad():
        keys = model.retrieval_keys()
    exact = recommend(model, None, history, 5)
    flat = recommend(model, None, history, 5, index=ItemIndex.build(keys, IndexConfig("flat")))
    np.testing.assert_array_equal(flat[0], exact[0])
    np.testing.assert_allclose(flat[1], exact[1], rtol=1e-5)
    # an index over other keys shows which path ran: its answer differs from exact ranking
    wrong = ItemIndex.build(-keys, IndexConfig("flat"))
    assert not np.array_equal(recommend(model, None, history, 5, index=wrong)[0], exact[0])
    head = {"norm.bias": model.norm.bias.detach() + 0.3}  # user side only: keys still hold
    moved = recommend(model, head, history, 5)
    np.testing.assert_array_equal(
        recommend(model, head, history, 5, index=ItemIndex.build(keys, IndexConfig("flat")))[0],
        moved[0],
    )
    name, weight = next((n, p) for n, p in model.named_parameters() if n.startswith("items."))
    tower = {name: weight.detach() * 1.5}  # the item tower moved: exact ranking, index ignored
    np.testing.assert_array_equal(
        recommend(model, tower, history, 5, index=wrong)[0], recommend(model, tower, history, 5)[0]
    )


def test_the_service_serves_from_faiss_and_new_items_join_the_index(tmp_path):
    hybrid = _hybrid_checkpoint(tmp_path / "hybrid")
    body = {"items": ["m1", "m2", "m5"], "k": 10, "adapt": False}
    answers = {}
    for retrieval in ("exact", "faiss"):
        settings = ServeSettings(
            models=(hybrid,),
            db=str(tmp_path / f"{retrieval}.db"),
            retrieval=retrieval,
            index=IndexConfig(kind="flat"),
        )
        with TestClient(create_app(settings)) as client:
            got = client.post("/recommendations", json=body).json()["items"]
            answers[retrieval] = [i["item"] for i in got]
            if retrieval == "faiss":
                new = {"items": [{"item": "fresh-1", "text": "A space adventure with robots"}]}
                assert client.post("/items", json=new).json() == {"stored": 1, "new": 1}
                wide = {**body, "k": 31, "exclude_seen": False}
                grown = client.post("/recommendations", json=wide).json()["items"]
                assert len(grown) == 31 and "fresh-1" in {i["item"] for i in grown}
    assert answers["faiss"] == answers["exact"] and len(answers["exact"]) == 10


def test_an_id_model_is_served_from_faiss_too(tmp_path):
    v1 = _checkpoint(tmp_path / "v1", 0)
    settings = ServeSettings(
        models=(v1,), db=str(tmp_path / "e.db"), retrieval="faiss", index=IndexConfig("flat")
    )
    exact = ServeSettings(models=(v1,), db=str(tmp_path / "x.db"))
    body = {"items": ["m3", "m4"], "k": 5, "adapt": True}
    with TestClient(create_app(settings)) as a, TestClient(create_app(exact)) as b:
        ra, rb = (
            a.post("/recommendations", json=body).json(),
            b.post("/recommendations", json=body).json(),
        )
    assert [i["item"] for i in ra["items"]] == [i["item"] for i in rb["items"]]
    assert ra["adapted"] is True


def test_every_loaded_version_gets_its_own_index_and_growing_copies_it(tmp_path):
    from metarec.serving.registry import ModelRegistry

    v1, v2 = _checkpoint(tmp_path / "v1", 0), _checkpoint(tmp_path / "v2", 1)
    registry = ModelRegistry([v1, v2], index=IndexConfig("flat"))
    first = registry.active
    assert first.index is not None and first.index.n_items == 30
    second = registry.activate(registry.versions()[1]["version"])
    assert second.index is not None and second.index is not first.index
    assert ModelRegistry([v1]).active.index is None  # exact by default
