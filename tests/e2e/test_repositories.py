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
  request metrics (``metrics: triton``).
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
from kubectl import ROOT, Kubectl, OperatorProcess, wait_for
from load_driver import LoadDriver

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.triton_config import parse_model_config
from llmcanary.rollout.revision import revision_of
from llmcanary_dev.localstack import stack as local

pytestmark = pytest.mark.k8s

PIPELINE = "tiny-pipeline"
STEPS = ["tiny-pipeline-preprocessing", "tiny-pipeline-model", "tiny-pipeline-postprocessing"]


def pipeline_manifest(stack: local.StackSettings) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples/local/tiny-pipeline.yaml").read_text())
    doc["spec"]["canary"]["analysis"]["prometheus"]["address"] = stack.prometheus_url
    return doc


def revision(doc: dict[str, Any]) -> str:
    return revision_of(LLMDeploymentSpec.model_validate(doc["spec"]))


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (kubectl.get("llmd", name, namespace) or {}).get("status") or {}
    return found


def stable(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    name = doc["metadata"]["name"]
    kubectl.apply(doc, namespace)
    found: dict[str, Any] = wait_for(
        f"{name} Stable with Triton serving",
        lambda: (s := status(kubectl, namespace, name)).get("phase") == "Stable" and s,
        timeout=240,
    )
    return found


def generate(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result: dict[str, Any] = json.loads(answer.read())
    return result


def test_a_python_model_that_declares_its_tensors_only_in_its_config_loads_and_serves(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
) -> None:
    doc = pipeline_manifest(stack)
    doc["metadata"]["name"] = "prep"
    doc["spec"]["model"]["name"] = STEPS[0]
    doc["spec"]["triton"] = {
        "maxBatchSize": 4,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 1000},
        "instanceGroup": {"kind": "KIND_CPU", "count": 1},
    }
    stable(kubectl, namespace, doc)
    config_map = kubectl.get("configmap", f"prep-{revision(doc)}-config", namespace) or {}
    served = parse_model_config(config_map["data"]["config.pbtxt"])
    # The repository's tensors are kept; the spec's batching is on them.
    assert [t.name for t in served.input] == ["PROMPT"]
    assert [t.name for t in served.output] == ["CLEAN_PROMPT"]
    assert served.max_batch_size == 4
    assert served.dynamic_batching.max_queue_delay_microseconds == 1000
    answer = generate(
        f"{stack.proxy_url}/{namespace}/prep/v2/models/{STEPS[0]}/generate",
        {"PROMPT": "a   canary \t of  tensors"},
    )
    assert answer["CLEAN_PROMPT"] == "a canary of tensors"
    # The read's Job ran in the pods' image and is done with.
    jobs = kubectl.list("job", namespace)
    assert [j["metadata"]["name"] for j in jobs] == [f"prep-read-{revision(doc)}"]
    assert jobs[0]["status"].get("succeeded") == 1


def test_an_ensemble_is_served_whole_and_a_slower_one_rolled_back(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
) -> None:
    doc = pipeline_manifest(stack)
    first = stable(kubectl, namespace, doc)
    config_map = kubectl.get("configmap", f"{PIPELINE}-{first['stableRevision']}-config", namespace)
    data = (config_map or {})["data"]
    # The ensemble and every step it names are staged; the ensemble's own config is kept.
    assert data["models"].splitlines() == STEPS
    assert sorted(data) == sorted(
        ["config.pbtxt", "models", *(f"{step}.config.pbtxt" for step in STEPS)]
    )
    ensemble = parse_model_config(data["config.pbtxt"])
    assert ensemble.platform == "ensemble" and len(ensemble.ensemble_scheduling.step) == 3
    url = f"{stack.proxy_url}/{namespace}/{PIPELINE}"
    answer = generate(f"{url}/v2/models/{PIPELINE}/generate", {"PROMPT": "hi", "MAX_TOKENS": 4})
    assert answer["model_name"] == PIPELINE and len(answer["TEXT"]) <= 4

    load = LoadDriver(url, concurrency=8, model=PIPELINE).start()
    try:
        time.sleep(5)
        # A slower revision: its postprocessing step waits 250 ms per batch.
        slow = copy.deepcopy(doc)
        slow["spec"]["model"]["version"] = "2"
        slow["spec"]["env"] = [{"name": "TINY_PIPELINE_DELAY_MS", "value": "250"}]
        kubectl.apply(slow, namespace)
        rolled = wait_for(
            "the slower pipeline rolled back",
            lambda: (s := status(kubectl, namespace, PIPELINE)).get("phase") == "RolledBack" and s,
            timeout=480,
        )
        reason = rolled["history"][0]["reason"]
        print(f"rollback: {reason}")
        assert rolled["rolledBackRevision"] == revision(slow)
        # Judged on the ensemble's own end-to-end latency (Triton's summary: point estimates).
        assert re.search(r"canary e2eLatency p95 \d+ ms > baseline \d+ ms \+20%", reason)
    finally:
        results = load.stop()
    errors = [r for r in results if not r.ok]
    print(f"load: {len(results)} requests, {len(errors)} errors: {errors[:3]}")
    assert len(results) > 100 and len(errors) <= len(results) * 0.01
