"""``POST /events``: users' behaviour into the event store."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException

from metarec.serving.deps import KeyRequired, Service, Settings
from metarec.serving.schemas import EventsAck, EventsIn
from metarec.serving.store import Event

router = APIRouter()


@router.post("/events", response_model=EventsAck, dependencies=[KeyRequired])
def post_events(body: EventsIn, s: Service, settings: Settings) -> EventsAck:
    """Store a batch of events; the answer comes after they are durably written."""
    if len(body.events) > settings.max_batch:
        raise HTTPException(
            422, f"events: at most {settings.max_batch} per request, got {len(body.events)}"
        )
    now = time.time()
    events = [
        Event(e.user, e.item, e.type, now if e.timestamp is None else e.timestamp, e.value)
        for e in body.events
    ]
    stored = s.store.add_events(events)
    s.metrics.events_stored.inc(stored)
    return EventsAck(stored=stored)
