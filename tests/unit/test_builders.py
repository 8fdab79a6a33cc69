from typing import Any

import pytest
from specs import make_spec

from llmcanary.builders import Owner
from llmcanary.builders.baseline import build_baseline
from llmcanary.builders.services import build_service
from llmcanary.builders.workload import (
    build_config_map,
    build_deployment,
    image_allowed,
    image_refusal,
)
from llmcanary.routing.base import Weights
from llmcanary.routing.gateway_api import build_httproute
from llmcanary.routing.httproute import route_weights


def container(deployment: dict[str, Any], name: str = "triton") -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    found: dict[str, Any] = next(
        c for c in spec["containers"] + spec["initContainers"] if c["name"] == name
    )
    return found


def test_deployment_runs_triton_on_gpus_with_guaranteed_qos(owner: Owner) -> None:
    dep = build_deployment(owner, make_spec(), "abc123", "stable", replicas=2)
    assert dep["metadata"]["name"] == "tiny-abc123"
    assert dep["spec"]["replicas"] == 2
    triton = container(dep)
    resources = triton["resources"]
    assert resources["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert resources["requests"] == resources["limits"]
    assert "--metrics-config=summary_latencies=true" in triton["args"]
    assert "--metrics-config=histogram_latencies=true" in triton["args"]
    assert "--model-repository=/models" in triton["args"]
    assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # The startup probe waits long enough for a model to load its weights.
    probe = triton["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 1800


def test_deployment_mounts_shm_and_stages_the_model(owner: Owner) -> None:
    dep = build_deployment(owner, make_spec(), "abc123", "stable", replicas=2)
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["model-config"]["configMap"]["name"] == "tiny-abc123-config"
    assert volumes["model-source"]["persistentVolumeClaim"] == {
        "claimName": "models",
        "readOnly": True,
    }
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(dep)["volumeMounts"]
    stage = container(dep, "stage-model")
    env = {e["name"]: e["value"] for e in stage["env"]}
    assert env["MODEL_SOURCE"] == "/mnt/model-source/tiny-llm"
    source_mount = next(m for m in stage["volumeMounts"] if m["name"] == "model-source")
    assert source_mount["subPath"] == "repo"
    # Init containers need requests == limits too, or the pod is not Guaranteed.
    assert stage["resources"]["requests"] == stage["resources"]["limits"]


def test_deployment_labels_select_by_revision_not_track(owner: Owner) -> None:
    dep = build_deployment(owner, make_spec(), "abc123", "canary", replicas=1)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["llmcanary.io/deployment"] == "tiny"
    assert labels["llmcanary.io/revision"] == "abc123"
    # The track is on the Deployment, and on pods only in place: a template label would
    # have to change at promotion and replace every pod.
    assert "llmcanary.io/track" not in labels
    assert dep["metadata"]["labels"]["llmcanary.io/track"] == "canary"
    stable = build_deployment(owner, make_spec(), "abc123", "stable", replicas=1)
    assert stable["spec"]["template"] == dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"] == {
        "llmcanary.io/deployment": "tiny",
        "llmcanary.io/revision": "abc123",
    }


def test_deployment_metadata_names_the_model_and_the_template_does_not(owner: Owner) -> None:
    spec = make_spec(model={"name": "tiny-llm", "repository": "pvc://models/repo", "version": "7"})
    dep = build_deployment(owner, spec, "abc123", "canary", replicas=1)
    assert dep["metadata"]["annotations"] == {
        "llmcanary.io/model-name": "tiny-llm",
        "llmcanary.io/model-version": "7",
        "llmcanary.io/model-repository": "pvc://models/repo",
    }
    # On the Deployment only: annotations in the pod template would replace running pods.
    template = dep["spec"]["template"]
    assert set(template["metadata"]) == {"labels"}
    assert "llmcanary.io/model-version" not in repr(template)
    # The version is not in the template at all: bumping it changes only the metadata.
    bumped = make_spec(
        model={"name": "tiny-llm", "repository": "pvc://models/repo", "version": "8"}
    )
    assert build_deployment(owner, bumped, "abc123", "canary", 1)["spec"] == dep["spec"]


def test_every_child_is_owned(owner: Owner) -> None:
    spec = make_spec()
    children = [
        build_deployment(owner, spec, "r1", "stable", 1),
        build_config_map(owner, spec, "r1"),
        build_service(owner, "stable", "r1"),
        build_service(owner, "canary", "r1"),
        build_httproute(owner, spec.traffic.gateway_api, Weights.of(0)),
    ]
    for child in children:
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "llmcanary.io/v1alpha1",
            "kind": "LLMDeployment",
            "name": "tiny",
            "uid": "0000-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "ml"


def test_env_and_scheduling_pass_through(owner: Owner) -> None:
    spec = make_spec(
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    dep = build_deployment(owner, spec, "r1", "stable", 1)
    pod = dep["spec"]["template"]["spec"]
    assert container(dep)["env"] == [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_image_path_repository_needs_no_volume(owner: Owner) -> None:
    spec = make_spec(model={"name": "tiny-llm", "repository": "/opt/models/"})
    dep = build_deployment(owner, spec, "r1", "stable", 1)
    assert "model-source" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    env = {e["name"]: e["value"] for e in container(dep, "stage-model")["env"]}
    assert env["MODEL_SOURCE"] == "/opt/models/tiny-llm"


def test_triton_pods_meet_pod_security_restricted(owner: Owner) -> None:
    dep = build_deployment(owner, make_spec(), "abc123", "stable", replicas=2)
    pod = dep["spec"]["template"]["spec"]
    # Triton never calls the API: no ServiceAccount token in its pods.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        # The NGC image's triton-server user; the image runs as root by default.
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    containers = pod["initContainers"] + pod["containers"]
    assert [c["name"] for c in containers] == ["stage-model", "triton"]
    for c in containers:
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        # Nothing asks for root or privileges back at the container level.
        assert not {"runAsUser", "runAsNonRoot", "privileged"} & set(c["securityContext"])
    # What "restricted" allows: no host namespaces, ports or paths; these volume kinds.
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert all(not p.get("hostPort") for c in containers for p in c.get("ports", []))
    kinds = {k for v in pod["volumes"] for k in v if k != "name"}
    assert kinds <= {"emptyDir", "configMap", "persistentVolumeClaim"}


def test_each_deployment_gets_its_own_security_context(owner: Owner) -> None:
    first = build_deployment(owner, make_spec(), "a", "stable", replicas=1)
    first["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"] = "x"
    container(first)["securityContext"]["capabilities"]["drop"].append("y")
    second = build_deployment(owner, make_spec(), "b", "stable", replicas=1)
    assert second["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert container(second)["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        ("nvcr.io/nvidia/tritonserver:24.10-py3", [], True),  # no list: any image
        ("nvcr.io/nvidia/tritonserver:24.10-py3", ["nvcr.io/nvidia/tritonserver:*"], True),
        ("nvcr.io/nvidia/tritonserver:24.10-py3", ["nvcr.io/nvidia/*"], True),
        ("nvcr.io/nvidia/tritonserver@sha256:abc", ["nvcr.io/nvidia/tritonserver@*"], True),
        ("nvcr.io/nvidia/tritonserver:24.10-py3", ["registry.corp/*"], False),
        # The reference as written: no registry or tag is filled in.
        ("tritonserver:24.10-py3", ["nvcr.io/nvidia/tritonserver:*"], False),
        ("docker.io/library/ubuntu:22.04", ["ubuntu:*"], False),
        # A registry that merely starts like an allowed one is another registry.
        ("nvcr.io.evil.example/nvidia/tritonserver:1", ["nvcr.io/*"], False),
        ("evil.example/nvcr.io/nvidia/tritonserver:1", ["nvcr.io/*"], False),
        # Case-sensitive, whole reference; * spans / (a pattern author's choice).
        ("NVCR.IO/nvidia/tritonserver:1", ["nvcr.io/*"], False),
        ("nvcr.io/nvidia/tritonserver:1", ["nvcr.io/nvidia/tritonserver"], False),
        ("registry.corp/team/a/b:1", ["registry.corp/*"], True),
        ("registry.corp/team/a:1", ["registry.corp/other/*", "registry.corp/team/*"], True),
        ("", ["*"], False),
    ],
)
def test_image_allowed(image: str, patterns: list[str], allowed: bool) -> None:
    assert image_allowed(image, patterns) is allowed


def test_image_refusal_names_the_setting_and_the_patterns() -> None:
    assert image_refusal("nvcr.io/nvidia/tritonserver:1", []) is None
    assert image_refusal("nvcr.io/nvidia/tritonserver:1", ["nvcr.io/*"]) is None
    assert image_refusal("evil.example/triton:1", ["nvcr.io/*", "registry.corp/*"]) == (
        "triton.image 'evil.example/triton:1' is not in the operator's image allowlist"
        " (LLMCANARY_ALLOWED_IMAGES: nvcr.io/*, registry.corp/*); use an allowed image,"
        " or ask the platform team to allow it"
    )


def test_services_select_a_revision(owner: Owner) -> None:
    svc = build_service(owner, "canary", "r2")
    assert svc["metadata"]["name"] == "tiny-canary"
    assert svc["spec"]["selector"] == {
        "llmcanary.io/deployment": "tiny",
        "llmcanary.io/revision": "r2",
    }
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001, 8002}


def test_httproute_weights(owner: Owner) -> None:
    spec = make_spec(
        traffic={
            "gatewayAPI": {"parentRefs": [{"name": "gw", "namespace": "gws"}], "hostnames": ["a.b"]}
        }
    )
    route = build_httproute(owner, spec.traffic.gateway_api, Weights.of(0))
    assert route_weights(route) == {"tiny-stable": 100, "tiny-canary": 0}
    assert route["spec"]["parentRefs"] == [{"name": "gw", "namespace": "gws"}]
    assert route["spec"]["hostnames"] == ["a.b"]
    assert route_weights(build_httproute(owner, spec.traffic.gateway_api, Weights.of(15))) == {
        "tiny-stable": 85,
        "tiny-canary": 15,
    }


def test_httproute_gives_the_baseline_the_canarys_weight(owner: Owner) -> None:
    spec = make_spec()
    route = build_httproute(owner, spec.traffic.gateway_api, Weights.of(15, 15))
    assert route_weights(route) == {"tiny-stable": 70, "tiny-canary": 15, "tiny-baseline": 15}
    with pytest.raises(ValueError, match="do not fit"):
        Weights.of(60, 60)


def test_the_baseline_is_the_stable_template_as_a_revision_of_its_own(owner: Owner) -> None:
    spec = make_spec()
    stable = build_deployment(owner, spec, "r1", "stable", 4)
    stable["status"] = {"readyReplicas": 4}
    baseline = build_baseline(owner, stable, 1)
    assert baseline["metadata"]["name"] == "tiny-r1-baseline"
    assert baseline["metadata"]["labels"]["llmcanary.io/track"] == "baseline"
    assert baseline["spec"]["replicas"] == 1
    selector = {"llmcanary.io/deployment": "tiny", "llmcanary.io/revision": "r1-baseline"}
    assert baseline["spec"]["selector"] == {"matchLabels": selector}
    pod = baseline["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["labels"]["llmcanary.io/track"] == "baseline"
    # The same containers: what runs is the stable revision, not the spec's canary.
    assert pod["spec"] == stable["spec"]["template"]["spec"]
    assert "status" not in baseline
    # NAME-stable selects revision r1 only: not the baseline's pods.
    stable_service = build_service(owner, "stable", "r1")["spec"]["selector"]
    assert not stable_service.items() <= pod["metadata"]["labels"].items()
    assert baseline["metadata"]["ownerReferences"][0]["uid"] == owner.uid


def test_a_repository_at_models_in_the_image_is_not_hidden_by_the_staging_volume(
    owner: Owner,
) -> None:
    """The pods stage into an emptyDir at /models: a repository baked into the image at
    /models (Triton's usual place) would be hidden by it, and every pod would fail with no
    model directory. Such a repository is staged elsewhere; Triton is told where."""
    for repository in ("/models", "/models/", "/models/llm"):
        spec = make_spec(model={"name": "m", "repository": repository})
        pod = build_deployment(owner, spec, "abc123", "stable", 1)["spec"]["template"]["spec"]
        stage = pod["initContainers"][0]
        staged = next(m["mountPath"] for m in stage["volumeMounts"] if m["name"] == "models")
        env = {e["name"]: e["value"] for e in stage["env"]}
        assert staged == env["MODEL_REPOSITORY"] == "/llmcanary/models"
        assert not env["MODEL_SOURCE"].startswith(staged + "/")
        assert f"--model-repository={staged}" in container_of(pod)["args"]
    elsewhere = make_spec(model={"name": "m", "repository": "/opt/models"})
    pod = build_deployment(owner, elsewhere, "abc123", "stable", 1)["spec"]["template"]["spec"]
    assert "--model-repository=/models" in container_of(pod)["args"]


def container_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod_spec["containers"] if c["name"] == "triton")
    return found
