"""What the demo saw of a rollout, and how it tells it (pure: no clock, no I/O).

The demo samples the LLMDeployment's status about once a second into :class:`Sample`
records; :func:`describe` turns a change between two samples into the line printed
live, and :func:`outcomes` condenses every rollout into a row of the closing table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Outcome", "Sample", "describe", "outcomes", "sample_of"]


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the demo started
    label: str  # the story's name for the revision being rolled out ("v2 healthy")
    phase: str
    stable: str
    canary: str
    weight: int
    latency: str | None  # the check's end-to-end latency criterion ("e2eLatency p95")
    canary_ms: float | None
    reference_ms: float | None
    reference: str  # the arm it was compared with: "baseline" or "stable"
    verdict: str | None
    check_time: str | None
    reason: str | None
    message: str


def _e2e(analysis: Mapping[str, Any]) -> Mapping[str, Any]:
    """The check's first end-to-end latency criterion, the one the demo's story is about."""
    for record in analysis.get("criteria") or []:
        if str(record.get("criterion", "")).startswith("e2eLatency"):
            return dict(record)
    return {}


def sample_of(t: float, label: str, status: Mapping[str, Any]) -> Sample:
    analysis = status.get("lastAnalysis") or {}
    e2e = _e2e(analysis)
    return Sample(
        t=t,
        label=label,
        phase=str(status.get("phase") or ""),
        stable=str(status.get("stableRevision") or ""),
        canary=str(status.get("canaryRevision") or ""),
        weight=int(status.get("canaryWeight") or 0),
        latency=e2e.get("criterion"),
        canary_ms=(e2e.get("canary") or {}).get("value"),
        reference_ms=(e2e.get("reference") or {}).get("value"),
        reference=str(analysis.get("reference") or "stable"),
        verdict=analysis.get("verdict"),
        check_time=analysis.get("time"),
        reason=analysis.get("reason"),
        message=str(status.get("message") or ""),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def describe(before: Sample | None, now: Sample) -> list[str]:
    """Lines for what changed from ``before`` to ``now`` (none when nothing did)."""
    stamp = f"[{now.t:6.1f}s]"
    lines = []
    if now.phase and (before is None or now.phase != before.phase):
        lines.append(f"{stamp} phase {now.phase}" + (f": {now.message}" if now.message else ""))
    if before is not None and now.weight != before.weight:
        lines.append(f"{stamp} canary weight {before.weight}% -> {now.weight}%")
    if now.check_time and (before is None or now.check_time != before.check_time):
        lines.append(
            f"{stamp} check: {now.verdict}, {now.latency or 'latency'} canary"
            f" {_ms(now.canary_ms)} / {now.reference} {_ms(now.reference_ms)} ({now.reason})"
        )
    return lines


@dataclass(frozen=True)
class Outcome:
    label: str
    result: str  # the phase the rollout ended in
    seconds: float
    max_weight: int
    checks: int
    canary_ms: float | None  # the last check's end-to-end latency criterion
    reference_ms: float | None


def outcomes(samples: Sequence[Sample]) -> list[Outcome]:
    """One row per rollout label, in the order they were rolled out."""
    rows = []
    for label in dict.fromkeys(s.label for s in samples):
        mine = [s for s in samples if s.label == label]
        checked = [s for s in mine if s.check_time]
        last_check = checked[-1] if checked else None
        rows.append(
            Outcome(
                label=label,
                result=mine[-1].phase,
                seconds=mine[-1].t - mine[0].t,
                max_weight=max(s.weight for s in mine),
                checks=len({s.check_time for s in checked}),
                canary_ms=None if last_check is None else last_check.canary_ms,
                reference_ms=None if last_check is None else last_check.reference_ms,
            )
        )
    return rows
