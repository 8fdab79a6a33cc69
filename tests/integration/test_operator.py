"""The operator in steady state, as a real process against the real control plane."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, wait_for

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.triton_config import parse_model_config
from llmcanary.rollout.revision import revision_of

pytestmark = pytest.mark.k8s

EXAMPLE = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
NAME = EXAMPLE["metadata"]["name"]
REVISION = revision_of(LLMDeploymentSpec.model_validate(EXAMPLE["spec"]))
CHILD_KINDS = ("deployment", "configmap", "service", "httproute")


def llmd(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    found = kubectl.get("llmd", NAME, namespace)
    assert found is not None
    return found


def phase_is(kubectl: Kubectl, namespace: str, phase: str) -> dict[str, Any] | None:
    obj = kubectl.get("llmd", NAME, namespace)
    return obj if obj and obj.get("status", {}).get("phase") == phase else None


def children(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    found = {}
    for kind in CHILD_KINDS:
        for item in kubectl.list(kind, namespace, f"llmcanary.io/deployment={NAME}"):
            found[f"{item['kind']}/{item['metadata']['name']}"] = item
    return found


def versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """resourceVersion of the LLMDeployment and every child: any write changes one."""
    out = {k: v["metadata"]["resourceVersion"] for k, v in children(kubectl, namespace).items()}
    out["LLMDeployment"] = llmd(kubectl, namespace)["metadata"]["resourceVersion"]
    return out


@pytest.fixture
def stable(kubectl: Kubectl, operator: OperatorProcess, namespace: str) -> dict[str, Any]:
    kubectl.apply(EXAMPLE, namespace)
    return wait_for("phase Stable", lambda: phase_is(kubectl, namespace, "Stable"), timeout=90)


def test_create_reconciles_the_revision_to_stable(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    status = stable["status"]
    assert status["stableRevision"] == REVISION
    assert status["canaryWeight"] == 0
    assert status["observedGeneration"] == stable["metadata"]["generation"]
    assert status["readyReplicas"] == 2
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "False"
    assert conditions["Progressing"]["status"] == "False"

    kids = children(kubectl, namespace)
    assert set(kids) == {
        f"Deployment/{NAME}-{REVISION}",
        f"ConfigMap/{NAME}-{REVISION}-config",
        f"Service/{NAME}-stable",
        f"Service/{NAME}-canary",
        f"HTTPRoute/{NAME}",
    }
    uid = stable["metadata"]["uid"]
    for key, child in kids.items():
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("LLMDeployment", uid, True), key

    deployment = kids[f"Deployment/{NAME}-{REVISION}"]
    assert deployment["spec"]["replicas"] == 2
    pods = kubectl.list("pod", namespace, f"llmcanary.io/revision={REVISION}")
    assert len(pods) == 2
    assert all(p["spec"]["nodeName"].startswith("gpu-") for p in pods)
    config = kids[f"ConfigMap/{NAME}-{REVISION}-config"]["data"]["config.pbtxt"]
    batching = parse_model_config(config).dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8]
    route = kids[f"HTTPRoute/{NAME}"]["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in route] == [
        (f"{NAME}-stable", 100),
        (f"{NAME}-canary", 0),
    ]

    table = kubectl.run("get", "llmd", "-n", namespace).stdout.splitlines()
    assert table[1].split()[:5] == [NAME, "Stable", REVISION, "0"] or table[1].split()[:4] == [
        NAME,
        "Stable",
        REVISION,
        "0",
    ]


def test_deleted_children_are_recreated(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    for kind, name in [
        ("service", f"{NAME}-canary"),
        ("configmap", f"{NAME}-{REVISION}-config"),
        ("httproute", NAME),
        ("deployment", f"{NAME}-{REVISION}"),
    ]:
        kubectl.run("delete", kind, name, "-n", namespace, "--wait=true")
        wait_for(
            f"{kind} {name} recreated",
            lambda k=kind, n=name: kubectl.get(k, n, namespace),
            timeout=30,
        )
    wait_for("Stable again", lambda: phase_is(kubectl, namespace, "Stable"), timeout=60)


def test_drift_in_a_child_is_corrected(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    kubectl.run(
        "patch",
        "httproute",
        NAME,
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50}]),
    )

    def weights() -> list[int] | None:
        route = kubectl.get("httproute", NAME, namespace)
        found = [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] if route else None
        return found if found == [100, 0] else None

    wait_for("the route back at 100/0", weights, timeout=30)


def test_scaling_is_not_a_new_revision(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    kubectl.run(
        "patch", "llmd", NAME, "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":3}}'
    )

    def scaled() -> dict[str, Any] | None:
        obj = llmd(kubectl, namespace)
        st = obj.get("status", {})
        done = (
            st.get("readyReplicas") == 3
            and st.get("observedGeneration") == obj["metadata"]["generation"]
        )
        return obj if done and st.get("phase") == "Stable" else None

    obj = wait_for("3 ready replicas", scaled, timeout=60)
    assert obj["status"]["stableRevision"] == REVISION
    assert len(kubectl.list("deployment", namespace, f"llmcanary.io/deployment={NAME}")) == 1


def test_a_new_revision_starts_a_canary_beside_the_untouched_stable_one(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    kubectl.run(
        "patch",
        "llmd",
        NAME,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"model":{"version":"2"}}}',
    )

    def reported() -> dict[str, Any] | None:
        st = llmd(kubectl, namespace).get("status", {})
        return st if st.get("canaryRevision") else None

    status = wait_for("canaryRevision in status", reported, timeout=30)
    assert status["stableRevision"] == REVISION
    assert status["canaryRevision"] != REVISION
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True"
    deployment = kubectl.get("deployment", f"{NAME}-{REVISION}", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["labels"]["llmcanary.io/track"] == "stable"
    # Made at 0 replicas once the repository is read; grown once preflight passes.
    canary = wait_for(
        "the canary Deployment with replicas",
        lambda: (
            (d := kubectl.get("deployment", f"{NAME}-{status['canaryRevision']}", namespace))
            and d["spec"]["replicas"] >= 1
            and d
        ),
    )
    assert canary["metadata"]["labels"]["llmcanary.io/track"] == "canary"


def test_deleting_the_llmdeployment_removes_its_children(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    kubectl.run("delete", "llmd", NAME, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("children garbage-collected", lambda: not children(kubectl, namespace), timeout=60)


def applied_children(operator: OperatorProcess) -> list[str]:
    """The operator's "created/updated KIND NS/NAME" log lines."""
    return [line for line in operator.log_lines() if '"outcome"' in line]


def test_idle_operator_writes_nothing_and_a_restart_duplicates_nothing(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, stable: dict[str, Any]
) -> None:
    # Let the last readiness changes settle, then take the picture.
    time.sleep(3)
    before = versions(kubectl, namespace)
    applies = applied_children(operator)
    time.sleep(8)  # four resync periods (LLMCANARY_RESYNC_SECONDS=2) and watch events
    assert versions(kubectl, namespace) == before, "an idle operator wrote something"
    # A no-op apply changes no resourceVersion but is still a request and a log line
    # (tests/unit/test_children.py has the case that did it: a spec without env).
    assert applied_children(operator) == applies, "an idle operator re-sent its children"

    operator.stop()
    operator.start()
    wait_for(
        "the restarted operator to reconcile",
        lambda: (
            sum(
                '"llmdeployment_event"' in line or "Handler 'llmdeployment_event'" in line
                for line in operator.log_lines()
            )
            >= 2
        ),
        timeout=30,
    )
    time.sleep(6)
    assert versions(kubectl, namespace) == before, "a restart wrote or created something"
    events = kubectl.list("event", namespace)
    creations = [e for e in events if e.get("reason") == "Stable"]
    assert len(creations) == 1, "the phase change was announced once, not once per start"


def test_the_users_spec_is_never_written(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> None:
    managers = kubectl.run(
        "get", "llmd", NAME, "-n", namespace, "--show-managed-fields", "-o", "json"
    ).stdout
    for entry in json.loads(managers)["metadata"]["managedFields"]:
        if entry["manager"].startswith("kubectl"):
            continue
        assert "f:spec" not in entry.get("fieldsV1", {}), entry["manager"]


def test_logs_are_structured_json(
    kubectl: Kubectl, operator: OperatorProcess, stable: dict[str, Any]
) -> None:
    lines = [line for line in operator.log_lines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all("message" in r for r in records)


def test_a_name_collision_is_reported_not_adopted(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    stranger = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{NAME}-stable"},
        "spec": {"ports": [{"port": 80}]},
    }
    kubectl.apply(stranger, namespace)
    kubectl.apply(EXAMPLE, namespace)

    def degraded() -> dict[str, Any] | None:
        conds = llmd(kubectl, namespace).get("status", {}).get("conditions", [])
        found = next((c for c in conds if c["type"] == "Degraded" and c["status"] == "True"), None)
        return found

    condition = wait_for("Degraded=True", degraded, timeout=30)
    assert condition["reason"] == "ChildConflict"
    assert f"Service '{NAME}-stable' already exists and is not owned" in condition["message"]
    svc = kubectl.get("service", f"{NAME}-stable", namespace)
    assert svc is not None and not svc["metadata"].get("ownerReferences")
    warnings = [e for e in kubectl.list("event", namespace) if e.get("reason") == "ChildConflict"]
    assert warnings and warnings[0]["type"] == "Warning"


def test_sigterm_while_the_first_events_are_handled_stops_the_operator(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, stable: dict[str, Any]
) -> None:
    # The race: kopf spawns the rollout daemon after handling the LLMDeployment's event; a
    # SIGTERM in between left a daemon nobody stopped, and the process alive until SIGKILL.
    # The first handled event marks the burst; a pod's grace period is 30 s by default.
    operator.stop()
    for attempt in range(5):
        operator.log_file.write_text("")
        operator.start()
        wait_for(
            "the restarted operator to handle an event",
            lambda: any("Handler '" in line for line in operator.log_lines()),
            timeout=30,
            every=0.02,
        )
        assert operator.sigterm(timeout=15), f"attempt {attempt}: still running 15 s after SIGTERM"
