"""charts/llmcanary: helm lint and template pass, the schema refuses bad values, and the
rendered objects keep the contracts the operator and the analysis rely on (RBAC rules,
securityContext, peering, the container's arguments, the PodMonitor's labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from chart_render import CHART, ROOT, helm, one, render, values_args
from llmcanary import __version__
from llmcanary.api.spec import InferencePoolTraffic
from llmcanary.builders import Owner
from llmcanary.builders.meta import (
    LABEL_DEPLOYMENT,
    LABEL_PICKER,
    LABEL_REVISION,
    LABEL_TRACK,
    pod_labels,
)
from llmcanary.cli.run import run
from llmcanary.main import CHILD_KINDS
from llmcanary.routing.inference_pool import PICKER_METRICS_PORT, build_picker
from llmcanary.sources.promql import PRESETS, SUMMARY_LATENCY, TRITON_REQUESTS, HistogramQuery

Rules = dict[tuple[str, str], set[str]]

# What the operator calls (see _rbac.tpl for the reason of each rule). Reviewed by hand:
# a rule added to the chart fails this test until it is added here and to docs/install.md.
NAMESPACED: Rules = {
    ("llmcanary.io", "llmdeployments"): {"get", "list", "watch", "patch"},
    ("llmcanary.io", "llmdeployments/status"): {"patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
    ("", "pods"): {"list", "watch", "patch"},
    ("", "secrets"): {"get"},
    ("gateway.networking.k8s.io", "httproutes"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("", "events"): {"create"},
    ("batch", "jobs"): {"get", "create", "patch", "delete"},
    ("", "pods/log"): {"get"},
    ("inference.networking.k8s.io", "inferencepools"): {"get", "list", "watch"},
}
CLUSTER: Rules = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "nodes"): {"list"},
    ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"},
}
ISTIO: Rules = {("networking.istio.io", "virtualservices"): {"get", "create", "patch", "delete"}}
# rbac.inferencePool: the pools written, and what the pickers' Role grants them.
INFERENCE_POOL: Rules = {
    ("", "pods"): {"list", "watch", "patch", "get"},
    ("inference.networking.k8s.io", "inferencepools"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("", "serviceaccounts"): {"get", "create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create", "patch", "delete"},
    ("inference.networking.x-k8s.io", "inferenceobjectives"): {"get", "list", "watch"},
    ("inference.networking.x-k8s.io", "inferencemodelrewrites"): {"get", "list", "watch"},
}
OPERATOR_METRICS = [
    "llmcanary_rollout_phase",
    "llmcanary_canary_weight",
    "llmcanary_analysis_verdicts_total",
    "llmcanary_rollbacks_total",
    "llmcanary_promotions_total",
    "llmcanary_preflight_failures_total",
    "llmcanary_reconcile_duration_seconds",
    "llmcanary_prometheus_query_errors_total",
]


def rules_of(role: dict[str, Any]) -> Rules:
    out: Rules = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                assert key not in out, f"{key} granted by two rules"
                out[key] = set(rule["verbs"])
    return out


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def test_helm_lint_passes_strict() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"watchNamespaces": ["ml-a", "ml-b"], "rbac": {"istio": True}},
        {
            "metrics": {"serviceMonitor": {"enabled": True}},
            "tritonPodMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": False},
            "image": {"tag": "0.2.0"},
            "replicaCount": 3,
            "env": {"LLMCANARY_RESYNC_SECONDS": "30"},
        },
    ],
    ids=["defaults", "namespaced-istio", "monitoring"],
)
def test_helm_lint_and_template_pass_with(values: dict[str, Any] | None, tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART), *values_args(values, tmp_path))
    docs = render(tmp_path, values)
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llmcanary"


def test_the_defaults_render_two_replicas_a_service_account_rbac_pdb_and_peering(
    tmp_path: Path,
) -> None:
    docs = render(tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",  # the Grafana dashboard
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    sa = one(docs, "ServiceAccount")["metadata"]
    assert pod["serviceAccountName"] == sa["name"] and sa["namespace"] == "llmcanary"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": "llmcanary"}
    ]
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    container = operator_container(docs)
    assert container["image"] == f"ghcr.io/llmcanary/llmcanary:{__version__}"
    args = container["args"]
    assert args[0] == "run" and "--all-namespaces" in args
    assert f"--peering={one(docs, 'ClusterKopfPeering')['metadata']['name']}" in args
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 8090}
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_operator_runs_non_root_read_only_without_capabilities(tmp_path: Path) -> None:
    docs = render(tmp_path)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = operator_container(docs)["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 65532
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_container_arguments_are_options_of_llmcanary_run(tmp_path: Path) -> None:
    known = {opt for param in run.params for opt in getattr(param, "opts", [])}
    for values in (None, {"watchNamespaces": ["ml-a"]}):
        args = operator_container(render(tmp_path, values))["args"]
        assert args[0] == "run"
        used = {arg.split("=", 1)[0] for arg in args[1:]}
        # --metrics-port comes with the operator's /metrics (a separate change): until it
        # is there, it is the only option the CLI may not know yet.
        allowed_unknown = set() if "--metrics-port" in known else {"--metrics-port"}
        assert used - known <= allowed_unknown, used - known
        if not allowed_unknown:
            ctx = run.make_context("run", list(args[1:]))
            assert ctx.params["peering_name"] == "llmcanary"
        assert isinstance(run, click.Command)


def test_the_schema_refuses_bad_values_with_the_key(tmp_path: Path) -> None:
    cases = [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicas": 2}, "replicas"),  # unknown key: additionalProperties false
        ({"logFormat": "xml"}, "/logFormat"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"env": {"PATH": "/tmp"}}, "/env"),
    ]
    for values, where in cases:
        done = helm("template", "x", str(CHART), *values_args(values, tmp_path), check=False)
        assert done.returncode != 0, values
        assert "values don't meet the specifications of the schema" in done.stderr
        assert where in done.stderr, done.stderr


def test_the_chart_crd_is_the_generated_one() -> None:
    chart_crd = CHART / "crds" / "llmdeployments.yaml"
    assert chart_crd.read_bytes() == (ROOT / "crds" / "llmdeployments.yaml").read_bytes(), (
        "charts/llmcanary/crds/llmdeployments.yaml differs from crds/: run `make crds`"
    )


def test_the_cluster_role_grants_exactly_the_reviewed_rules(tmp_path: Path) -> None:
    rules = rules_of(one(render(tmp_path), "ClusterRole"))
    assert rules == NAMESPACED | CLUSTER
    with_istio = rules_of(one(render(tmp_path, {"rbac": {"istio": True}}), "ClusterRole"))
    assert with_istio == NAMESPACED | CLUSTER | ISTIO
    for verbs in with_istio.values():
        assert "*" not in verbs and not verbs & {"escalate", "bind", "impersonate"}
    with_pools = rules_of(one(render(tmp_path, {"rbac": {"inferencePool": True}}), "ClusterRole"))
    assert with_pools == NAMESPACED | CLUSTER | INFERENCE_POOL
    assert not any(v & {"*", "escalate", "bind", "impersonate"} for v in with_pools.values())
    # Secrets are read one by one, by name, never listed or watched.
    assert rules[("", "secrets")] == {"get"}
    # Every revision's repository is read by a Job, its listing in the pod's log.
    assert rules[("batch", "jobs")] == {"get", "create", "patch", "delete"}
    assert rules[("", "pods/log")] == {"get"}


def test_every_kind_kopf_watches_can_be_listed_and_watched(tmp_path: Path) -> None:
    rules = rules_of(one(render(tmp_path), "ClusterRole"))
    for selector in (("llmcanary.io", "v1alpha1", "llmdeployments"), *CHILD_KINDS):
        group = selector[0] if len(selector) == 3 else ""
        assert {"list", "watch"} <= rules[(group, selector[-1])], selector


def test_namespaced_mode_grants_roles_in_the_watched_namespaces_only(tmp_path: Path) -> None:
    docs = render(tmp_path, {"watchNamespaces": ["ml-a", "ml-b"]})
    for ns in ("ml-a", "ml-b"):
        role = rules_of(one(docs, "Role", ns))
        assert role == NAMESPACED | {("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}}
        assert one(docs, "RoleBinding", ns)["roleRef"]["kind"] == "Role"
        assert one(docs, "KopfPeering", ns)["metadata"]["name"] == "llmcanary"
    cluster = rules_of(one(docs, "ClusterRole"))
    assert cluster == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "nodes"): {"list"},
        ("", "pods"): {"list"},  # GPU capacity counts pods of every namespace
        ("", "namespaces"): {"list", "watch"},
    }
    args = operator_container(docs)["args"]
    assert "--namespace=ml-a" in args and "--namespace=ml-b" in args
    assert "--all-namespaces" not in args
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]


def test_the_pod_monitor_gives_triton_series_the_labels_the_analysis_selects(
    tmp_path: Path,
) -> None:
    docs = render(tmp_path, {"tritonPodMonitor": {"enabled": True}})
    spec = one(docs, "PodMonitor")["spec"]
    # It selects the pods the operator builds.
    labels = {**pod_labels("tiny", "abc123"), LABEL_TRACK: "stable"}
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["namespaceSelector"] == {"any": True}
    endpoint = spec["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    targets = {
        r["targetLabel"]: r["sourceLabels"][0]
        for r in endpoint["relabelings"]
        if r.get("targetLabel")
    }

    def meta(label: str) -> str:
        return "__meta_kubernetes_pod_label_" + label.replace(".", "_").replace("/", "_")

    assert targets == {
        "namespace": "__meta_kubernetes_namespace",
        "pod": "__meta_kubernetes_pod_name",
        "llmdeployment": meta(LABEL_DEPLOYMENT),
        "revision": meta(LABEL_REVISION),
        "track": meta(LABEL_TRACK),
    }
    # Every label the presets select on, except Triton's own "model", is set; the
    # histogram presets group by pod.
    for label in ("namespace", "llmdeployment", "track"):
        assert f'{label}="' in SUMMARY_LATENCY and f'{label}="' in TRITON_REQUESTS
        assert label in targets


def test_the_picker_pod_monitor_gives_its_series_the_arm_of_its_pool(tmp_path: Path) -> None:
    docs = render(tmp_path, {"endpointPickerPodMonitor": {"enabled": True}})
    monitor = one(docs, "PodMonitor")
    assert monitor["metadata"]["name"].endswith("-endpoint-picker")
    spec = monitor["spec"]
    # It selects the picker pods the operator builds, and no Triton pod.
    picker = build_picker(
        Owner("tiny", "ml", "uid"),
        "canary",
        InferencePoolTraffic.model_validate({"parentRefs": [{"name": "gw"}]}),
    )
    labels = picker["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert not spec["selector"]["matchLabels"].items() <= pod_labels("tiny", "abc").items()
    endpoint = spec["podMetricsEndpoints"][0]
    ports = {
        p["name"]: p["containerPort"]
        for p in picker["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports[endpoint["port"]] == PICKER_METRICS_PORT
    targets = {r["targetLabel"]: r["sourceLabels"][0] for r in endpoint["relabelings"]}
    assert targets == {
        "namespace": "__meta_kubernetes_namespace",
        "pod": "__meta_kubernetes_pod_name",
        "llmdeployment": "__meta_kubernetes_pod_label_llmcanary_io_endpoint_picker",
        "track": "__meta_kubernetes_pod_label_llmcanary_io_track",
    }
    assert labels[LABEL_PICKER] == "tiny" and labels[LABEL_TRACK] == "canary"
    # What the preset selects on is what the relabelling sets.
    preset = PRESETS["endpointPicker"]
    for label in ("namespace", "llmdeployment", "track"):
        assert f'{label}="' in preset.requests and label in targets


def test_the_dashboard_charts_the_operator_metrics_and_triton_per_track(tmp_path: Path) -> None:
    config_map = one(render(tmp_path), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["llmcanary.json"])
    exprs = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    for metric in OPERATOR_METRICS:
        assert metric in exprs, metric
    assert "by (namespace, llmdeployment, track)" in exprs
    assert "nv_inference_request_summary_us" in exprs
    for family in PRESETS["tritonVLLM"].latency.values():
        assert isinstance(family, HistogramQuery) and f"{family.metric}_bucket" in exprs
