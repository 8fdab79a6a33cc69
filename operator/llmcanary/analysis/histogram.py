"""Latency histograms as Prometheus keeps them: cumulative counts under upper bounds. Pure.

A histogram, unlike a summary, can be added across pods and taken over any window
(the increase of each bucket), and only then is a quantile read from it. The quantile
is interpolated linearly inside the bucket it falls in, as PromQL's
``histogram_quantile`` does, so the estimate is only as fine as the buckets:
:meth:`Histogram.bucket_of` says which bucket that was, and the verdict names it when
it is wider than the change a criterion must detect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Histogram:
    """Counts of observations at or below each bound (milliseconds), the last bound +Inf.

    Built by :meth:`from_buckets`, which sorts, repairs and validates; the fields are
    then ascending bounds and non-decreasing cumulative counts of the same length.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def from_buckets(cls, buckets: Iterable[tuple[float, float]]) -> Histogram:
        """From ``(le, cumulative count)`` pairs in any order, e.g. the series of
        ``sum by (le) (increase(x_bucket[w]))``.

        ``increase()`` extrapolates each bucket on its own, so neighbouring counts can
        come back a little out of order: they are made monotonic (as PromQL does before
        a quantile). Negative counts are clamped to 0. A histogram needs its +Inf bucket.
        """
        pairs = sorted((float(le), max(0.0, float(count))) for le, count in buckets)
        if not pairs:
            raise ValueError("a histogram needs buckets")
        bounds = tuple(le for le, _ in pairs)
        if len(set(bounds)) != len(bounds):
            raise ValueError(f"duplicate bucket bounds in {bounds}")
        if not math.isinf(bounds[-1]):
            raise ValueError("a histogram needs its +Inf bucket")
        running = 0.0
        cumulative = []
        for _, count in pairs:
            running = max(running, count)
            cumulative.append(running)
        return cls(bounds, tuple(cumulative))

    @classmethod
    def total(cls, histograms: Iterable[Histogram]) -> Histogram | None:
        """The sum of histograms with the same buckets (e.g. an arm's pods); None if none."""
        result: Histogram | None = None
        for histogram in histograms:
            result = histogram if result is None else result + histogram
        return result

    def __add__(self, other: Histogram) -> Histogram:
        if self.bounds != other.bounds:
            raise ValueError(
                f"cannot add histograms with different buckets ({_short(self.bounds)} and"
                f" {_short(other.bounds)}): do the pods run different model versions?"
            )
        summed = tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True))
        return Histogram(self.bounds, summed)

    @property
    def count(self) -> float:
        """All observations (the +Inf bucket)."""
        return self.cumulative[-1]

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated inside its bucket; None without observations.

        The lowest bucket is taken to start at 0 (latencies are not negative); a
        quantile in the +Inf bucket is the highest finite bound (a lower limit).
        """
        if not 0 < q < 1:
            raise ValueError(f"quantile must be between 0 and 1, got {q}")
        if self.count <= 0:
            return None
        rank = q * self.count
        index = self._index(rank)
        if math.isinf(self.bounds[index]):
            return self.bounds[index - 1] if index > 0 else None
        lower = self.bounds[index - 1] if index > 0 else 0.0
        below = self.cumulative[index - 1] if index > 0 else 0.0
        inside = self.cumulative[index] - below
        if inside <= 0:
            return self.bounds[index]
        return lower + (self.bounds[index] - lower) * (rank - below) / inside

    def rank(self, value: float) -> float:
        """Observations at or below ``value``, interpolated inside its bucket as
        :meth:`quantile` does: ``rank(quantile(q)) == q * count`` wherever the bucket holds
        observations. Above the highest finite bound: every observation."""
        if value <= 0:
            return 0.0
        below_bound, below = 0.0, 0.0
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if value <= bound:
                if math.isinf(bound) or bound <= below_bound:
                    return count if math.isinf(bound) else below
                return below + (count - below) * (value - below_bound) / (bound - below_bound)
            below_bound, below = bound, count
        return self.count

    def bucket_of(self, q: float) -> tuple[float, float] | None:
        """The bounds ``(lower, upper]`` of the bucket the ``q`` quantile falls in."""
        if self.count <= 0:
            return None
        index = self._index(q * self.count)
        return (self.bounds[index - 1] if index > 0 else 0.0, self.bounds[index])

    def _index(self, rank: float) -> int:
        for index, count in enumerate(self.cumulative):
            if count >= rank:
                return index
        return len(self.cumulative) - 1


def _short(bounds: Sequence[float]) -> str:
    shown = ", ".join(f"{b:g}" for b in bounds[:4])
    return f"[{shown}{', ...' if len(bounds) > 4 else ''}]"
