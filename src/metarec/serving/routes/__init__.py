"""The HTTP API, one ``APIRouter`` per resource; ``create_app`` includes ``ROUTERS`` in order."""

from __future__ import annotations

from metarec.serving.routes import events, health, items, models, recommendations

# The order is the OpenAPI document's path order.
ROUTERS = (
    events.router,
    recommendations.router,
    items.router,
    health.router,
    models.router,
)

__all__ = ["ROUTERS"]
