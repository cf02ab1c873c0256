"""Data layer: loading, validation, inspection and splits; produces ``schema.Dataset``.

Names are imported lazily (PEP 562) so that ``import metarec.data.schema`` stays light and does
not pull in pyarrow.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "schema": (
        "SPLIT_TEST",
        "SPLIT_TRAIN",
        "SPLIT_VALID",
        "Dataset",
        "Interactions",
        "ItemCatalog",
    ),
    "loaders": ("load_dataset",),
    "inspection": ("format_inspection", "inspect_dataset"),
    "validation": ("require_time",),
    "splits": (
        "ColdStartFold",
        "Split",
        "cold_start_folds",
        "given",
        "leave_one_out",
        "support_query",
        "temporal",
        "temporal_fraction",
        "user_sequences",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'metarec.data' has no attribute {name!r}")
    return getattr(import_module(f"metarec.data.{module}"), name)
