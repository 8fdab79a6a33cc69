"""What the analysis works on: one arm's readings over one window. Pure data.

A metric source (``llmcanary.sources``, the I/O edge) fills an :class:`ArmReading`
for each arm; the verdict (pure) compares two of them under the spec's criteria.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, get_args

from llmcanary.analysis.histogram import Histogram
from llmcanary.api.spec import Criterion

Arm = Literal["stable", "canary", "baseline"]
# The arm a canary is compared with: the fresh baseline, or the stable arm without one.
Reference = Literal["baseline", "stable"]
# The latency signals a criterion can judge (spec.CriterionMetric less errorRate).
Signal = Literal["e2eLatency", "ttft", "tpot"]
SIGNALS: tuple[Signal, ...] = get_args(Signal)


# Above this a count is not one (and would not fit the status' int64 fields).
_MAX_WHOLE = 2.0**62


def _whole(count: float) -> int | None:
    """``count`` rounded, or None (unknown) if it is not finite or absurdly large: a
    source's bad answer must not raise OverflowError here (1.7e308 + 1.7e308)."""
    if not math.isfinite(count) or abs(count) > _MAX_WHOLE:
        return None
    return round(count)


@dataclass(frozen=True)
class LatencyReading:
    """One latency signal of one arm over the window, in milliseconds.

    From a histogram source, ``pods`` holds each pod's histogram: they are added up
    here, so an arm's quantile covers all its requests whatever its pod count. A source
    without histograms (Triton's summary, a user's PromQL) answers ``quantiles``
    directly, already computed at each quantile asked for.

    ``blocks`` is the same arm's histogram (pods added up) in consecutive time blocks
    of the window, oldest first: how the latency moved within the window, which the
    verdict's variance needs (:func:`~llmcanary.analysis.sequential.design_effect`).
    Empty while the window is too short to cut; None from a source that cannot.

    ``quantile_blocks`` is the same for a source without histograms: per quantile asked
    for, the arm's quantile over each block (None where the block had none). One number
    per block carries no variance of its own; how the blocks' numbers spread is the
    variance (:func:`~llmcanary.analysis.sequential.block_mean`).
    """

    pods: Mapping[str, Histogram] = field(default_factory=dict)
    blocks: tuple[Histogram, ...] | None = None
    quantiles: Mapping[float, float | None] = field(default_factory=dict)
    quantile_blocks: Mapping[float, tuple[float | None, ...]] | None = None
    method: str = "histogram"  # how the number came about, for status and logs

    @cached_property
    def histogram(self) -> Histogram | None:
        """The arm's histogram: its pods' added up (once; quantiles and counts read it)."""
        return Histogram.total(self.pods[pod] for pod in sorted(self.pods))

    def quantile(self, q: float) -> float | None:
        if q in self.quantiles:
            return self.quantiles[q]
        histogram = self.histogram
        return None if histogram is None else histogram.quantile(q)

    @property
    def samples(self) -> int | None:
        """Observations behind the estimate, where the source can count them."""
        histogram = self.histogram
        return None if histogram is None else _whole(histogram.count)

    def blocks_seen(self, quantiles: Iterable[float]) -> int | None:
        """Time blocks with something to judge: with requests (a histogram source), or
        with a value at every one of ``quantiles`` (a source without histograms); None
        from a source that does not cut the window."""
        if self.blocks is not None:
            return sum(1 for block in self.blocks if block.count > 0)
        if self.quantile_blocks is None:
            return None
        rows = [self.quantile_blocks.get(q, ()) for q in quantiles]
        return sum(1 for values in zip(*rows, strict=False) if None not in values)


@dataclass(frozen=True)
class ArmReading:
    """One arm over one analysis window; ``None`` where a series was missing."""

    requests: float | None
    errors: float | None
    latency: Mapping[Signal, LatencyReading] = field(default_factory=dict)

    @property
    def samples(self) -> int | None:
        """Requests, successful and failed, over the window."""
        if self.requests is None:
            return None
        return _whole(self.requests + (self.errors or 0.0))

    @property
    def per_pod_requests(self) -> float | None:
        """Requests per serving pod over the window, from the per-pod histograms of the
        first latency signal that has them (pods that served nothing do not count)."""
        for reading in self.latency.values():
            counts = [h.count for h in reading.pods.values() if h.count > 0]
            if counts:
                return sum(counts) / len(counts)
        return None

    @property
    def error_rate(self) -> float | None:
        """Failed requests as a fraction of all requests (0..1); None without traffic."""
        total = self.samples
        if not total:
            return None
        return (self.errors or 0.0) / total


def needs(criteria: Iterable[Criterion]) -> dict[Signal, tuple[float, ...]]:
    """The latency signals the criteria judge, each with the quantiles they compare."""
    wanted: dict[Signal, set[float]] = {}
    for criterion in criteria:
        metric = criterion.metric
        if metric != "errorRate":
            wanted.setdefault(metric, set()).add(criterion.q)
    return {signal: tuple(sorted(qs)) for signal, qs in wanted.items()}
