"""Whole model repositories on real Triton: the operator reads ``model_repo/`` before a
revision's first pod (a read Job, run here by the dev cluster's read-pods component),
keeps each model's own ``config.pbtxt`` with only the spec's fields changed on it, and
stages every model an ensemble needs.

- ``tiny-pipeline-preprocessing`` is shaped like Triton's ``add_sub`` example: its tensors
  are declared only in its config.pbtxt, and its ``initialize`` reads them from there. A
  config rendered from the spec alone failed its load (``TypeError: 'NoneType' object is
  not subscriptable``).
- ``tiny-pipeline`` is an ensemble laid out as a TensorRT-LLM repository (preprocessing ->
  model -> postprocessing) of Python models; its canaries are judged on the ensemble's own
  request metrics (``metrics: triton``): Triton's summary, one P95 per minute, so a step
  is judged after five minutes at the soonest. One step at 50% here (the most a fresh
  baseline allows), to keep the test's length to two such steps.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.request
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, canary_route_weight, promote, wait_for
from load_driver import LoadDriver
from routes import attach, route_host, wait_until_served

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.triton_config import parse_model_config
from llmcanary.rollout.revision import revision_of
from llmcanary_dev.localstack import stack as local

pytestmark = pytest.mark.k8s

PIPELINE = "tiny-pipeline"
STEPS = ["tiny-pipeline-preprocessing", "tiny-pipeline-model", "tiny-pipeline-postprocessing"]


def pipeline_manifest(
    stack: local.StackSettings, namespace: str, name: str = PIPELINE
) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples/local/tiny-pipeline.yaml").read_text())
    doc["metadata"]["name"] = name
    attach(doc, namespace)
    doc["spec"]["canary"]["analysis"]["prometheus"]["address"] = stack.prometheus_url
    doc["spec"]["canary"]["initialWeight"] = 50
    return doc


def revision(doc: dict[str, Any]) -> str:
    return revision_of(LLMDeploymentSpec.model_validate(doc["spec"]))


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (kubectl.get("llmd", name, namespace) or {}).get("status") or {}
    return found


def stable(
    kubectl: Kubectl, stack: local.StackSettings, namespace: str, doc: dict[str, Any]
) -> dict[str, Any]:
    name = doc["metadata"]["name"]
    kubectl.apply(doc, namespace)
    found: dict[str, Any] = wait_for(
        f"{name} Stable with Triton serving",
        lambda: (s := status(kubectl, namespace, name)).get("phase") == "Stable" and s,
        timeout=240,
    )
    wait_until_served(stack.gateway_url, route_host(namespace, name))
    return found


def generate(url: str, host: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Host": host},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result: dict[str, Any] = json.loads(answer.read())
    return result


def wait_for_promotion(
    kubectl: Kubectl, namespace: str, new: str, *, bound: float
) -> dict[str, Any]:
    """Until revision ``new`` is stable, failing at once if it is rolled back. A judge
    still collecting at ``bound`` (a step's minutes were noisier than usual) is promoted
    on request, as the tiny-llm promotion test does: that proves the rest (the promotion
    loads nothing), and the test has already shown the judge did not roll it back."""

    def promoted() -> dict[str, Any] | None:
        st = status(kubectl, namespace, PIPELINE)
        rolled_back = st.get("phase") == "RolledBack" and st.get("rolledBackRevision") == new
        assert not rolled_back, f"an identical pipeline rolled back: {st.get('message')}"
        return st if st.get("stableRevision") == new and st.get("phase") == "Stable" else None

    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if (final := promoted()) is not None:
            return final
        time.sleep(2)
    st = status(kubectl, namespace, PIPELINE)
    print(f"still judging after {bound:.0f} s: {st.get('message')}; promoting on request")
    assert st.get("phase") == "Progressing" and st.get("canaryWeight", 0) > 0, st
    promote(kubectl, namespace, PIPELINE)
    found: dict[str, Any] = wait_for("the pipeline promoted", promoted, timeout=120)
    return found


def test_a_python_model_that_declares_its_tensors_only_in_its_config_loads_and_serves(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
) -> None:
    doc = pipeline_manifest(stack, namespace, "prep")
    doc["spec"]["model"]["name"] = STEPS[0]
    doc["spec"]["triton"] = {
        "maxBatchSize": 4,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 1000},
        "instanceGroup": {"kind": "KIND_CPU", "count": 1},
    }
    stable(kubectl, stack, namespace, doc)
    config_map = kubectl.get("configmap", f"prep-{revision(doc)}-config", namespace) or {}
    served = parse_model_config(config_map["data"]["config.pbtxt"])
    # The repository's tensors are kept; the spec's batching is on them.
    assert [t.name for t in served.input] == ["PROMPT"]
    assert [t.name for t in served.output] == ["CLEAN_PROMPT"]
    assert served.max_batch_size == 4
    assert served.dynamic_batching.max_queue_delay_microseconds == 1000
    answer = generate(
        f"{stack.gateway_url}/v2/models/{STEPS[0]}/generate",
        route_host(namespace, "prep"),
        {"PROMPT": "a   canary \t of  tensors"},
    )
    assert answer["CLEAN_PROMPT"] == "a canary of tensors"
    # The read's Job ran in the pods' image and is done with.
    jobs = kubectl.list("job", namespace)
    assert [j["metadata"]["name"] for j in jobs] == [f"prep-read-{revision(doc)}"]
    assert jobs[0]["status"].get("succeeded") == 1


def test_an_ensemble_is_served_whole_a_slower_one_rolled_back_and_an_identical_one_promoted(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
) -> None:
    doc = pipeline_manifest(stack, namespace)
    first = stable(kubectl, stack, namespace, doc)
    config_map = kubectl.get("configmap", f"{PIPELINE}-{first['stableRevision']}-config", namespace)
    data = (config_map or {})["data"]
    # The ensemble and every step it names are staged; the ensemble's own config is kept.
    assert data["models"].splitlines() == STEPS
    assert sorted(data) == sorted(
        ["config.pbtxt", "models", *(f"{step}.config.pbtxt" for step in STEPS)]
    )
    ensemble = parse_model_config(data["config.pbtxt"])
    assert ensemble.platform == "ensemble" and len(ensemble.ensemble_scheduling.step) == 3
    url, host = stack.gateway_url, route_host(namespace, PIPELINE)
    answer = generate(
        f"{url}/v2/models/{PIPELINE}/generate", host, {"PROMPT": "hi", "MAX_TOKENS": 4}
    )
    assert answer["model_name"] == PIPELINE and len(answer["TEXT"]) <= 4

    load = LoadDriver(url, concurrency=8, model=PIPELINE, host=host).start()
    try:
        time.sleep(5)
        # A slower revision: its postprocessing step waits 250 ms per batch.
        slow = copy.deepcopy(doc)
        slow["spec"]["model"]["version"] = "2"
        slow["spec"]["env"] = [{"name": "TINY_PIPELINE_DELAY_MS", "value": "250"}]
        kubectl.apply(slow, namespace)
        started = time.monotonic()
        rolled = wait_for(
            "the slower pipeline rolled back",
            lambda: (s := status(kubectl, namespace, PIPELINE)).get("phase") == "RolledBack" and s,
            timeout=600,
        )
        reason = rolled["history"][0]["reason"]
        print(f"rolled back after {time.monotonic() - started:.0f} s: {reason}")
        assert rolled["rolledBackRevision"] == revision(slow)
        # Judged on the ensemble's own end-to-end latency, minute by minute.
        assert re.search(
            r"canary e2eLatency p95 \d+ ms vs baseline \d+ ms: \+\d+% \(.+\), limit \+20%;"
            r" \d+ time blocks of Triton's summary",
            reason,
        )

        # The same pipeline under a new version: the judge must not roll it back.
        identical = copy.deepcopy(doc)
        identical["spec"]["model"]["version"] = "3"
        new = revision(identical)
        kubectl.apply(identical, namespace)
        started = time.monotonic()
        final = wait_for_promotion(kubectl, namespace, new, bound=600)
        print(f"promoted after {time.monotonic() - started:.0f} s: {final['history'][0]}")
        assert final["history"][0]["outcome"] == "Promoted"
        assert canary_route_weight(kubectl, namespace, PIPELINE) in (0, None)
    finally:
        results = load.stop()
    errors = [r for r in results if not r.ok]
    print(f"load: {len(results)} requests, {len(errors)} errors: {errors[:3]}")
    assert len(results) > 100 and len(errors) <= len(results) * 0.01
