"""Request and response bodies of the HTTP API (pydantic), with their limits and examples.

Limits that depend on the service's settings (batch length, k, items per request) are checked
in the endpoints against ``ServeSettings``; the fixed ones (id length, finite numbers) here.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from metarec.serving.store import EVENT_TYPES

Id = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
EventType = Literal[EVENT_TYPES]  # the store owns the list; a Literal over the tuple


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return value


class EventIn(_Strict):
    user: str = Id
    item: str = Id
    type: EventType = "view"
    value: float | None = Field(default=None, description="rating value, or any score")
    timestamp: float | None = Field(
        default=None, ge=0, description="seconds since the epoch; default: when it is received"
    )

    @field_validator("value")
    @classmethod
    def _value_finite(cls, v: float | None) -> float | None:
        return _finite(v, "value")

    @field_validator("timestamp")
    @classmethod
    def _timestamp_finite(cls, v: float | None) -> float | None:
        return _finite(v, "timestamp")


class EventsIn(_Strict):
    events: list[EventIn] = Field(min_length=1)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {"user": "42", "item": "1", "type": "view", "timestamp": 1700000000},
                        {"user": "42", "item": "3114", "type": "rating", "value": 4.5},
                    ]
                }
            ]
        },
    )


class EventsAck(BaseModel):
    stored: int = Field(description="events durably stored by this request")


class RecommendedItem(BaseModel):
    item: str
    score: float
    text: str = ""
    p_like: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="P(like) from the model's like head (metarec like fit); null without one",
    )


class Recommendations(BaseModel):
    user: str | None
    model_version: str
    source: Literal["model", "popularity"]
    adapted: bool = False
    adapt_ms: float | None = None
    items: list[RecommendedItem]


class NewUserRequest(_Strict):
    user: str | None = Field(default=None, min_length=1, max_length=256)
    items: list[str] = Field(
        min_length=1, description="the user's interactions, raw item ids, oldest first"
    )
    ratings: list[float | None] | None = Field(
        default=None, description="one rating (or null) per item, for p_like; default none"
    )
    k: int = Field(default=10, ge=1)
    adapt: bool = True
    exclude_seen: bool = True

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"items": ["1", "50", "260", "296", "318"], "k": 10}]},
    )

    @field_validator("items")
    @classmethod
    def _ids(cls, items: list[str]) -> list[str]:
        for i, raw in enumerate(items):
            if not raw or len(raw) > 256:
                raise ValueError(f"items[{i}] must be 1 to 256 characters")
        return items

    @field_validator("ratings")
    @classmethod
    def _ratings_finite(cls, ratings: list[float | None] | None) -> list[float | None] | None:
        for i, v in enumerate(ratings or []):
            _finite(v, f"ratings[{i}]")
        return ratings

    @model_validator(mode="after")
    def _one_rating_per_item(self) -> NewUserRequest:
        if self.ratings is not None and len(self.ratings) != len(self.items):
            raise ValueError(
                f"ratings: {len(self.ratings)} given for {len(self.items)} items; give one each"
            )
        return self


class Adaptation(BaseModel):
    """How a version adapts at request time: ``method`` no-adapt | finetune | a meta-learner |
    default (a plain checkpoint's default fine-tuning); ``judged``: chosen by meta-train on
    held-out users, with the NDCG@10 gain over no adaptation, its 95% CI and the user count."""

    method: str
    judged: bool
    gain_ndcg10: float | None = None
    ci95: list[float] | None = None
    n_users: int | None = None


class ModelVersion(BaseModel):
    version: str
    active: bool
    loaded: bool
    previous: bool
    adaptation: Adaptation | None = None  # None: the folder's meta.json cannot be read


class Activated(BaseModel):
    active: str
    previous: str | None


class ItemIn(_Strict):
    item: str = Id
    text: str = Field(min_length=1, max_length=4_000, description="title, genres, description")


class ItemsIn(_Strict):
    items: list[ItemIn] = Field(min_length=1)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"items": [{"item": "new-1", "text": "Space Odyssey 2 (2031) Sci-Fi"}]}]
        },
    )


class ItemsAck(BaseModel):
    stored: int = Field(description="items stored (new or with new text)")
    new: int = Field(description="items the active model did not know before")
