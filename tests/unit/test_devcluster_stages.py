import yaml

from llmcanary_dev.devcluster.stages import DATA_PLANE_STAGE, kwok_config

POD_READY = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: .status.phase, operator: In, values: [Pending]}
  next:
    statusTemplate: "phase: Running"
"""
NODE = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: node-initialize}
spec: {resourceRef: {apiGroup: v1, kind: Node}, next: {statusTemplate: "x"}}
"""


def stages(text: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(text)}


READ = {"key": '.metadata.labels["llmcanary.io/repository-read"]', "operator": "DoesNotExist"}


def test_kwok_readiness_keeps_kwoks_stages_but_for_the_repository_reads() -> None:
    got = stages(kwok_config([POD_READY, NODE], "kwok"))
    want = {d["metadata"]["name"]: d for d in map(yaml.safe_load, [POD_READY, NODE])}
    # KWOK would complete a read pod at once with no log: the read-pods component runs it.
    want["pod-ready"]["spec"]["selector"]["matchExpressions"].append(READ)
    assert got == want


def test_external_readiness_leaves_llmdeployment_pods_running_but_not_ready() -> None:
    got = stages(kwok_config([POD_READY, NODE], "external"))
    label = '.metadata.labels["llmcanary.io/deployment"]'
    ready = got["pod-ready"]["spec"]["selector"]["matchExpressions"]
    assert {"key": label, "operator": "DoesNotExist"} in ready
    started = got[DATA_PLANE_STAGE]
    assert {"key": label, "operator": "Exists"} in started["spec"]["selector"]["matchExpressions"]
    assert READ in ready and READ in started["spec"]["selector"]["matchExpressions"]
    template = started["spec"]["next"]["statusTemplate"]
    assert "phase: Running" in template
    assert "podIP" not in template  # the data plane assigns those pods' IPs
    ready_condition = template.split("type: ContainersReady")[1].split("type: Ready")[0]
    assert 'status: "False"' in ready_condition
    assert "ready: false" in template
    assert got["node-initialize"]["spec"]["next"]["statusTemplate"] == "x"
