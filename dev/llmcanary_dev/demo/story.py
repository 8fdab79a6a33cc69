"""``llmcanary demo``: the whole story on the local stack, told as it happens.

1. ``llmcanary stack up``: the dev cluster, a real ``tritonserver`` per pod, Prometheus
   and Traefik (see :mod:`llmcanary_dev.localstack`); the CRD; the operator as a process.
2. tiny-llm revision 1 (``examples/local/tiny-llm.yaml``) until Stable.
3. Steady streaming load through the gateway, for the rest of the story.
4. Revision 2, as fast as 1: judged against a fresh baseline at 25% then 50%, promoted.
5. Revision 3, the same model made 30% slower per token (tiny-llm's ``slowdown_percent``):
   rolled back, on the product's +20% rule.
6. Revision 4, a bigger model (8 layers, hidden size 512): much slower, rolled back.
7. A summary table, the load's figures, and a PNG chart of weight and P95 over time.

Every number printed is what the operator wrote into the LLMDeployment's status from
what Prometheus scraped from the real Tritons.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.kube.client import Kube
from llmcanary.rollout.revision import revision_of
from llmcanary_dev.demo.timeline import Sample, describe, sample_of
from llmcanary_dev.devcluster.paths import find_repo_root
from llmcanary_dev.loadgen.client import LoadConfig, run_load
from llmcanary_dev.loadgen.stats import RequestResult, Summary, summarize
from llmcanary_dev.localstack import inference_gateway, inference_routes
from llmcanary_dev.localstack import stack as local
from llmcanary_dev.localstack.gateway import backend_name, count_requests

__all__ = ["CHAPTERS", "Chapter", "DemoError", "Story"]

NAMESPACE = "llmcanary-demo"
NAME = "tiny-llm"


class DemoError(RuntimeError):
    pass


@dataclass(frozen=True)
class Chapter:
    label: str
    spec_patch: dict[str, Any]
    expect: str  # the phase this rollout should end in


SMALL = {"layers": "2", "hidden_size": "128", "heads": "4"}
CHAPTERS = (
    Chapter("v2 healthy", {"model": {"version": "2"}}, "Stable"),
    Chapter(
        "v3 30% slower per token",
        {
            "model": {"version": "3"},
            "triton": {"parameters": {**SMALL, "slowdown_percent": "30"}},
        },
        "RolledBack",
    ),
    Chapter(
        "v4 bigger",
        {
            "model": {"version": "4"},
            "triton": {
                "parameters": {
                    "layers": "8",
                    "hidden_size": "512",
                    "heads": "8",
                    "slowdown_percent": "0",
                }
            },
        },
        "RolledBack",
    ),
)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Story:
    settings: local.StackSettings
    say: Callable[[str], None]
    rollout_timeout_s: float = 420.0
    concurrency: int = 4
    chapters: tuple[Chapter, ...] = CHAPTERS
    # Stop at the first chapter that does not end as expected (the demo); a benchmark
    # records every outcome instead.
    strict: bool = True
    #: gatewayAPI: through Traefik, as the example is; inferencePool: the example routed
    #: through InferencePools and the stack's inference gateway instead.
    router: str = "gatewayAPI"
    samples: list[Sample] = field(default_factory=list)
    load: list[RequestResult] = field(default_factory=list)
    shares: dict[str, dict[str, int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    # --- set-up ---------------------------------------------------------------------

    def manifest(self, prometheus: str) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(
            (find_repo_root() / "examples" / "local" / "tiny-llm.yaml").read_text()
        )
        doc["metadata"]["namespace"] = NAMESPACE
        doc["spec"]["canary"]["analysis"]["prometheus"]["address"] = prometheus
        if self.router == "inferencePool":
            doc["spec"]["traffic"] = {
                "router": "inferencePool",
                "inferencePool": {"parentRefs": [inference_routes.parent_ref()]},
            }
        return doc

    def arm_counts(self, since: float) -> dict[str, int]:
        """Requests each arm's Service (or pool) served since ``since``, by the access log
        of the gateway in front of them."""
        names = [f"{NAME}-{arm}" for arm in ("stable", "canary", "baseline")]
        if self.router == "inferencePool":
            pools = inference_gateway.count_requests(self.settings.inference_access_log, since)
            counts = {name: pools[f"{NAMESPACE}/{name}"] for name in names}
        else:
            services = count_requests(self.settings.access_log, since=since)
            counts = {name: services[backend_name(NAMESPACE, name)] for name in names}
        return {name: n for name, n in counts.items() if n}

    def start_operator(self, kubeconfig: str) -> subprocess.Popen[bytes]:
        log_file = self.settings.state_dir / "operator.log"
        self.say(f"==> the operator: llmcanary run -n {NAMESPACE} (log {log_file})")
        with log_file.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "llmcanary", "run", "-n", NAMESPACE, "--log-format=json"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "KUBECONFIG": kubeconfig,
                    "LLMCANARY_RESYNC_SECONDS": "5",
                    # The local stack's Prometheus; the default allows Service names only.
                    "LLMCANARY_PROMETHEUS_ALLOWED_HOSTS": '["127.0.0.1", "localhost"]',
                },
                start_new_session=True,
            )

    # --- watching -------------------------------------------------------------------

    def status(self, kube: Kube) -> dict[str, Any]:
        obj = kube.get(API_VERSION, KIND, NAMESPACE, NAME) or {}
        return dict(obj.get("status") or {})

    def follow(
        self, kube: Kube, label: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Sample the status every second, print what changed, until ``done``."""
        deadline = time.monotonic() + self.rollout_timeout_s
        previous: Sample | None = None
        while time.monotonic() < deadline:
            status = self.status(kube)
            sample = sample_of(time.monotonic() - self.started, label, status)
            self.samples.append(sample)
            for line in describe(previous, sample):
                self.say("    " + line)
            previous = sample
            if done(status):
                return status
            time.sleep(1.0)
        raise DemoError(
            f"{label}: no outcome after {self.rollout_timeout_s:.0f}s;"
            f" see {self.settings.state_dir / 'operator.log'}"
        )

    # --- the story ------------------------------------------------------------------

    def run(self) -> Summary:
        self.say("==> the local stack: dev cluster, Triton per pod, Prometheus, Traefik")
        info = local.up(self.settings)
        self.say(f"    gateway {info['gateway']}, Prometheus {info['prometheus']}")
        kube = Kube.from_kubeconfig(info["kubeconfig"])
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        operator = self.start_operator(info["kubeconfig"])
        stop_load = threading.Event()
        loader: threading.Thread | None = None
        try:
            if kube.get(API_VERSION, KIND, NAMESPACE, NAME) is not None:
                self.say("==> removing the previous demo's tiny-llm")
                kube.delete(API_VERSION, KIND, NAMESPACE, NAME)
                self._wait(lambda: kube.get(API_VERSION, KIND, NAMESPACE, NAME) is None, 120)
            doc = self.manifest(info["prometheus"])
            self.say("==> revision 1 (2 layers, hidden size 128): kubectl apply")
            kube.apply(doc)
            self.follow(kube, "v1", lambda st: st.get("phase") == "Stable")
            pools = self.router == "inferencePool"
            url = info["inference_gateway"] if pools else info["gateway"]
            through = "the inference gateway (InferencePools)" if pools else "Traefik"
            self.say(f"==> steady load: {self.concurrency} streams through {through} at {url}")
            loader = threading.Thread(
                target=self._drive, args=(url, stop_load), name="load", daemon=True
            )
            loader.start()
            time.sleep(10)  # both arms' series exist before the first canary check
            for chapter in self.chapters:
                doc = {**doc, "spec": _merge(doc["spec"], chapter.spec_patch)}
                self.say(f"==> {chapter.label}: kubectl apply (expected: {chapter.expect})")
                since = time.time()
                kube.apply(doc)
                new = revision_of(LLMDeploymentSpec.model_validate(doc["spec"]))
                final = self.follow(kube, chapter.label, functools.partial(_finished, revision=new))
                self.shares[chapter.label] = self.arm_counts(since)
                outcome = final.get("phase")
                reason = (final.get("history") or [{}])[0].get("reason") or final.get("message")
                self.say(f"    {chapter.label}: {outcome}: {reason}")
                if outcome != chapter.expect and self.strict:
                    raise DemoError(f"{chapter.label} ended {outcome}, expected {chapter.expect}")
        finally:
            stop_load.set()
            if loader is not None:
                loader.join(timeout=60)
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        duration = self.samples[-1].t - self.samples[0].t if self.samples else 0.0
        return summarize(self.load, duration)

    def _drive(self, url: str, stop: threading.Event) -> None:
        config = LoadConfig(
            url=url, concurrency=self.concurrency, warmup_s=0.0, duration_s=None, max_tokens=32
        )
        results, _ = run_load(config, stop=stop)
        self.load.extend(results)

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise DemoError("timed out waiting for the previous demo to be removed")
            time.sleep(0.5)


def _finished(status: dict[str, Any], revision: str) -> bool:
    """The rollout of ``revision`` has an outcome (or stopped for a person: Paused)."""
    if status.get("phase") == "Paused":
        return True
    return any(h.get("revision") == revision for h in status.get("history") or [])
