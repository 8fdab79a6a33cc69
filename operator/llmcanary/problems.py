"""Problems: what stops a rollout until a person acts, as data and as an exception.

A :class:`Problem` is what status shows (``status.message``, the ``Degraded`` condition)
and what a Warning event says. Code that meets one raises :class:`ReconcileError`; the
reconciler catches it and records its problem. Both sit below every layer that raises them
(the Kubernetes client, the routers, preflight), so none of those owns the other's errors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """Something that stops reconciliation until a person acts.

    ``reason`` is a CamelCase word for conditions and events; ``message`` says what to do.
    """

    reason: str
    message: str


class ReconcileError(Exception):
    """Raised with a :class:`Problem`: the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def problem(self) -> Problem:
        return Problem(self.reason, self.message)
