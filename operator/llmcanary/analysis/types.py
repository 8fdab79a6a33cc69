"""What the analysis works on: the PromQL for one arm, and what it measured.

Pure data. Providers (I/O) turn :class:`ArmQueries` into :class:`ArmSample`; the
verdict (pure) compares two samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

Arm = Literal["stable", "canary"]


@dataclass(frozen=True)
class ArmQueries:
    """Instant PromQL queries for one arm, each returning one number (or no series).

    ``latency`` answers milliseconds at the configured quantile; ``requests`` and
    ``errors`` answer counts over the analysis window.
    """

    arm: Arm
    latency: str
    requests: str
    errors: str


@dataclass(frozen=True)
class ArmSample:
    """One arm over one analysis window; ``None`` where the series was missing."""

    latency_ms: float | None
    requests: float | None
    errors: float | None

    @property
    def samples(self) -> int | None:
        if self.requests is None:
            return None
        return round(self.requests + (self.errors or 0.0))

    @property
    def error_rate(self) -> float | None:
        """Failed requests as a fraction of all requests (0..1); None without traffic."""
        total = self.samples
        if not total:
            return None
        return (self.errors or 0.0) / total


# Why a query got no usable answer: no answer in time, no connection, an HTTP error
# (bad PromQL included), an answer that is not one number, anything else.
QueryErrorReason = Literal["timeout", "connection", "http", "answer", "error"]
QUERY_ERROR_REASONS: tuple[QueryErrorReason, ...] = get_args(QueryErrorReason)


class MetricsUnavailable(Exception):
    """The metrics source did not answer, or answered something unusable."""

    def __init__(self, message: str, reason: QueryErrorReason = "error") -> None:
        super().__init__(message)
        self.reason: QueryErrorReason = reason


class MetricsProvider(Protocol):
    def sample(self, queries: ArmQueries) -> ArmSample:
        """Run the arm's queries. Raises :class:`MetricsUnavailable` if the source fails."""
        ...
