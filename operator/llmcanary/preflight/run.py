"""Preflight of a canary revision: every check, one verdict, and what to fix.

Two moments: :meth:`Preflight.run` before the canary has any pod (environment diff, GPU
memory fit, dependency health: a failure stops the rollout), and
:meth:`Preflight.canary_checks` once the canary's first pods are Ready, just before its
first weight (Triton's own readiness: the rollout waits for it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import DependencyResult, EnvDifference, GpuFit, PreflightStatus
from llmcanary.api.times import timestamp
from llmcanary.builders import Owner
from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_REVISION
from llmcanary.builders.triton_checks import spec_config_problems
from llmcanary.builders.workload import HTTP_PORT, image_refusal
from llmcanary.kube.client import Kube
from llmcanary.kube.pods import pod_ready
from llmcanary.preflight.dependencies import model_ready, probe_all
from llmcanary.preflight.gpu_cluster import check_gpu_fit
from llmcanary.preflight.gpu_probe import run_probe, with_probe

log = logging.getLogger(__name__)

# The stable and canary revisions' differences, gathered from the cluster.
EnvDiffer = Callable[[Kube, Owner, LLMDeploymentSpec, str, str], list[EnvDifference]]


def verdict(
    env_diff: Sequence[EnvDifference], gpu: GpuFit | None, dependencies: Sequence[DependencyResult]
) -> str | None:
    """Why the preflight fails, as one readable line, or None when it passes. Pure."""
    reasons = []
    refused = [d for d in env_diff if not d.allowed]
    if refused:
        shown = ", ".join(
            d.key if d.masked else f"{d.key} ({d.stable or '-'} -> {d.canary or '-'})"
            for d in refused[:5]
        )
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        reasons.append(
            f"environment differs outside preflight.envDiff.allowedDifferences: {shown}{more}"
        )
    if gpu is not None and gpu.fits is False:
        reasons.append(f"GPU memory: {gpu.message}")
    for dependency in dependencies:
        if not dependency.ok:
            reasons.append(f"dependency {dependency.name}: {dependency.message}")
    return "; ".join(reasons) or None


@dataclass
class Preflight:
    kube: Kube
    allowed_hosts: Sequence[str]
    env_differ: EnvDiffer
    gpu_probe_image: str
    canary_timeout_s: float = 2.0
    check_canary: bool = True
    allowed_images: Sequence[str] = ()

    def run(
        self,
        owner: Owner,
        spec: LLMDeploymentSpec,
        stable_revision: str,
        canary_revision: str,
        now: datetime,
    ) -> PreflightStatus | None:
        """The preflight's result, or None while the opt-in GPU probe Job still runs."""
        checks = spec.preflight
        # Before any other check: a disallowed image, or a config Triton would refuse,
        # starts nothing (no probe Job).
        refused = self.image_refusals(spec) + spec_config_problems(spec)
        if refused:
            log.info(
                "preflight failed for %s: %s",
                canary_revision,
                "; ".join(refused),
                extra={"llmd": f"{owner.namespace}/{owner.name}", "revision": canary_revision},
            )
            return PreflightStatus(
                revision=canary_revision,
                passed=False,
                checked_at=timestamp(now),
                reason="; ".join(refused),
            )
        try:
            env_diff = self.env_differ(self.kube, owner, spec, stable_revision, canary_revision)
        except LookupError as exc:  # a revision's Deployment is not there (yet): next tick
            log.info("preflight waits: %s", exc, extra={"llmd": f"{owner.namespace}/{owner.name}"})
            return None
        gpu = None
        if checks.gpu_memory.enabled:
            gpu = check_gpu_fit(self.kube, owner.namespace, spec, now)
            if checks.gpu_memory.probe.enabled and gpu.fits and gpu.node_type:
                probe = run_probe(
                    self.kube, owner, spec, canary_revision, gpu.node_type, self.gpu_probe_image
                )
                if not probe.done:
                    return None
                gpu = with_probe(gpu, probe.probed_free_gib, probe.message)
        dependencies = probe_all(checks.dependencies, self.allowed_hosts, services=self.kube)
        reason = verdict(env_diff, gpu, dependencies)
        log.info(
            "preflight %s for %s: %s",
            "failed" if reason else "passed",
            canary_revision,
            reason or "every check passed",
            extra={"llmd": f"{owner.namespace}/{owner.name}", "revision": canary_revision},
        )
        return PreflightStatus(
            revision=canary_revision,
            passed=reason is None,
            checked_at=timestamp(now),
            reason=reason,
            env_diff=list(env_diff),
            gpu_memory=gpu,
            dependencies=dependencies,
        )

    def image_refusals(self, spec: LLMDeploymentSpec) -> list[str]:
        """Why the images the spec would run are refused (the allowlist), if they are.

        The Triton image, and the GPU probe Job's image when the spec chooses one (the
        operator's own LLMCANARY_GPU_PROBE_IMAGE is the platform team's choice)."""
        images = [("triton.image", spec.triton.image)]
        probe = spec.preflight.gpu_memory.probe
        if spec.preflight.gpu_memory.enabled and probe.enabled and probe.image:
            images.append(("preflight.gpuMemory.probe.image", probe.image))
        return [
            refusal
            for what, image in images
            if (refusal := image_refusal(image, self.allowed_images, what)) is not None
        ]

    def canary_checks(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_revision: str
    ) -> tuple[DependencyResult, ...]:
        """Triton's own readiness on each Ready canary pod (``/v2/health/ready`` and the
        model's ``/v2/models/<name>/ready``), reached at the pod's IP."""
        if not self.check_canary:
            return ()
        selector = f"{LABEL_DEPLOYMENT}={owner.name},{LABEL_REVISION}={canary_revision}"
        pods = [
            (pod["metadata"]["name"], f"http://{pod['status']['podIP']}:{HTTP_PORT}")
            for pod in self.kube.list("v1", "Pod", owner.namespace, selector)
            if pod_ready(pod) and (pod.get("status") or {}).get("podIP")
        ]
        if not pods:
            return (DependencyResult(name="canary/pods", ok=False, message="no Ready pod yet"),)
        return tuple(model_ready(pods, spec.model.name, self.canary_timeout_s))
