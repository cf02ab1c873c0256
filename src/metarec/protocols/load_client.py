"""The load generator of serve-load, run as its own process (``-m metarec.protocols.load_client``).

Open loop: requests are started on a fixed schedule (``rate`` per second) whatever the answers
take, so a slow server shows up as latency, not as a lower offered rate; at most ``max_inflight``
are outstanding (beyond that a request counts as an error: the server did not keep up). Each
mix runs for ``seconds`` or ``max_requests``, whichever comes first. The result is one JSON
object on stdout: per mix the requests sent, errors, held rate and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

import httpx
import numpy as np


async def _run_mix(
    client: httpx.AsyncClient,
    make_request,
    rate: float,
    seconds: float,
    max_requests: int,
    max_inflight: int,
) -> dict:
    latencies: list[float] = []
    errors = 0
    acked = 0
    inflight: set[asyncio.Task] = set()

    async def one(index: int) -> None:
        nonlocal errors, acked
        method, url, body, n_events = make_request(index)
        start = time.perf_counter()
        try:
            r = await client.request(method, url, json=body)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(1000.0 * (time.perf_counter() - start))
        if ok:
            acked += n_events
        else:
            errors += 1

    begin = time.perf_counter()
    sent = 0
    while sent < max_requests and time.perf_counter() - begin < seconds:
        due = begin + sent / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(inflight) >= max_inflight:
            errors += 1  # the server is not keeping up with the offered rate
        else:
            task = asyncio.create_task(one(sent))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        sent += 1
    if inflight:
        await asyncio.wait(inflight)
    wall = time.perf_counter() - begin
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "sent": sent,
        "errors": errors,
        "rps": (sent - errors) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "events_acked": acked,
        "seconds": wall,
    }


def _mixes(args, users: list[str], items: list[str]):
    rng = random.Random(args.seed)

    def known(_: int):
        user = rng.choice(users)
        return "GET", f"/users/{user}/recommendations?k=10", None, 0

    def new_user(_: int):
        picked = rng.sample(items, args.k)
        return "POST", "/recommendations", {"items": picked, "k": 10}, 0

    def ingest(index: int):
        base = 2_000_000_000 + index * args.batch
        events = [
            {
                "user": f"load-{rng.randrange(1000)}",
                "item": rng.choice(items),
                "timestamp": base + j,
            }
            for j in range(args.batch)
        ]
        return "POST", "/events", {"events": events}, args.batch

    return {"known-user": known, "new-user": new_user, "ingest": ingest}


async def main_async(args) -> dict:
    spec = json.loads(args.spec)
    users, items = spec["users"], spec["items"]
    mixes = _mixes(args, users, items)
    out = {}
    limits = httpx.Limits(max_connections=args.max_inflight)
    async with httpx.AsyncClient(base_url=args.url, timeout=30, limits=limits) as client:
        for name, rate in spec["rates"].items():
            out[name] = await _run_mix(
                client, mixes[name], rate, args.seconds, args.max_requests, args.max_inflight
            )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--spec", required=True, help="JSON: users, items, rates per mix")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=5_000)
    p.add_argument("--max-inflight", type=int, default=64)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    json.dump(asyncio.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
