"""Operator settings, read once at start-up from LLMCANARY_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMCANARY_", extra="ignore")

    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig to use outside a cluster (default: $KUBECONFIG)."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "Serve Prometheus metrics on 0.0.0.0:PORT/metrics (0: off); `llmcanary run"
            " --metrics-port` overrides it. See docs/metrics.md."
        ),
    )
    resync_seconds: float = Field(
        default=600,
        gt=0,
        description=(
            "How often every LLMDeployment is reconciled anyway: each object after 1 to 1.2"
            " times this, spread at random so that objects created together do not resync"
            " together."
            " Changes of an LLMDeployment or its children and a rollout's own checks and"
            " steps are acted on at once; the resync only repairs what no watch reported."
        ),
    )
    workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Threads that reconcile LLMDeployments, one object each at a time; the"
            " operator's threads are bounded by this, not by the number of objects."
        ),
    )
    worker_stuck_seconds: float = Field(
        default=120,
        gt=0,
        description=(
            "When every worker has been in one pass longer than this while work waits, the"
            " liveness probe fails (`llmcanary run --liveness`), so the pod is restarted."
        ),
    )
    prometheus_timeout_seconds: float = Field(
        default=5,
        gt=0,
        le=60,
        description="Longest wait for one Prometheus query; a slower answer is inconclusive.",
    )
    prometheus_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["*.svc", "*.svc.cluster.local"],
        description=(
            "Host patterns (fnmatch) that spec.canary.analysis.prometheus.address may name;"
            " any other address is refused without a request (the check is inconclusive),"
            " so that whoever may create an LLMDeployment cannot make the operator read"
            " internal URLs. IP addresses only when listed literally. JSON list in"
            " LLMCANARY_PROMETHEUS_ALLOWED_HOSTS."
        ),
    )
    preflight_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["*.svc", "*.svc.cluster.local"],
        description=(
            "Host patterns (fnmatch) that spec.preflight.dependencies may probe; anything else"
            " is refused. A *.svc name must be a Service with a selector (not ExternalName),"
            " and no host may resolve to a loopback, link-local or metadata address unless"
            " listed literally; the probes still reach whatever that Service selects, here"
            " or in another namespace. JSON list in LLMCANARY_PREFLIGHT_ALLOWED_HOSTS."
        ),
    )
    allowed_images: list[str] = Field(
        default_factory=list,
        description=(
            "Image patterns (fnmatch, on the whole reference as written) that spec.triton.image"
            " and spec.preflight.gpuMemory.probe.image may use; empty: any image. A canary"
            " with another image fails preflight; a stable revision with one is not created."
            " JSON list in LLMCANARY_ALLOWED_IMAGES."
        ),
    )
    gpu_probe_image: str = Field(
        default="nvcr.io/nvidia/pytorch:24.10-py3",
        description="Image of the opt-in GPU memory probe Job (needs python and torch).",
    )
    canary_ready_check: bool = Field(
        default=True,
        description=(
            "Before the first weight, check Triton's /v2/health/ready and the model's ready"
            " endpoint on each canary pod's IP (the operator must reach pod IPs)."
        ),
    )
