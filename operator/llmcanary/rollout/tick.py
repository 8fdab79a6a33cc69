"""One decision in the making: its inputs, the status draft, the events and the plan."""

from __future__ import annotations

from datetime import datetime

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import HistoryEntry, LLMDeploymentStatus, Outcome
from llmcanary.api.times import timestamp
from llmcanary.rollout.decision import Basis, Decision, Draft, Event, Plan
from llmcanary.rollout.observation import Observation

HISTORY_LIMIT = 10


class Tick:
    """Mutable while the decision is made; only the :class:`Decision` leaves."""

    def __init__(
        self,
        spec: LLMDeploymentSpec,
        generation: int | None,
        status: LLMDeploymentStatus,
        observation: Observation,
        now: datetime,
    ) -> None:
        self.spec = spec
        self.generation = generation
        self.old = status
        self.obs = observation
        self.now = now
        self.draft = Draft.of(status)
        self.events: list[Event] = []
        self.stable_rev = status.stable_revision or observation.revision
        self.stable_obs = observation.stable
        self.plan = Plan(self.stable_rev, None, 0, 0)

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def take(self, annotation: str) -> bool:
        """Acknowledge a pending command; True if there was one."""
        handled = self.draft.handled_requests
        value = self.obs.commands.pending(annotation, handled)
        if value is None:
            return False
        handled[annotation] = value
        return True

    def history(self, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(
            revision=self.draft.canary_revision or self.obs.revision,
            outcome=outcome,
            started_at=self.draft.rollout_started_at,
            finished_at=timestamp(self.now),
            reason=reason,
        )
        self.draft.history = [entry, *self.draft.history][:HISTORY_LIMIT]

    @property
    def fresh_baseline(self) -> bool:
        return self.spec.baseline == "fresh"

    def plan_canary(self, replicas: int, weight: int) -> None:
        """The canary at ``replicas`` and ``weight``, and its baseline beside it (until
        promotion: the promoted canary needs no reference)."""
        self.draft.canary_replicas = replicas
        baseline = self.fresh_baseline and self.draft.phase != "Promoting"
        self.plan = Plan(
            self.stable_rev,
            self.obs.revision,
            replicas,
            weight,
            baseline_replicas=replicas if baseline else 0,
            baseline_weight=weight if baseline else 0,
        )

    def ready_pairs(self) -> int:
        """Ready canary replicas that a weight can be given to: with a fresh baseline,
        only as many as the baseline has Ready too (its share must not meet no pod)."""
        ready = self.obs.canary.ready if self.obs.canary else 0
        if self.fresh_baseline:
            ready = min(ready, self.obs.baseline.ready if self.obs.baseline else 0)
        return ready

    def arms(self) -> str:
        return "canary and baseline" if self.fresh_baseline else "canary"

    def canary_problem(self) -> str:
        """``": <why a canary (or baseline) pod is not Ready>"``, or nothing when no pod
        says."""
        for observed in (self.obs.canary, self.obs.baseline):
            if observed is not None and observed.problem:
                return f": {observed.problem}"
        return ""

    def canary_failure(self) -> str | None:
        """``"canary cannot start: <reason>: <message>"`` when the canary's (or the
        baseline's) Deployment says it cannot create or start its pods (a ResourceQuota,
        Pod Security, its progress deadline); None when neither says."""
        for arm, observed in (("canary", self.obs.canary), ("baseline", self.obs.baseline)):
            if observed is not None and observed.failure:
                return f"{arm} cannot start: {observed.failure}"
        return None

    def unready_reason(self) -> str:
        """``": <why>"``: the Deployment's failure, else a pod's problem; nothing when
        neither says."""
        failure = self.canary_failure()
        return f": {failure}" if failure else self.canary_problem()

    def decision(self) -> Decision:
        old, revision = self.old, self.obs.revision
        # Entered Preflight this pass, which could not observe it: the next pass runs it.
        observed_preflight = old.phase == "Preflight" and old.canary_revision == revision
        return Decision(
            draft=self.draft,
            plan=self.plan,
            events=tuple(self.events),
            basis=Basis(
                self.spec, self.generation, old, self.obs, self.now, stable=self.stable_obs
            ),
            again=self.draft.phase == "Preflight" and not observed_preflight,
        )
