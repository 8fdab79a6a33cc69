"""Scalar types shared by the spec and status models.

Each type carries the validation the API server enforces (pattern, bounds) *and* the
marker that tells the CRD generator how to render it, so the two cannot drift.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

# Go/CEL duration syntax restricted to the units a rollout needs ("90s", "1h30m", "500ms").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=32),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32},
        mode="validation",
    ),
]
"""A duration such as ``30m`` or ``1h30m``, as Kubernetes and CEL write them."""


def parse_duration(text: str) -> timedelta:
    """Turn a validated :data:`Duration` string into a ``timedelta``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like '30s', '15m' or '1h30m'")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


# Kubernetes resource.Quantity, as the apimachinery regexp accepts it.
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"


def _quantity_to_str(value: Any) -> Any:
    # YAML users write `cpu: 8`; the API server keeps it an integer (int-or-string).
    if isinstance(value, bool):
        raise ValueError("a quantity is a number or a string such as '8' or '64Gi'")
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            # The one anyOf a structural schema allows; the pattern applies to strings only.
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        },
        mode="validation",
    ),
]
"""A Kubernetes quantity (``8``, ``500m``, ``64Gi``)."""

# DNS-1123 label: names of Kubernetes objects we create from the LLMDeployment name.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
