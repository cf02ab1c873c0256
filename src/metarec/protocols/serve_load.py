"""PROTOCOLS.md serve-load: the service started as a user starts it, loaded from another process.

1. A fresh event store is filled with the dataset's interactions (the known users' histories),
   timed: ingestion straight into the store.
2. ``metarec serve --model CKPT --db URL --port P`` is started as a subprocess and waited for.
3. ``metarec.protocols.load_client`` runs in its own process over loopback, one mix after the other
   at its offered rate: known users' recommendations, new users with K interactions adapted at
   request time, event ingestion in batches.
4. The server's peak resident memory is read from /proc before it is stopped; the events the
   store holds are counted against the events the server acknowledged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from metarec.data.loaders.registry import load_dataset
from metarec.errors import CheckpointError, ConfigError
from metarec.evaluation.report import ResultRow
from metarec.protocols.experiment import Experiment
from metarec.serving.registry import load_served_model
from metarec.serving.store import Event, open_store

PROTOCOL = "serve-load"
DEFAULT_RATES = {"known-user": 100.0, "new-user": 20.0, "ingest": 40.0}


@dataclass(frozen=True)
class ServeLoadConfig:
    model: Path
    data: str | None = None  # the dataset the model was trained on: its users seed the store
    db: str | None = None  # None: a fresh SQLite file in ``out``
    out: Path = Path("metarec-runs/serve-load")
    seconds: float = 20.0  # per mix
    max_requests: int = 5_000  # per mix
    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    k: int = 5  # interactions per new user
    batch: int = 100  # events per ingestion request

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rates) - set(DEFAULT_RATES))
        if unknown or not self.rates or any(r <= 0 for r in self.rates.values()):
            raise ConfigError(
                f"rates must be positive, for mixes among {sorted(DEFAULT_RATES)}; got {self.rates}"
            )
        if self.seconds <= 0 or self.max_requests < 1 or self.k < 1 or self.batch < 1:
            raise ConfigError("seconds, max_requests, k and batch must be positive")


def parse_rates(items: list[str] | None) -> dict[str, float]:
    """``--rate MIX=NUMBER`` flags over the default offered rates."""
    rates = dict(DEFAULT_RATES)
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            rates[name] = float(value)
        except ValueError:
            raise ConfigError(f"--rate {item!r}: expected MIX=NUMBER") from None
    return rates


def run_serve_load(cfg: ServeLoadConfig, log: Callable[[str], None] = print) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    served = load_served_model(cfg.model)  # a bad checkpoint stops here, with its message
    dataset = load_dataset(cfg.data)
    if list(served.checkpoint.items) != list(dataset.items.ids):
        raise CheckpointError(f"{cfg.model} was not trained on {dataset.name}'s catalogue")
    db = cfg.db or str(out / "events.db")
    if cfg.db is None:
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
    store = open_store(db)
    if store.count_events():
        raise ConfigError(f"event store {db} already holds events; serve-load needs an empty one")
    seeded, seed_rate = _seed(store, dataset)
    log(f"seeded {seeded:,} events into the store at {seed_rate:,.0f} events/s")
    port = _free_port()
    server = _start_server(cfg.model, db, port, out / "server.log")
    try:
        log(f"server ready on port {port} (pid {server.pid})")
        spec = {
            "users": list(dataset.users),
            "items": list(dataset.items.ids),
            "rates": cfg.rates,
        }
        client = [
            sys.executable,
            *("-m", "metarec.protocols.load_client", "--url", f"http://127.0.0.1:{port}"),
            *("--spec", json.dumps(spec), "--seconds", str(cfg.seconds)),
            *("--max-requests", str(cfg.max_requests), "--k", str(cfg.k)),
            *("--batch", str(cfg.batch)),
        ]
        done = subprocess.run(client, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"load client failed: {done.stderr[-2000:]}")
        mixes = json.loads(done.stdout)
        peak_mb = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    stored = store.count_events() - seeded
    return _write(cfg, dataset.name, mixes, stored, peak_mb, seed_rate, out, log)


def _seed(store, dataset) -> tuple[int, float]:
    inter = dataset.interactions
    users, items = dataset.users, dataset.items.ids
    start = time.perf_counter()
    n = len(inter)
    for lo in range(0, n, 1_000):
        hi = min(n, lo + 1_000)
        store.add_events(
            [
                Event(users[u], items[i], "view", float(t))
                for u, i, t in zip(
                    inter.user[lo:hi], inter.item[lo:hi], inter.timestamp[lo:hi], strict=True
                )
            ]
        )
    return n, n / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command() -> list[str]:
    script = Path(sys.executable).with_name("metarec")
    if script.exists():
        return [str(script)]
    found = shutil.which("metarec")
    return [found] if found else [sys.executable, "-c", "from metarec.cli import main; main()"]


def _start_server(model: Path, db: str, port: int, log_path: Path) -> subprocess.Popen:
    args = [*_serve_command(), "serve", "--model", str(model), "--db", db, "--port", str(port)]
    log_file = log_path.open("w")
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"metarec serve exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"metarec serve was not ready after 120 s; see {log_path}")


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _write(cfg, dataset_name, mixes, stored, peak_mb, seed_rate, out, log) -> dict:
    rows = []
    for name, m in mixes.items():
        metrics = {k: float(m[k]) for k in ("rps", "p50_ms", "p99_ms", "errors")}
        if name == "ingest":
            metrics["events_acked"] = float(m["events_acked"])
            metrics["events_stored"] = float(stored)
        cost = {"offered_rps": cfg.rates[name], "requests": float(m["sent"])}
        if name == "ingest":
            cost["events_per_s"] = m["events_acked"] / m["seconds"]
        if peak_mb == peak_mb:  # not NaN
            cost["peak_rss_mb"] = peak_mb
        setting = {"mix": name, "rate": cfg.rates[name]}
        if name == "new-user":
            setting["K"] = cfg.k
        if name == "ingest":
            setting["batch"] = cfg.batch
        rows.append(ResultRow("metarec-serve", setting, metrics, cost))
        log(
            f"{name}: {m['rps']:.1f} req/s held of {cfg.rates[name]:g} offered, p50 "
            f"{m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, {m['errors']} errors"
        )
    extra = {"seed_events_per_s": seed_rate, "server_peak_rss_mb": peak_mb, "cpus": os.cpu_count()}
    exp = Experiment(PROTOCOL, dataset_name, [0], out, "serve-load: the service under load")
    exp.add(*rows)
    intro = (
        f"`metarec serve --model {cfg.model}` on loopback, loaded by a separate process (open "
        f"loop, each mix for {cfg.seconds:g} s or {cfg.max_requests} requests). The store was "
        f"first filled with {dataset_name}'s interactions ({seed_rate:,.0f} events/s straight "
        f"into the store). Server peak memory: {peak_mb:.0f} MB."
    )
    return exp.finish(intro, extra=extra)
