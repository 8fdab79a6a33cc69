"""Differential fuzzing: the pydantic models and the API server (the CRD's schema and its
CEL rules) agree on every generated spec, and the operator reconciles every admitted one
without an unhandled exception.

The models are what the operator and ``llmcanary preflight`` trust; the CRD is what stops a
tenant at ``kubectl apply``. A spec the server admits and the models refuse stands still in
the cluster as InvalidSpec; one the models admit and the server refuses fails only at apply
time. Either is a bug, so the test prints every disagreement with the fields that made it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from kubectl import Kubectl, OperatorProcess, wait_for
from pydantic import ValidationError
from spec_fuzz import generate

from llmcanary.api.spec import LLMDeploymentSpec

pytestmark = pytest.mark.k8s

SPECS = 520
SEED = 15
CHUNK = 130  # documents per kubectl call, to stay within its timeout
_CREATED = re.compile(r"llmdeployment\.llmcanary\.io/(\S+) created \(server dry run\)")


def _model_admits(spec: dict[str, Any]) -> str | None:
    """None if the models admit ``spec``, else their first error."""
    try:
        LLMDeploymentSpec.model_validate(copy.deepcopy(spec))
    except ValidationError as exc:
        return str(exc).splitlines()[1] + ": " + str(exc).splitlines()[2].strip()
    return None


def _server_admits(kubectl: Kubectl, namespace: str, docs: list[dict[str, Any]]) -> set[str]:
    """The names ``kubectl apply --dry-run=server`` admits (it goes on past a refusal)."""
    admitted: set[str] = set()
    for start in range(0, len(docs), CHUNK):
        text = yaml.safe_dump_all(docs[start : start + CHUNK])
        done = subprocess.run(
            [kubectl.binary, "apply", "--dry-run=server", "-n", namespace, "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            env=kubectl.env,
            timeout=300,
        )
        admitted |= set(
            re.findall(
                r"llmdeployment\.llmcanary\.io/(\S+) created \(server dry run\)", done.stdout
            )
        )
    return admitted


def _server_error(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> str:
    done = kubectl.run(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(doc), check=False
    )
    return done.stderr.strip()[-400:]


def _manifest(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmcanary.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": f"fuzz-{index:03d}"},
        "spec": spec,
    }


def test_models_and_api_server_agree_and_the_operator_survives_what_is_admitted(
    kubectl: Kubectl, crd: None, namespace: str, operator: OperatorProcess
) -> None:
    cases = generate(SPECS, SEED)
    docs = [_manifest(i, spec) for i, (_, spec) in enumerate(cases)]
    by_model = {doc["metadata"]["name"]: _model_admits(doc["spec"]) for doc in docs}
    by_server = _server_admits(kubectl, namespace, docs)

    disagreements = []
    for (changes, _), doc in zip(cases, docs, strict=True):
        name = doc["metadata"]["name"]
        model_ok, server_ok = by_model[name] is None, name in by_server
        if model_ok != server_ok:
            said = (
                _server_error(kubectl, namespace, doc)
                if not server_ok
                else f"models: {by_model[name]}"
            )
            disagreements.append(
                f"{name} [{changes}] models {'admit' if model_ok else 'refuse'},"
                f" server {'admits' if server_ok else 'refuses'}: {said}"
            )
    assert not disagreements, f"{len(disagreements)} of {SPECS}:\n" + "\n".join(disagreements)
    valid = [doc for doc in docs if doc["metadata"]["name"] in by_server]
    # Both kinds are present in numbers, or the comparison says little.
    assert 100 <= len(valid) <= SPECS - 100, f"{len(valid)} of {SPECS} admitted"

    # Every admitted spec, created for real: the operator gives each a status of its own,
    # with no traceback and no internal error (what it cannot do is a status message).
    # A quota of no pods keeps a thousand-replica spec from loading the shared machine; the
    # operator still creates every child and reads the Deployments' refusals.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        },
        namespace,
    )
    for start in range(0, len(valid), CHUNK):
        subprocess.run(
            [kubectl.binary, "apply", "-n", namespace, "-f", "-"],
            input=yaml.safe_dump_all(valid[start : start + CHUNK]),
            capture_output=True,
            text=True,
            env=kubectl.env,
            timeout=300,
            check=True,
        )

    def unreconciled() -> list[str]:
        return [
            obj["metadata"]["name"]
            for obj in kubectl.list("llmd", namespace)
            if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]
            and not (obj.get("status") or {}).get("message")
        ]

    wait_for(f"a status on all {len(valid)} objects", lambda: not unreconciled(), timeout=420)
    internal = [
        f"{obj['metadata']['name']}: {obj['status'].get('message')}"
        for obj in kubectl.list("llmd", namespace)
        if "InternalError" in json.dumps(obj.get("status") or {})
    ]
    assert not internal, "\n".join(internal)
    log = "\n".join(operator.log_lines())
    assert "Traceback" not in log, log[
        log.index("Traceback") - 2000 : log.index("Traceback") + 3000
    ]
