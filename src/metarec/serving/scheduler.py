"""Refresh on a schedule: ``parse_duration("30m")`` and ``run_every(cfg, every_s)``.

The loop is here, not in the CLI, so it can be tested without a process or real sleeping: the
refresh function, the sleep and the number of rounds are arguments.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

from metarec.errors import ConfigError
from metarec.serving.refresh import RefreshConfig, RefreshResult, refresh

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, name: str = "duration") -> float:
    """Seconds in ``text``: a number with an optional unit s, m, h or d (``90``, ``30m``,
    ``1.5h``); ``name`` says in the error which input was wrong (e.g. ``--every``)."""
    try:
        value = float(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else float(text)
    except (ValueError, IndexError):
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{name} {text!r}: expected a number with s, m, h or d")
    if value <= 0:
        raise ConfigError(f"{name} {text!r} must be positive")
    return value


def run_every(
    cfg: RefreshConfig,
    every_s: float | None,
    *,
    run: Callable[..., RefreshResult] = refresh,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
    on_result: Callable[[RefreshResult], None] = lambda res: None,
    rounds: int | None = None,
) -> RefreshResult:
    """Refresh once (``every_s`` None) or every ``every_s`` seconds, for ``rounds`` rounds or
    until interrupted; an accepted version is the next round's base (its events start after
    it), a rejected one leaves the base as it was. Returns the last round's result."""
    if every_s is not None and not (math.isfinite(every_s) and every_s > 0):
        raise ConfigError(f"every_s must be a positive number of seconds, got {every_s}")
    if rounds is not None and rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    done = 0
    while True:
        res = run(cfg, log=log)
        on_result(res)
        done += 1
        if every_s is None or (rounds is not None and done >= rounds):
            return res
        if res.accepted:  # the next round starts from the version just made
            cfg = replace(cfg, base=res.path, since=None)
        sleep(every_s)
