"""Scalar types shared by the spec and status models.

Each type carries the validation the API server enforces (pattern, bounds) *and* the
marker that tells the CRD generator how to render it, so the two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

# Go/CEL duration syntax restricted to the units a rollout needs ("90s", "1h30m", "500ms").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Longer than any rollout's step (and within what timedelta and CEL hold): a bound on
# every duration, so that an absurd one is refused at admission, not raised mid-rollout.
MAX_DURATION_SECONDS = 365 * 24 * 3600.0


def duration_seconds(text: str) -> float:
    """The seconds a :data:`DURATION_PATTERN` string spells (no bound applied)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like '30s', '15m' or '1h30m'")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def parse_duration(text: str) -> timedelta:
    """Turn a validated :data:`Duration` string into a ``timedelta``."""
    seconds = duration_seconds(text)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than a year")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class DurationBetween(GroupedMetadata):
    """``Annotated[str, DurationBetween("1s", "24h")]``: a duration in that range, checked
    by the model and by a CEL rule on the field, with the same message."""

    minimum: str
    maximum: str

    @property
    def message(self) -> str:
        return f"must be a duration from {self.minimum} to {self.maximum}"

    def _within(self, text: str) -> str:
        if (
            not duration_seconds(self.minimum)
            <= duration_seconds(text)
            <= duration_seconds(self.maximum)
        ):
            raise ValueError(f"{text!r} {self.message}")
        return text

    def __iter__(self) -> Iterator[Any]:
        yield Field(pattern=DURATION_PATTERN, max_length=32)
        yield AfterValidator(self._within)
        yield WithJsonSchema(
            {
                "type": "string",
                "pattern": DURATION_PATTERN,
                "maxLength": 32,
                "x-kubernetes-validations": [
                    {
                        "rule": f"duration(self) >= duration('{self.minimum}')"
                        f" && duration(self) <= duration('{self.maximum}')",
                        "message": self.message,
                    }
                ],
            },
            mode="validation",
        )


Duration = Annotated[str, DurationBetween("0s", "8760h")]
"""A duration such as ``30m`` or ``1h30m``, as Kubernetes and CEL write them, at most a
year; fields with a tighter range use :class:`DurationBetween`."""


# Kubernetes resource.Quantity, as the apimachinery regexp accepts it, less the sign and
# long exponents: every quantity in the spec is a resource amount, and "-1" or "1e308"
# would pass admission only to be refused on the Deployment (or overflow the estimate).
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = rf"^\+?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE]\+?[0-9]{{1,2}}))?$"
# Above any node's resources (and within int64, which the API server stores).
MAX_QUANTITY_INTEGER = 2**53


def _quantity_to_str(value: Any) -> Any:
    # YAML users write `cpu: 8`; the API server keeps it an integer (int-or-string).
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("a quantity is an integer or a string such as '1.5', '500m' or '64Gi'")
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_QUANTITY_INTEGER:
            raise ValueError(f"a quantity is from 0 to {MAX_QUANTITY_INTEGER}")
        return str(int(value))
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY_PATTERN, max_length=64),
    WithJsonSchema(
        {
            # The one anyOf a structural schema allows. The pattern and the length apply to
            # strings only, the bounds to integers only.
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "minimum": 0,
            "maximum": MAX_QUANTITY_INTEGER,
        },
        mode="validation",
    ),
]
"""A Kubernetes quantity of a resource (``8``, ``500m``, ``64Gi``): never negative."""

# DNS-1123 label: names of Kubernetes objects we create from the LLMDeployment name.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
