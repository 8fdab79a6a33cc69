"""Many LLMDeployments on one operator: a bounded pool of workers serves them all.

kopf once ran one synchronous daemon per LLMDeployment on its thread pool of
min(32, CPUs + 4) threads, and the 7th object on a 2-core machine never got a status.
Here the operator runs with 2 workers for more objects than that, as a real process
against the real API server. Behaviour only: how long things take is measured by
bench/scale.py, not asserted here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, wait_for
from metrics import free_port
from prometheus_client.parser import text_string_to_metric_families

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.rollout.revision import revision_of

pytestmark = pytest.mark.k8s

WORKERS = 2
OBJECTS = 8  # more than the workers, and more than kopf's old pool on 2 cores (6)


def manifest(index: int, version: str = "1", **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text()))
    doc["metadata"]["name"] = f"tiny-{index}"
    doc["spec"]["model"]["version"] = version
    doc["spec"]["replicas"] = 1
    doc["spec"]["resources"]["gpus"] = 0  # KWOK pods; leave the GPUs to other tests
    # Without a GPU, CPU instances: KIND_GPU is refused before any pod (InvalidModelConfig).
    doc["spec"]["triton"]["instanceGroup"] = {"kind": "KIND_CPU", "count": 1}
    doc["spec"].update(spec)
    return doc


def canary_deployment(doc: dict[str, Any]) -> str:
    return f"{doc['metadata']['name']}-{revision_of(LLMDeploymentSpec.model_validate(doc['spec']))}"


def phases(kubectl: Kubectl, namespace: str) -> dict[str, str | None]:
    return {
        item["metadata"]["name"]: item.get("status", {}).get("phase")
        for item in kubectl.list("llmd", namespace)
    }


def kube_requests(operator: OperatorProcess) -> float:
    """The reconciler's Kubernetes API requests so far, from the operator's /metrics."""
    text = requests.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "llmcanary_kube_requests"
        for sample in family.samples
        if sample.name == "llmcanary_kube_requests_total"
    )


@pytest.fixture
def operator(
    kubectl: Kubectl, crd: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        kubectl.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        extra_env={
            "LLMCANARY_WORKERS": str(WORKERS),
            # The product's default: a pass comes from a change or a rollout's clock.
            "LLMCANARY_RESYNC_SECONDS": "600",
            "LLMCANARY_CANARY_READY_CHECK": "false",  # KWOK pods run no Triton
        },
        metrics_port=free_port(),
    ).start()
    yield proc
    proc.stop()
    print("--- operator log (tail) ---\n" + "\n".join(proc.log_lines()[-40:]))


@pytest.fixture
def many_stable(kubectl: Kubectl, operator: OperatorProcess, namespace: str) -> None:
    for index in range(OBJECTS):
        kubectl.apply(manifest(index), namespace)
    wait_for(
        f"all {OBJECTS} LLMDeployments Stable with {WORKERS} workers",
        lambda: list(phases(kubectl, namespace).values()) == ["Stable"] * OBJECTS,
        timeout=180,
    )


def test_more_objects_than_workers_all_reach_stable_and_each_starts_its_canary(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, many_stable: None
) -> None:
    changed = [manifest(index, version="2") for index in range(OBJECTS)]
    for doc in changed:
        kubectl.apply(doc, namespace)
    for doc in changed:
        wait_for(
            f"the canary Deployment of {doc['metadata']['name']}",
            lambda doc=doc: kubectl.get("deployment", canary_deployment(doc), namespace),
            timeout=60,
        )
    wait_for(
        "every rollout under way",
        lambda: all(
            phase in ("Preflight", "Progressing") for phase in phases(kubectl, namespace).values()
        ),
        timeout=60,
    )
    threads = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{operator.proc.pid}/status").read_text().splitlines()  # type: ignore[union-attr]
            if line.startswith("Threads:")
        )
    )
    # The main thread, asyncio's and kopf's few, the workers, /metrics: not one per object.
    assert threads < OBJECTS + WORKERS, f"{threads} threads for {OBJECTS} objects"


def test_a_paused_rollout_makes_next_to_no_api_calls(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, many_stable: None
) -> None:
    held = manifest(0, version="2", paused=True)
    kubectl.apply(held, namespace)
    wait_for("the rollout Paused", lambda: phases(kubectl, namespace)["tiny-0"] == "Paused", 60)
    time.sleep(3)  # the child events of the pause itself settle
    before = kube_requests(operator)
    time.sleep(30)
    made = kube_requests(operator) - before
    # It used to pass every 0.2 s at about 17 calls a pass: some 2,500 in 30 s.
    assert made <= 5, f"{made:.0f} API requests in 30 s while Paused and idle"
    held["spec"]["paused"] = False
    kubectl.apply(held, namespace)
    wait_for(
        "the rollout resumed by its own change",
        lambda: phases(kubectl, namespace)["tiny-0"] == "Progressing",
        timeout=30,
    )


def test_sigterm_with_many_objects_ends_the_process(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, many_stable: None
) -> None:
    for index in range(OBJECTS):  # every worker busy, and work queued
        kubectl.apply(manifest(index, version="3"), namespace)
    ended = operator.sigterm(timeout=10)
    operator.start()  # so that the namespace's objects lose their finalizers at teardown
    assert ended, "still running 10 s after SIGTERM"
