"""The metric-source interface and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, get_args

from llmcanary.analysis.types import Arm, ArmReading
from llmcanary.api.spec import AnalysisSpec


@dataclass(frozen=True)
class Scope:
    """Which requests one arm's reading covers: the arm's pods of one LLMDeployment,
    over the window that ends at ``end`` (None: the source's now)."""

    namespace: str
    name: str
    model: str
    arm: Arm
    revision: str
    window: timedelta
    end: datetime | None = None


# Why a query got no usable answer: no answer in time, no connection, an HTTP error
# (bad PromQL included), an answer that is not what was asked, an address the operator
# refuses to contact (not on its allowlist, or not a plain base URL: nothing was sent),
# anything else.
QueryErrorReason = Literal["timeout", "connection", "http", "answer", "refused", "error"]
QUERY_ERROR_REASONS: tuple[QueryErrorReason, ...] = get_args(QueryErrorReason)


class MetricsUnavailable(Exception):
    """The metrics source did not answer, or answered something unusable."""

    def __init__(self, message: str, reason: QueryErrorReason = "error") -> None:
        super().__init__(message)
        self.reason: QueryErrorReason = reason


class MetricSource(Protocol):
    def read(self, scope: Scope, analysis: AnalysisSpec) -> ArmReading:
        """What the arm's criteria need over ``scope.window``: its request and error
        counts and, per latency signal, per-pod histograms (and the arm's, block by
        block through the window) or quantiles.

        Raises :class:`MetricsUnavailable` when the source fails (the check is then
        inconclusive with that message), and ``ValueError`` for a query template it
        cannot use.
        """
        ...
