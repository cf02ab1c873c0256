"""metarec: recommendation with pretrained models that adapt fast."""

from __future__ import annotations

__version__ = "0.1.0"
