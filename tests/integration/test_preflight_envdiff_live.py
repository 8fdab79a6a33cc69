"""The environment diff against the real API server: Secrets, ConfigMaps, two revisions.

No operator runs here: the test owns an LLMDeployment (examples/tiny-llm.yaml) and builds
the stable and canary Deployments and ConfigMaps with the builders, as the operator
would; the canary's env refers to a different Secret and ConfigMap key than the stable's.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import PreflightStatus
from llmcanary.builders import Owner
from llmcanary.builders.meta import deployment_name
from llmcanary.builders.workload import build_config_map, build_deployment
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.preflight.envdiff import SECRET, SECRET_CHANGED, describe, offending
from llmcanary.preflight.envdiff_source import env_diff, read_revision_view

pytestmark = pytest.mark.k8s

NAME = "tiny-llm"
STABLE, CANARY = "r1", "r2"
OLD_TOKEN = "tok-old-7f3a9c1e5b"
NEW_TOKEN = "tok-new-2d8e4f6a0c"
SHARED_KEY = "hf-shared-91b2c3d4"
ALLOWED = ["image", "model.version", "env.MODEL_*", "triton.dynamicBatching.*"]


def secret_ref(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def config_ref(name: str, config_map: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"configMapKeyRef": {"name": config_map, "key": key}}}


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_env_diff_masks_secrets_resolves_config_maps_and_applies_patterns(
    kube: Kube,
    kubectl: Kubectl,
    crd: None,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
    kubectl.apply(doc, namespace)
    created = kubectl.get("llmdeployment", NAME, namespace)
    assert created is not None
    owner = Owner(NAME, namespace, created["metadata"]["uid"])

    kubectl.apply(secret("api-creds-v1", token=OLD_TOKEN), namespace)
    kubectl.apply(secret("api-creds-v2", token=NEW_TOKEN), namespace)
    kubectl.apply(secret("hf", token=SHARED_KEY), namespace)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "llm-settings"},
            "data": {"temperature-v1": "0.7", "temperature-v2": "0.9", "top-k": "40"},
        },
        namespace,
    )

    stable_doc = copy.deepcopy(doc["spec"])
    stable_doc["env"] = [
        config_ref("MODEL_TEMPERATURE", "llm-settings", "temperature-v1"),
        secret_ref("API_TOKEN", "api-creds-v1", "token"),
        secret_ref("HF_TOKEN", "hf", "token"),
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    canary_doc = copy.deepcopy(stable_doc)
    canary_doc["model"]["version"] = "2"
    canary_doc["triton"]["image"] = "nvcr.io/nvidia/tritonserver:24.11-py3"
    canary_doc["triton"]["dynamicBatching"]["maxQueueDelayMicroseconds"] = 4000
    canary_doc["env"] = [
        config_ref("MODEL_TEMPERATURE", "llm-settings", "temperature-v2"),
        secret_ref("API_TOKEN", "api-creds-v2", "token"),
        secret_ref("HF_TOKEN", "hf", "token"),
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        config_ref("TOP_K", "llm-settings", "top-k"),
    ]
    for revision, track, spec_doc in (
        (STABLE, "stable", stable_doc),
        (CANARY, "canary", canary_doc),
    ):
        spec = LLMDeploymentSpec.model_validate(spec_doc)
        ensure(kube, build_config_map(owner, spec, revision))
        ensure(kube, build_deployment(owner, spec, revision, track, 1))

    # The model version is on the Deployment, as the API server keeps it.
    canary_deployment = kubectl.get("deployment", deployment_name(NAME, CANARY), namespace)
    assert canary_deployment is not None
    assert canary_deployment["metadata"]["annotations"]["llmcanary.io/model-version"] == "2"

    with caplog.at_level(logging.DEBUG):
        differences = env_diff(kube, namespace, NAME, STABLE, CANARY, ALLOWED)
        stable_view = read_revision_view(kube, namespace, NAME, STABLE)
        canary_view = read_revision_view(kube, namespace, NAME, CANARY)
        logging.getLogger("test").info("differences: %s", differences)
        logging.getLogger("test").info("views: %r %r", stable_view, canary_view)

    found = {d.key: (d.stable, d.canary, d.allowed, d.masked) for d in differences}
    assert found == {
        "env.API_TOKEN": (SECRET, SECRET_CHANGED, False, True),
        "env.MODEL_TEMPERATURE": ("0.7", "0.9", True, False),
        "env.TOP_K": (None, "40", False, False),
        "image": (
            "nvcr.io/nvidia/tritonserver:24.10-py3",
            "nvcr.io/nvidia/tritonserver:24.11-py3",
            True,
            False,
        ),
        "model.version": ("1", "2", True, False),
        "triton.dynamicBatching.maxQueueDelayMicroseconds": ("2000", "4000", True, False),
    }
    assert [d.key for d in differences] == sorted(found)
    # HF_TOKEN reads the same Secret on both sides; POD_NAME is a reference: no difference.
    assert stable_view["env.HF_TOKEN"] == canary_view["env.HF_TOKEN"]
    assert stable_view["env.POD_NAME"] == "(fieldRef metadata.name)"
    bad = offending(differences)
    assert describe(bad) == "env.API_TOKEN: (secret) -> (secret, changed); env.TOP_K: (none) -> 40"

    status = PreflightStatus(
        revision=CANARY, passed=not bad, reason=describe(bad), env_diff=differences
    )
    seen = json.dumps(status.model_dump(mode="json", by_alias=True))
    seen += repr(status) + repr(stable_view) + repr(canary_view) + caplog.text
    for value in (OLD_TOKEN, NEW_TOKEN, SHARED_KEY):
        assert value not in seen
        assert base64.b64encode(value.encode()).decode() not in seen
    print(json.dumps(status.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))

    # Same Secret value under another name and key: still no difference.
    kubectl.apply(secret("api-creds-v2", token=OLD_TOKEN), namespace)
    again = {d.key for d in env_diff(kube, namespace, NAME, STABLE, CANARY, ALLOWED)}
    assert "env.API_TOKEN" not in again and "env.TOP_K" in again
