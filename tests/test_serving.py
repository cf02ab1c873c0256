"""The HTTP service over a SQLite event store, with two small checkpoint versions."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
import torch
from fastapi.testclient import TestClient

from metarec.errors import CheckpointError, ConfigError, DataError
from metarec.models import SeqRec, SeqRecConfig
from metarec.serving import ServeSettings, create_app
from metarec.serving.registry import load_served_model
from metarec.serving.store import Event, SQLiteStore, open_store
from metarec.training.checkpoint import Checkpoint, save_checkpoint, write_item_text
from test_cli import run_cli

N_ITEMS = 30
ITEMS = [f"m{i}" for i in range(N_ITEMS)]


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    cfg = SeqRecConfig(
        n_items=N_ITEMS, dim=16, n_layers=1, n_heads=2, max_len=8, dropout=0.0, item_repr="id"
    )
    ckpt = Checkpoint(SeqRec(cfg), "seqrec", ["u0"], ITEMS, {"dataset": "test"})
    save_checkpoint(path, ckpt)
    write_item_text(path, ITEMS, [f"Film number {i}" for i in range(N_ITEMS)])
    return path


@pytest.fixture
def versions(tmp_path):
    return _checkpoint(tmp_path / "v1", 0), _checkpoint(tmp_path / "v2", 1)


def _client(tmp_path, versions, **kw):
    settings = ServeSettings(models=versions, db=str(tmp_path / "events.db"), **kw)
    return TestClient(create_app(settings))


def _events(user, items, start=1000.0):
    return {
        "events": [
            {"user": user, "item": item, "type": "view", "timestamp": start + t}
            for t, item in enumerate(items)
        ]
    }


def test_events_are_stored_and_known_users_get_model_recommendations(tmp_path, versions):
    with _client(tmp_path, versions) as client:
        r = client.post("/events", json=_events("alice", ["m1", "m2", "m3"]))
        assert r.status_code == 200 and r.json() == {"stored": 3}
        r = client.get("/users/alice/recommendations", params={"k": 5})
        assert r.status_code == 200
        body = r.json()
        assert body["source"] == "model" and body["user"] == "alice"
        got = [i["item"] for i in body["items"]]
        assert len(got) == 5 and not {"m1", "m2", "m3"} & set(got)
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(i["text"] == f"Film number {i['item'][1:]}" for i in body["items"])
        seen = client.get("/users/alice/recommendations", params={"k": 30, "exclude_seen": False})
        assert len(seen.json()["items"]) == 30
    assert SQLiteStore(tmp_path / "events.db").count_events() == 3  # still there after shutdown


def test_unknown_users_get_popularity_never_an_error(tmp_path, versions):
    with _client(tmp_path, versions) as client:
        empty = client.get("/users/nobody/recommendations")
        assert empty.status_code == 200 and empty.json()["items"] == []
        client.post("/events", json=_events("a", ["m5", "m6"]))
        client.post("/events", json=_events("b", ["m5", "not-in-catalogue"]))
        r = client.get("/users/nobody/recommendations", params={"k": 3}).json()
        assert r["source"] == "popularity"
        assert [i["item"] for i in r["items"]] == ["m5", "m6"]  # unknown ids never come back
        assert r["items"][0]["score"] == 2.0


def test_new_users_are_adapted_at_request_time_and_cached(tmp_path, versions):
    body = {"user": "new", "items": ["m1", "m4", "m9", "m2", "m7"], "k": 10}
    with _client(tmp_path, versions) as client:
        plain = client.post("/recommendations", json={**body, "adapt": False}).json()
        first = client.post("/recommendations", json=body).json()
        again = client.post("/recommendations", json=body).json()
    assert plain["adapted"] is False and plain["adapt_ms"] is None
    assert first["adapted"] is True and first["adapt_ms"] > 0
    assert again["adapt_ms"] == 0.0 and again["items"] == first["items"]  # from the cache
    assert [i["score"] for i in plain["items"]] != [i["score"] for i in first["items"]]
    assert not set(body["items"]) & {i["item"] for i in first["items"]}


@pytest.mark.parametrize(
    ("method", "url", "payload", "status", "named"),
    [
        ("get", "/users/a/recommendations?k=0", None, 422, "k"),
        ("get", "/users/a/recommendations?k=101", None, 422, "k"),
        ("get", "/users/a/recommendations?k=abc", None, 422, "k"),
        ("post", "/recommendations", {"items": ["m1", "zzz"]}, 422, "zzz"),
        ("post", "/recommendations", {"items": []}, 422, "items"),
        ("post", "/recommendations", {"items": ["m1"], "colour": 1}, 422, "colour"),
        ("post", "/events", {"events": [{"user": "a", "item": "m1", "type": "buy"}]}, 422, "type"),
        ("post", "/events", {"events": [{"user": "", "item": "m1"}]}, 422, "user"),
        (
            "post",
            "/events",
            {"events": [{"user": "a", "item": "m1", "timestamp": -1}]},
            422,
            "timestamp",
        ),
        ("post", "/events", {"events": []}, 422, "events"),
        ("post", "/events", {"events": [{"user": "a", "item": "m1"}] * 1001}, 422, "events"),
        ("post", "/models/0123456789abcdef/activate", None, 404, "version"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    tmp_path, versions, method, url, payload, status, named
):
    with _client(tmp_path, versions) as client:
        r = getattr(client, method)(url, **({} if payload is None else {"json": payload}))
        assert r.status_code == status, r.text
        assert named in r.text
        assert SQLiteStore(tmp_path / "events.db").count_events() == 0


def test_oversized_bodies_are_refused_before_parsing(tmp_path, versions):
    with _client(tmp_path, versions, max_body_bytes=2_000) as client:
        r = client.post("/events", json=_events("a", ITEMS * 3))
        assert r.status_code == 413 and "2000 bytes" in r.text


def test_api_key_guards_writes_and_admin_only(tmp_path, versions):
    with _client(tmp_path, versions, api_key="s3cret") as client:
        assert client.post("/events", json=_events("a", ["m1"])).status_code == 401
        assert client.get("/models").status_code == 401
        ok = client.post("/events", json=_events("a", ["m1"]), headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        assert client.get("/users/a/recommendations").status_code == 200
        assert client.get("/models", headers={"X-API-Key": "wrong"}).status_code == 401


def test_activate_and_rollback_swap_the_served_version(tmp_path, versions):
    v1 = load_served_model(versions[0]).version
    v2 = load_served_model(versions[1]).version
    assert v1 != v2
    with _client(tmp_path, versions) as client:
        listed = {m["version"]: m for m in client.get("/models").json()}
        assert listed[v1]["active"] and not listed[v2]["active"]
        assert client.post("/models/rollback").status_code == 409  # nothing before
        r = client.post(f"/models/{v2}/activate").json()
        assert r == {"active": v2, "previous": v1}
        body = {"items": ["m1", "m2"], "adapt": False}
        assert client.post("/recommendations", json=body).json()["model_version"] == v2
        assert client.post("/models/rollback").json() == {"active": v1, "previous": v2}
        assert client.get("/readyz").json() == {"ready": True, "model_version": v1}
        text = client.get("/metrics").text
        assert f'metarec_model_info{{version="{v1}"}} 1.0' in text
        assert f'version="{v2}"' not in text
        assert 'metarec_requests_total{method="POST",route="/recommendations",status="200"}' in text


def test_no_request_fails_during_hot_swaps(tmp_path, versions):
    v1 = load_served_model(versions[0]).version
    v2 = load_served_model(versions[1]).version
    statuses, stop = [], threading.Event()
    with _client(tmp_path, versions) as client:

        def load():
            while not stop.is_set():
                r = client.post("/recommendations", json={"items": ["m1", "m3", "m5"], "k": 5})
                statuses.append((r.status_code, r.json()["model_version"]))

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        for i in range(20):
            assert client.post(f"/models/{(v2, v1)[i % 2]}/activate").status_code == 200
        stop.set()
        for w in workers:
            w.join()
    assert statuses and all(code == 200 for code, _ in statuses)
    assert {v for _, v in statuses} <= {v1, v2}


def test_a_corrupt_or_missing_checkpoint_stops_start_up(tmp_path, versions, monkeypatch, capsys):
    broken = _checkpoint(tmp_path / "broken", 2)
    weights = next(broken.glob("model-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="sha256"):
        load_served_model(broken)
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--model", str(broken))
    assert code == 1 and "sha256" in err
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--model", str(tmp_path / "nothing"))
    assert code == 1 and "not a metarec checkpoint" in err


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same tests on both event-store backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'e.db'}"
    return request.getfixturevalue("pg_database")


def test_store_keeps_histories_in_time_order(store_url):
    store = open_store(store_url)
    assert store.schema_version() == 1
    store.add_events([Event("u", "i1", "view", 2.0), Event("u", "i2", "dislike", 3.0)])
    store.add_events([Event("u", "i0", "like", 1.0, 5.0), Event("v", "i1", "click", 9.0)])
    again = open_store(store_url)  # a second store (process) on the same data
    assert again.user_items("u") == ["i0", "i1"]  # oldest first, no dislike
    assert again.user_items("u", limit=1) == ["i1"]
    assert again.item_counts(5) == [("i1", 2), ("i0", 1)]
    assert [e.value for e in again.events_since(0.0) if e.item == "i0"] == [5.0]
    with pytest.raises(DataError, match="event type"):
        store.add_events([Event("u", "i3", "view", 4.0), Event("u", "i3", "buy", 4.0)])
    assert store.count_events() == 4  # the refused batch left nothing behind
    store.add_items([("n1", "first text")])
    store.add_items([("n1", "second text"), ("n2", "other")])
    assert again.items() == [("n1", "second text"), ("n2", "other")]
    assert store.migrate() == 1 and store.ping()


def test_concurrent_writers_lose_nothing(store_url):
    store = open_store(store_url)
    errors = []

    def write(worker: int) -> None:
        try:
            for batch in range(25):
                events = [
                    Event(f"w{worker}", f"i{j}", "view", batch * 100.0 + j) for j in range(20)
                ]
                assert store.add_events(events) == 20
        except Exception as e:  # collected: a failed writer must fail the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_events() == 4 * 25 * 20
    assert all(len(store.user_items(f"w{w}")) == 500 for w in range(4))


def test_store_refuses_newer_schemas_and_bad_files(tmp_path, pg_database):
    path = tmp_path / "e.db"
    open_store(path).add_events([Event("u", "i", "view", 1.0)])
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    with pytest.raises(DataError, match="newer"):
        SQLiteStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match=r"junk\.db"):
        SQLiteStore(junk)
    with pytest.raises(ConfigError, match="expected postgresql"):
        open_store("mysql://localhost/metarec")
    base = pg_database.rpartition("/")[0]
    with pytest.raises(DataError, match="cannot connect"):
        open_store(f"{base}/no_such_database")


def test_the_service_runs_on_postgresql(tmp_path, versions, pg_database):
    settings = ServeSettings(models=versions, db=pg_database)
    with TestClient(create_app(settings)) as client:
        assert client.post("/events", json=_events("p", ["m1", "m2"])).json() == {"stored": 2}
        r = client.get("/users/p/recommendations", params={"k": 4}).json()
        assert r["source"] == "model" and len(r["items"]) == 4
        assert client.get("/readyz").status_code == 200
    assert open_store(pg_database).user_items("p") == ["m1", "m2"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model, db, port):
    import subprocess
    import sys
    import time

    import httpx

    code = "from metarec.cli import main; main()"
    args = ["serve", "--model", str(model), "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not become ready in 60 s")


@pytest.mark.slow
def test_kill_9_during_ingestion_loses_no_acknowledged_event(tmp_path, versions):
    """The server is killed with SIGKILL while batches stream in; every batch it acknowledged
    is in the store afterwards, and a restarted server serves them."""
    import os
    import signal
    import time

    import httpx

    db, port = tmp_path / "events.db", _free_port()
    proc = _start_server(versions[0], db, port)
    acked: list[float] = []
    url = f"http://127.0.0.1:{port}/events"
    batch_no, killed_at = 0, time.monotonic() + 1.5
    with httpx.Client(timeout=5) as client:
        while True:
            stamps = [batch_no * 100.0 + j for j in range(50)]
            body = {
                "events": [{"user": "k", "item": f"m{int(t) % 30}", "timestamp": t} for t in stamps]
            }
            try:
                r = client.post(url, json=body)
            except httpx.HTTPError:
                break  # the server is gone
            if r.status_code == 200:
                acked += stamps
            batch_no += 1
            if time.monotonic() > killed_at and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL and len(acked) >= 100
    stored = {e.timestamp for e in SQLiteStore(db).events_since(0.0)}
    assert set(acked) <= stored
    proc = _start_server(versions[0], db, port)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/users/k/recommendations", params={"k": 3})
        assert r.status_code == 200 and r.json()["source"] == "model"
    finally:
        proc.terminate()
        proc.wait(10)


def _hybrid_checkpoint(path, seed=0):
    """A text + id checkpoint whose text width is the bundled encoder's (384)."""
    torch.manual_seed(seed)
    cfg = SeqRecConfig(
        n_items=N_ITEMS, dim=16, n_layers=1, n_heads=2, max_len=8, dropout=0.0, text_dim=384
    )
    model = SeqRec(cfg, torch.randn(N_ITEMS, 384) / 20)
    save_checkpoint(path, Checkpoint(model, "seqrec", ["u0"], ITEMS, {"dataset": "test"}))
    return path


def test_new_items_are_scored_from_their_text_alone():
    from metarec.models.seqrec import with_new_items

    torch.manual_seed(0)
    cfg = SeqRecConfig(n_items=6, dim=8, n_layers=1, n_heads=2, max_len=4, text_dim=5)
    model = SeqRec(cfg, torch.randn(6, 5)).eval()
    new_text = torch.randn(2, 5)
    grown = with_new_items(model, new_text).eval()
    assert grown.config.n_items == 8 and model.config.n_items == 6
    from metarec.meta.tasks import history_batch

    batch = history_batch([0, 3, 2], 4)
    with torch.no_grad():
        before, after = model.score(batch), grown.score(batch)
        assert torch.allclose(after[:, :6], before, atol=1e-6)  # old items unchanged
        expected = grown.user_vectors(batch, grown.items.all_items()) @ (
            model.items.text_proj(new_text).T
        )
        assert torch.allclose(after[:, 6:], expected, atol=1e-5)
    id_only = SeqRec(SeqRecConfig(n_items=6, dim=8, n_heads=2, item_repr="id"))
    with pytest.raises(ValueError, match="id-only"):
        with_new_items(id_only, new_text)
    with pytest.raises(ValueError, match="shape"):
        with_new_items(model, torch.randn(2, 4))


def test_post_items_makes_new_items_recommendable_and_keeps_them(tmp_path, versions):
    hybrid = _hybrid_checkpoint(tmp_path / "hybrid")
    new = {"items": [{"item": "fresh-1", "text": "A space adventure with robots"}]}
    with _client(tmp_path, (hybrid,)) as client:
        r = client.post("/items", json=new)
        assert r.status_code == 200 and r.json() == {"stored": 1, "new": 1}
        body = {"items": ["m1", "m2", "fresh-1"], "k": 31, "adapt": False, "exclude_seen": False}
        got = client.post("/recommendations", json=body).json()["items"]
        assert len(got) == 31 and "fresh-1" in {i["item"] for i in got}
        assert next(i["text"] for i in got if i["item"] == "fresh-1") == new["items"][0]["text"]
        again = client.post("/items", json=new).json()
        assert again == {"stored": 1, "new": 0}
    with _client(tmp_path, (hybrid,)) as client:  # a restart knows it from the store
        ok = client.post("/recommendations", json={"items": ["fresh-1", "m3"], "k": 5})
        assert ok.status_code == 200 and ok.json()["adapted"] is True
    with _client(tmp_path / "other", versions) as client:  # id-only models refuse
        r = client.post("/items", json=new)
        assert r.status_code == 422 and "id only" in r.text


@pytest.mark.slow
def test_serve_load_bench_end_to_end(tmp_path):
    """serve-load on a tiny catalogue: the server as a subprocess, the load from another one."""
    from metarec.data.loaders.registry import load_dataset
    from metarec.evaluation.report import read_metrics_json
    from metarec.protocols.serve_load import ServeLoadConfig, run_serve_load

    lines = ["user,item,ts"]
    lines += [f"u{u},m{(u * 7 + t) % N_ITEMS},{t}" for u in range(12) for t in range(8)]
    csv = tmp_path / "inter.csv"
    csv.write_text("\n".join(lines) + "\n")
    ds = load_dataset(csv)
    torch.manual_seed(0)
    cfg = SeqRecConfig(n_items=ds.n_items, dim=16, n_layers=1, n_heads=2, max_len=8, item_repr="id")
    model = save_checkpoint(
        tmp_path / "model", Checkpoint(SeqRec(cfg), "seqrec", ds.users, ds.items.ids, {})
    )
    rates = {"known-user": 30.0, "new-user": 10.0, "ingest": 10.0}
    run = ServeLoadConfig(
        model=model, data=str(csv), out=tmp_path / "out", seconds=1.5, rates=rates
    )
    res = run_serve_load(run, log=lambda m: None)
    doc = read_metrics_json(res["metrics_json"])
    got = {r["setting"]["mix"]: r for r in doc["results"]}
    assert set(got) == {"known-user", "new-user", "ingest"}
    for row in got.values():
        assert row["metrics"]["errors"] == 0 and row["metrics"]["rps"] > 3
        assert 0 < row["metrics"]["p50_ms"] <= row["metrics"]["p99_ms"]
        assert row["cost"]["peak_rss_mb"] > 50
    ingest = got["ingest"]["metrics"]
    assert ingest["events_acked"] == ingest["events_stored"] > 0
    assert doc["seed_events_per_s"] > 0


def test_chunked_bodies_over_the_limit_are_refused(tmp_path, versions):
    body = json.dumps(_events("a", ITEMS * 3)).encode()
    assert len(body) > 2_000
    with _client(tmp_path, versions, max_body_bytes=2_000) as client:
        chunks = (body[i : i + 500] for i in range(0, len(body), 500))  # no Content-Length
        r = client.post("/events", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "2000 bytes" in r.text
        small = json.dumps(_events("a", ["m1"])).encode()
        r = client.post(
            "/events", content=iter([small]), headers={"content-type": "application/json"}
        )
        assert r.status_code == 200 and r.json() == {"stored": 1}
    assert SQLiteStore(tmp_path / "events.db").count_events() == 1


def test_items_add_grows_a_checkpoint_without_retraining(tmp_path, monkeypatch, capsys):
    from metarec.meta.tasks import history_batch
    from metarec.training.checkpoint import load_checkpoint

    base = _hybrid_checkpoint(tmp_path / "base")
    table = tmp_path / "new.csv"
    table.write_text("item_id,text\nz1,A quiet film about the sea\nz2,Loud robots fight\n")
    args = ["items", "add", "--model", str(base), "--items", str(table), "--out"]
    code, out, err = run_cli(monkeypatch, capsys, *args, str(tmp_path / "grown"))
    assert code == 0, err
    assert "added 2 items: 32 in the catalogue" in out
    old, new = load_checkpoint(base), load_checkpoint(tmp_path / "grown")
    assert new.items == [*ITEMS, "z1", "z2"] and new.meta["items_added"] == 2
    from metarec.training.checkpoint import read_item_text

    text = read_item_text(tmp_path / "grown", new.items)
    assert text[-2:] == ["A quiet film about the sea", "Loud robots fight"]
    batch = history_batch([1, 5, 7], 8)
    with torch.no_grad():
        assert torch.allclose(
            new.model.score(batch)[:, :N_ITEMS], old.model.score(batch), atol=1e-5
        )
    code, _, err = run_cli(monkeypatch, capsys, *args, str(tmp_path / "again"))
    assert code == 0

    def add(model, table):
        argv = ["items", "add", "--model", str(model), "--items", str(table), "--out"]
        return run_cli(monkeypatch, capsys, *argv, str(tmp_path / "refused"))

    clash = tmp_path / "clash.csv"
    clash.write_text("item_id,text\nm3,Already there\n")
    code, _, err = add(base, clash)
    assert code == 1 and "'m3'" in err and "already in the catalogue" in err
    code, _, err = add(_checkpoint(tmp_path / "ids", 0), table)
    assert code == 1 and "by id only" in err


def test_event_types_have_one_definition():
    """The HTTP schema accepts exactly the types the store accepts (one list, in the store)."""
    from metarec.serving.schemas import EventIn
    from metarec.serving.store import EVENT_TYPES

    assert tuple(EventIn.model_json_schema()["properties"]["type"]["enum"]) == EVENT_TYPES
