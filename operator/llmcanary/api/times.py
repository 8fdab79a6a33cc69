"""Times as the status writes them: RFC 3339 UTC, and back."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """Kubernetes' time format: UTC, second precision, trailing Z."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(moment: datetime) -> str:
    """Rollout timestamps in status: RFC 3339 UTC with milliseconds.

    Steps and checks can be seconds apart; second precision would let a check taken
    in the step's first second count for the step before it.
    """
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Read an RFC 3339 time written by :func:`rfc3339` or :func:`timestamp`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
