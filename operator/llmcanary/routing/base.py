"""What every router is: the split it applies, and the interface the reconciler uses."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from llmcanary.api.spec import LLMDeploymentSpec, RouterKind
from llmcanary.builders import Owner
from llmcanary.builders.meta import Track
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import MissingApi


@dataclass(frozen=True)
class Weights:
    """The traffic split as percentages; ``stable + canary + baseline == 100``."""

    stable: int
    canary: int
    baseline: int = 0  # a fresh baseline of the stable revision beside the canary

    @classmethod
    def of(cls, canary: int, baseline: int = 0) -> Weights:
        """The split that gives the canary and the baseline these weights."""
        if not 0 <= canary <= 100 or not 0 <= baseline <= 100 - canary:
            raise ValueError(
                f"canary weight {canary} and baseline weight {baseline} do not fit in 0..100"
            )
        return cls(100 - canary - baseline, canary, baseline)

    def describe(self) -> str:
        """``canary 5%, baseline 5%``: how status names a split."""
        parts = [f"canary {self.canary}%"]
        if self.baseline:
            parts.append(f"baseline {self.baseline}%")
        return ", ".join(parts)

    def tracks(self) -> list[tuple[Track, int]]:
        """Stable and canary always, the baseline while it has a weight."""
        tracks: list[tuple[Track, int]] = [("stable", self.stable), ("canary", self.canary)]
        if self.baseline:
            tracks.append(("baseline", self.baseline))
        return tracks


@dataclass(frozen=True)
class WeightCheck:
    """Whether the cluster holds a split; when it does not, why (status shows it)."""

    held: bool
    why: str | None = None

    def __bool__(self) -> bool:
        return self.held


HELD = WeightCheck(True)

#: The revision each track's Service selects (``stable``, ``canary``, and ``baseline``
#: while it exists), as the plan points them: a router whose objects select pods
#: themselves (InferencePools) pins them to the same revisions.
Backends = Mapping[Track, str]


@dataclass(frozen=True)
class Resource:
    """The API resource a router's object is, as kopf watches it and as errors name it."""

    group: str  # "" for the core API
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def selector(self) -> tuple[str, ...]:
        """As kopf's resource selectors take it: (group, version, plural), no group for core."""
        return (
            (self.group, self.version, self.plural) if self.group else (self.version, self.plural)
        )


class Router(ABC):
    """Applies and reads the traffic split for one LLMDeployment.

    The Services ``NAME-stable`` and ``NAME-canary`` (and ``NAME-baseline`` when the
    baseline has a weight) exist before a router is used; a router only splits traffic
    between them (or, for ``replicas``, over their pods, with no baseline).

    A new router is a module with a subclass, an entry in :data:`llmcanary.routing.ROUTERS`,
    a value of :data:`~llmcanary.api.spec.RouterKind` and the RBAC for its resource
    (docs/extending.md).
    """

    kind: ClassVar[RouterKind]
    #: True where the split is approximated (by replica counts) rather than enforced.
    approximate: ClassVar[bool] = False
    #: The object the router owns.
    resource: ClassVar[Resource]
    #: Whether the operator watches :attr:`resource` (its RBAC then needs list and watch):
    #: a hand edit of a watched object is undone at once, of another at the next pass.
    watched: ClassVar[bool] = True
    #: What to do when the cluster does not serve :attr:`resource`.
    missing_api_hint: ClassVar[str] = "choose another spec.traffic.router"
    #: Whether a data plane reports on the router's object (a Gateway's route status):
    #: the split is then read back at every pass with canary traffic, not only after a
    #: change, because the data plane can stop holding it at any time.
    data_plane_reports: ClassVar[bool] = False

    def __init__(self, kube: KubeApi, allowed_images: Sequence[str] = ()) -> None:
        """``allowed_images``: the operator's image allowlist, for a router that runs
        pods of its own (the inferencePool router's endpoint pickers)."""
        self.kube = kube
        self.allowed_images = tuple(allowed_images)

    @abstractmethod
    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights, backends: Backends
    ) -> None:
        """Create or correct the router's objects so that they ask for ``weights``
        between the tracks of ``backends``."""

    @abstractmethod
    def get_weights(self, owner: Owner) -> Weights | None:
        """The split as the cluster holds it now, or None if the router is not set up."""

    def verify_weights(self, owner: Owner, weights: Weights) -> WeightCheck:
        """Whether the cluster holds the split (Argo Rollouts' VerifyWeight): a step's
        clock starts only once it does."""
        actual = self.get_weights(owner)
        if actual == weights:
            return HELD
        return WeightCheck(False, None if actual is None else f"it holds {actual.describe()}")

    @abstractmethod
    def finalize(self, owner: Owner) -> None:
        """Remove the router's objects (the LLMDeployment switched to another router):
        only those it owns, each deleted with its UID as a precondition
        (:func:`llmcanary.kube.children.remove`); another's object by that name stays."""

    def missing_api(self) -> MissingApi:
        """The error for a cluster that does not serve the router's resource."""
        resource = self.resource
        return MissingApi(resource.api_version, resource.kind, self.missing_api_hint)
