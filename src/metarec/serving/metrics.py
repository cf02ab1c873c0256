"""Prometheus metrics of one service instance (its own registry, so apps never share series)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "metarec_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "metarec_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.adapt_seconds = Histogram(
            "metarec_adapt_seconds",
            "request-time adaptation to a new user",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_stored = Counter(
            "metarec_events_stored", "events durably stored", registry=self.registry
        )
        self.model = Gauge(
            "metarec_model_info",
            "the active model version (1)",
            ["version"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, start: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(time.perf_counter() - start)

    def model_info(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version).set(1)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
