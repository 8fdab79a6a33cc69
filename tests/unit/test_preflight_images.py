"""The image allowlist: a canary whose image is not allowed fails preflight before any
other check runs (no environment diff, no GPU probe Job, no dependency probe), and a first
revision's Deployment is never created."""

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from fake_kube import FakeKube
from specs import make_spec

from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.builders import Owner
from llmcanary.builders.workload import build_config_map, build_deployment
from llmcanary.kube.client import Kube
from llmcanary.preflight.run import Preflight
from llmcanary.reconciler.apply import PlanApplier
from llmcanary.reconciler.revision_config import read_revision_config
from llmcanary.rollout.decision import Plan
from llmcanary.rollout.revision import revision_of

NOW = datetime(2025, 1, 1, tzinfo=UTC)
ALLOWED = ["nvcr.io/nvidia/tritonserver:*"]


def never(*args: Any) -> list[Any]:
    raise AssertionError("no other check may run for a refused image")


def preflight(kube: FakeKube, allowed_images: list[str]) -> Preflight:
    return Preflight(
        cast(Kube, kube),
        allowed_hosts=["*.svc"],
        env_differ=never,
        gpu_probe_image="nvcr.io/nvidia/pytorch:24.10-py3",
        allowed_images=allowed_images,
    )


def test_a_canary_image_outside_the_allowlist_fails_preflight_first(owner: Owner) -> None:
    kube = FakeKube()
    spec = make_spec(triton={"image": "evil.example/triton:1", "maxBatchSize": 8})
    result = preflight(kube, ALLOWED).run(owner, spec, "r1", "r2", NOW)
    assert result is not None
    assert result.passed is False and result.revision == "r2"
    assert result.reason == (
        "triton.image 'evil.example/triton:1' is not in the operator's image allowlist"
        " (LLMCANARY_ALLOWED_IMAGES: nvcr.io/nvidia/tritonserver:*); use an allowed image,"
        " or ask the platform team to allow it"
    )
    assert result.checked_at is not None
    assert kube.writes == []  # no probe Job, nothing


@pytest.mark.parametrize(
    ("probe", "refused"),
    [
        ({"enabled": True, "image": "evil.example/torch:1"}, True),
        ({"enabled": False, "image": "evil.example/torch:1"}, False),  # not run
        ({"enabled": True}, False),  # the operator's own LLMCANARY_GPU_PROBE_IMAGE
    ],
)
def test_a_gpu_probe_image_chosen_by_the_spec_is_held_to_the_allowlist(
    probe: dict[str, Any], refused: bool
) -> None:
    spec = make_spec(preflight={"gpuMemory": {"probe": probe}})
    reasons = preflight(FakeKube(), ALLOWED).image_refusals(spec)
    assert bool(reasons) is refused
    if refused:
        assert reasons[0].startswith("preflight.gpuMemory.probe.image 'evil.example/torch:1'")


def test_no_allowlist_allows_every_image() -> None:
    spec = make_spec(
        triton={"image": "anything.example/x:1", "maxBatchSize": 8},
        preflight={"gpuMemory": {"probe": {"enabled": True, "image": "other.example/y:2"}}},
    )
    assert preflight(FakeKube(), []).image_refusals(spec) == []


def test_an_allowed_image_goes_on_to_the_other_checks(owner: Owner) -> None:
    spec = make_spec(triton={"image": "nvcr.io/nvidia/tritonserver:25.01-py3", "maxBatchSize": 8})
    with pytest.raises(AssertionError, match="no other check"):
        preflight(FakeKube(), ALLOWED).run(owner, spec, "r1", "r2", NOW)


def test_the_first_revision_is_held_to_the_allowlist_before_its_deployment_exists(
    owner: Owner,
) -> None:
    """The first revision has no preflight: its repository is not read (no Job runs the
    image), the applier refuses to create its Deployment, and the problem reaches status
    (ImageNotAllowed). One that already runs is kept."""
    spec = make_spec(triton={"image": "evil.example/triton:1", "maxBatchSize": 8})
    revision = revision_of(spec)
    plan = Plan(stable_revision=revision, canary_revision=None, canary_replicas=0, canary_weight=0)
    kube = FakeKube()
    config = read_revision_config(kube, owner, spec, revision, ALLOWED)
    assert not config.ready and config.reason == "ImageNotAllowed"
    applied = PlanApplier(kube, ALLOWED).apply(
        owner, spec, plan, LLMDeploymentStatus(), None, config
    )
    assert applied.problem is not None and applied.problem.reason == "ImageNotAllowed"
    assert "evil.example/triton:1" in applied.problem.message
    assert [w for w in kube.writes if w.kind in ("Deployment", "ConfigMap", "Job")] == []

    kube.add(build_deployment(owner, spec, revision, "stable", 2))  # made before the allowlist
    again = PlanApplier(kube, ALLOWED).apply(owner, spec, plan, LLMDeploymentStatus(), None, config)
    assert again.problem is None or again.problem.reason != "ImageNotAllowed"


def test_a_configmap_written_by_someone_else_does_not_let_a_refused_image_run(
    owner: Owner,
) -> None:
    """The revision's ConfigMap can be written by anyone who may write ConfigMaps, owner
    reference included: the first revision's image is held to the allowlist all the same."""
    spec = make_spec(triton={"image": "evil.example/triton:1", "maxBatchSize": 8})
    revision = revision_of(spec)
    kube = FakeKube()
    kube.add(build_config_map(owner, spec, revision))  # forged, with this owner's uid
    config = read_revision_config(kube, owner, spec, revision, ALLOWED)
    assert config.ready
    plan = Plan(stable_revision=revision, canary_revision=None, canary_replicas=0, canary_weight=0)
    applied = PlanApplier(kube, ALLOWED).apply(
        owner, spec, plan, LLMDeploymentStatus(), None, config
    )
    assert applied.problem is not None and applied.problem.reason == "ImageNotAllowed"
    assert [w for w in kube.writes if w.kind == "Deployment"] == []
