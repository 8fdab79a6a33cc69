"""What a load run measured, summarised (pure: no clock, no I/O).

Per request: time to first token (TTFT), time per output token after the first (TPOT),
end-to-end latency and the number of output tokens. Per run: percentiles of each,
throughput, and errors by kind, with warm-up requests left out by the caller.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Distribution", "RequestResult", "Summary", "percentile", "summarize"]

QUANTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class RequestResult:
    """One request. Times are seconds on a monotonic clock; ``error`` is None on success."""

    started: float
    finished: float
    first_token: float | None
    tokens: int
    status: int | None = None  # HTTP status; None when no answer came (connection refused)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def tpot(self) -> float | None:
        if self.first_token is None or self.tokens < 2:
            return None
        return (self.finished - self.first_token) / (self.tokens - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Distribution:
    """Milliseconds."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Distribution:
        ms = [s * 1000 for s in seconds]
        mean = sum(ms) / len(ms) if ms else math.nan
        p50, p90, p95, p99 = (percentile(ms, q) for q in QUANTILES)
        return cls(p50=p50, p90=p90, p95=p95, p99=p99, mean=mean)


@dataclass(frozen=True)
class Summary:
    requests: int
    succeeded: int
    errors: dict[str, int]
    duration_s: float
    requests_per_s: float
    output_tokens: int
    output_tokens_per_s: float
    ttft_ms: Distribution
    tpot_ms: Distribution
    latency_ms: Distribution
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _error_kind(result: RequestResult) -> str:
    if result.status is not None and result.status >= 400:
        return f"http {result.status}"
    return result.error or "error"


def summarize(results: Sequence[RequestResult], duration_s: float) -> Summary:
    """``results`` measured over ``duration_s`` seconds of wall time (warm-up excluded)."""
    good = [r for r in results if r.ok]
    errors = Counter(_error_kind(r) for r in results if not r.ok)
    tokens = sum(r.tokens for r in good)
    span = duration_s if duration_s > 0 else math.nan
    return Summary(
        requests=len(results),
        succeeded=len(good),
        errors=dict(sorted(errors.items())),
        duration_s=duration_s,
        requests_per_s=len(good) / span,
        output_tokens=tokens,
        output_tokens_per_s=tokens / span,
        ttft_ms=Distribution.of([t for r in good if (t := r.ttft) is not None]),
        tpot_ms=Distribution.of([t for r in good if (t := r.tpot) is not None]),
        latency_ms=Distribution.of([r.latency for r in good]),
    )
