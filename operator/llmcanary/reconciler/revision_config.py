"""The current revision's configuration: read its model repository once, keep the plan.

A revision's ConfigMap is made once, from a read of its repository (the Job of
:mod:`llmcanary.builders.revision_read`), and never rendered again: every pod of the
revision stages what it says, the environment diff compares it, and an operator restart
finds it where it was. Until it exists the revision has no Deployment: the first revision
waits (status says for what), a canary's preflight waits. What the read finds wrong (no
such model, a config Triton would refuse, an ensemble step that is not there) is the
revision's problem: ``InvalidModelConfig`` for a first revision, a failed preflight for a
canary.

A ConfigMap that exists is taken as it is, also one made by an operator that rendered it
from the spec alone (it holds the served model only; its pods stage that, as they did).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.meta import Owner, config_map_name
from llmcanary.builders.repository import parse_listing, plan_revision
from llmcanary.builders.revision_read import (
    READ_CONTAINER,
    build_read_job,
    read_job_name,
    read_selector,
)
from llmcanary.builders.triton_checks import spec_config_problems
from llmcanary.builders.workload import build_config_map, image_refusal
from llmcanary.kube.children import ensure, owned_by, remove
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import ApiError, Forbidden
from llmcanary.kube.jobs import job_failure, job_succeeded, pod_state
from llmcanary.rollout.observation import RevisionConfig

__all__ = ["LISTING_BYTES", "read_revision_config"]

log = logging.getLogger(__name__)

#: The most of a read's log the operator takes: a listing of a repository of a few hundred
#: models (their configs base64, a few KiB each) fits.
LISTING_BYTES = 4 << 20


def read_revision_config(
    kube: KubeApi,
    owner: Owner,
    spec: LLMDeploymentSpec,
    revision: str,
    allowed_images: Sequence[str] = (),
    *,
    read: bool = True,
) -> RevisionConfig:
    """The revision's ConfigMap if it exists; else read the repository (create the Job,
    once), and once the read is done make the ConfigMap from its plan, or say why not.

    ``read`` False (a revision rolled back or failed, not tried again until a retry):
    whether the ConfigMap exists, and no read."""
    name = config_map_name(owner.name, revision)
    current = kube.get("v1", "ConfigMap", owner.namespace, name)
    if current is not None:
        if owned_by(current, owner.uid):
            return RevisionConfig(ready=True)
        return RevisionConfig(
            ready=False,
            reason="ChildConflict",
            problem=f"ConfigMap {name} exists and is not this LLMDeployment's: delete or rename it",
        )
    if not read:
        return RevisionConfig(ready=False)
    # Nothing runs a refused image or a spec Triton would refuse: no read of either.
    refused = image_refusal(spec.triton.image, allowed_images)
    if refused is not None:
        return RevisionConfig(ready=False, reason="ImageNotAllowed", problem=refused)
    spec_problems = spec_config_problems(spec)
    if spec_problems:
        return RevisionConfig(ready=False, problem="; ".join(spec_problems))
    job_name = read_job_name(owner.name, revision)
    where = f"reading the model repository {spec.model.repository} (Job {job_name})"
    try:
        job = _read_job(kube, owner, spec, revision)
        if job is None:
            return RevisionConfig(
                ready=False,
                reason="ChildConflict",
                problem=f"Job {job_name} exists and is not this LLMDeployment's: delete it",
            )
        job_uid = str(job["metadata"].get("uid", ""))
        pods = kube.list("v1", "Pod", owner.namespace, read_selector(owner.name, revision, job_uid))
    except Forbidden as exc:
        return RevisionConfig(
            ready=False,
            reason="RepositoryNotRead",
            problem=f"{where}: {exc.message} (the operator needs create, get and delete on"
            " jobs, list on pods and get on pods/log)",
        )
    # One pod, run once: its phase says the read's end before the Job controller does.
    phases = {(p.get("status") or {}).get("phase") for p in pods}
    failure = job_failure(job) or ("its pod failed" if "Failed" in phases else None)
    if failure is None and not (job_succeeded(job) or "Succeeded" in phases):
        return RevisionConfig(ready=False, waiting=f"{where}: {pod_state(pods)}")
    try:
        text = _log(kube, owner.namespace, pods)
    except Forbidden as exc:
        return RevisionConfig(ready=False, reason="RepositoryNotRead", problem=exc.message)
    if text is None and failure is None:
        # Done, but its log did not come (a passing error): read it next pass.
        return RevisionConfig(ready=False, waiting=f"{where}: done, reading its log")
    listing = parse_listing(text or "")
    if failure is not None and (text is None or listing.models):
        # The script did not run to its end (a deadline, a volume that never mounted):
        # what the Job and its pod say.
        _forget(kube, owner, job)
        return RevisionConfig(
            ready=False,
            reason="RepositoryNotRead",
            problem=f"{where} failed: {failure}; {pod_state(pods)}",
        )
    if listing.error is not None and text is not None and len(text.encode()) >= LISTING_BYTES:
        # Cut at what the operator reads: say so, not "cut short".
        listing = replace(
            listing,
            error=f"the repository's listing is larger than the {LISTING_BYTES >> 20} MiB the"
            " operator reads (every model's config.pbtxt): serve from a repository that"
            " holds this revision's models only",
        )
    plan = plan_revision(spec, listing)
    if plan.problems:
        _forget(kube, owner, job)
        return RevisionConfig(ready=False, problem="; ".join(str(p) for p in plan.problems))
    try:
        ensure(kube, build_config_map(owner, spec, revision, plan))
    except ApiError as exc:
        if exc.transient:
            raise
        # Refused for good (a policy, a size): the revision cannot be made as planned.
        return RevisionConfig(ready=False, reason=exc.reason, problem=exc.message)
    log.info(
        "read the model repository of revision %s: %d model(s)",
        revision,
        len(plan.configs),
        extra={"llmd": f"{owner.namespace}/{owner.name}", "revision": revision},
    )
    return RevisionConfig(ready=True)


def _read_job(
    kube: KubeApi, owner: Owner, spec: LLMDeploymentSpec, revision: str
) -> dict[str, Any] | None:
    """The revision's read Job, created if absent; never changed once it exists (a Job's
    pod template cannot be, and a webhook may have rewritten it). None: not ours."""
    name = read_job_name(owner.name, revision)
    current = kube.get("batch/v1", "Job", owner.namespace, name)
    if current is None:
        current = kube.apply(build_read_job(owner, spec, revision))
        log.info("created Job %s/%s", owner.namespace, name, extra={"child": f"Job {name}"})
    return current if owned_by(current, owner.uid) else None


def _forget(kube: KubeApi, owner: Owner, job: dict[str, Any]) -> None:
    """Delete a read that failed, with its pod, once its result is taken: the revision's
    next attempt (a retry, the first revision's next pass) reads the repository afresh."""
    name = str(job["metadata"]["name"])
    try:
        remove(kube, "batch/v1", "Job", owner.namespace, name, owner.uid, propagation="Background")
    except Exception as exc:  # its TTL removes it all the same
        log.info("could not delete the failed read %s: %s", name, exc)


def _log(kube: KubeApi, namespace: str, pods: list[dict[str, Any]]) -> str | None:
    """The read pod's log (the listing); None when there is no pod or it cannot be read."""
    finished = [p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    if not finished:
        return None
    name = str(finished[0]["metadata"]["name"])
    try:
        return kube.pod_log(namespace, name, READ_CONTAINER, LISTING_BYTES)
    except Forbidden:
        raise
    except Exception as exc:  # a passing error: the next pass reads it again
        log.info("could not read the repository read's log: %s", exc, extra={"pod": name})
        return None
