"""A step's checks: what they are judged with, and how status records them. Pure."""

from __future__ import annotations

from datetime import datetime

from llmcanary.analysis.sequential import design
from llmcanary.analysis.verdict import Check, Estimate, Judgement
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import AnalysisRecord, ArmEstimate, CriterionRecord, LLMDeploymentStatus
from llmcanary.api.times import timestamp


def judgement(
    spec: LLMDeploymentSpec, status: LLMDeploymentStatus, window_seconds: float | None
) -> Judgement:
    """What this step's check is judged with: the error budget spread over the planned
    steps and criteria, the reference arm and its share of the traffic."""
    weight = status.canary_weight or 0
    fresh = spec.baseline == "fresh"
    return Judgement(
        plan=design(len(spec.canary.analysis.rules), len(spec.planned_weights())),
        reference="baseline" if fresh else "stable",
        reference_share=weight if fresh else 100 - weight,
        window_seconds=window_seconds,
    )


def analysis_record(check: Check, now: datetime, since: datetime | None) -> AnalysisRecord:
    """A check as status keeps it: enough to reproduce it from Prometheus."""
    return AnalysisRecord(
        time=timestamp(now),
        verdict=check.verdict,
        reason=check.reason,
        reference=check.reference if check.results else None,
        since=timestamp(since) if since is not None else None,
        load_ratio=None if check.load_ratio is None else round(check.load_ratio, 3),
        waiting=check.waiting or None,
        needed=check.needed,
        criteria=_criteria(check),
    )


def _criteria(check: Check) -> list[CriterionRecord]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return [
        CriterionRecord(
            criterion=r.criterion.label,
            unit=r.unit,
            verdict=r.verdict,
            reason=r.reason,
            reference=_estimate(r.reference),
            canary=_estimate(r.canary),
            effect=rounded(r.effect.value) if r.effect else None,
            lower=rounded(r.effect.lower) if r.effect else None,
            upper=rounded(r.effect.upper) if r.effect else None,
        )
        for r in check.results
    ]


def _estimate(estimate: Estimate) -> ArmEstimate:
    value = None if estimate.value is None else round(estimate.value, 4)
    return ArmEstimate(value=value, samples=estimate.samples)


def headline(record: AnalysisRecord | None) -> str | None:
    """``ttft p95 412 / 380 ms``: the check's first failing criterion, else its first,
    canary / reference."""
    if record is None or not record.criteria:
        return None
    chosen = next((c for c in record.criteria if c.verdict == "fail"), record.criteria[0])

    def number(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.0f}" if chosen.unit == "ms" else f"{value:.2f}"

    return (
        f"{chosen.criterion} {number(chosen.canary.value)} / {number(chosen.reference.value)}"
        f" {chosen.unit}"
    )
