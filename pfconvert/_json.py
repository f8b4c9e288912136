"""Strict JSON: what pfconvert prints or writes as JSON is read by any JSON reader (no NaN, no Infinity)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["finite_json", "strict_dumps"]


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-inf) replaced by None, in dicts, lists and tuples."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def strict_dumps(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``data`` after :func:`finite_json`, with ``allow_nan=False`` (other keywords as json.dumps:
    a ``default`` converter's results are made finite too)."""
    default = kwargs.pop("default", None)
    if default is not None:
        data = json.loads(json.dumps(data, default=default, allow_nan=True))  # apply it, then clean what it gave
    return json.dumps(finite_json(data), allow_nan=False, **kwargs)
