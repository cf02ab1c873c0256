"""The HTTP service: event store, model registry, request-time adaptation (``create_app``)."""

from metarec.serving.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
