"""The operator on real inference: tiny-llm on real Triton, traffic through a real Gateway
API implementation (Traefik) serving the operator's HTTPRoute, judged on what a real
Prometheus scraped from those Tritons.

Bounded: every wait has a timeout; the stack and the namespaces are cleaned up by the
fixtures (conftest.py).
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, canary_route_weight, promote, wait_for
from load_driver import LoadDriver
from routes import WeightWatch, arm_backend, attach, route_conditions, wait_until_served

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.rollout.revision import revision_of
from llmcanary_dev.loadgen.stats import RequestResult, percentile
from llmcanary_dev.localstack import stack as local
from llmcanary_dev.localstack.gateway import count_requests

pytestmark = pytest.mark.k8s

NAME = "tiny-llm"
REPLICAS = 2
SLOW = {"layers": "8", "hidden_size": "512", "heads": "8"}


def manifest(
    stack: local.StackSettings, namespace: str, replicas: int = REPLICAS, **canary: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "local" / "tiny-llm.yaml").read_text()
    )
    attach(doc, namespace)
    doc["spec"]["replicas"] = replicas
    doc["spec"]["canary"]["analysis"]["prometheus"]["address"] = stack.prometheus_url
    doc["spec"]["canary"].update(canary)
    return doc


def changed(doc: dict[str, Any], version: str, **triton: Any) -> dict[str, Any]:
    new = copy.deepcopy(doc)
    new["spec"]["model"]["version"] = version
    for key, value in triton.items():
        new["spec"]["triton"][key] = value
    return new


def revision(doc: dict[str, Any]) -> str:
    return revision_of(LLMDeploymentSpec.model_validate(doc["spec"]))


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    obj = kubectl.get("llmd", NAME, namespace) or {}
    found: dict[str, Any] = obj.get("status") or {}
    return found


def route_weight(kubectl: Kubectl, namespace: str) -> int | None:
    return canary_route_weight(kubectl, namespace, NAME)


def triton_starts(stack: local.StackSettings, namespace: str, rev: str) -> int:
    """How many times the data plane started a tritonserver (loaded the model) for ``rev``."""
    lines = stack.starts_file.read_text().splitlines() if stack.starts_file.exists() else []
    records = [json.loads(line) for line in lines]
    return sum(1 for r in records if r["namespace"] == namespace and r["revision"] == rev)


def deploy_stable(
    kubectl: Kubectl, stack: local.StackSettings, namespace: str, doc: dict[str, Any]
) -> None:
    kubectl.apply(doc, namespace)
    wait_for(
        "revision 1 Stable with Triton serving",
        lambda: status(kubectl, namespace).get("phase") == "Stable",
        timeout=180,
    )
    traffic = doc["spec"]["traffic"]["gatewayAPI"]
    wait_until_served(stack.gateway_url, traffic["hostnames"][0])


def wait_for_or_none(probe: Any, timeout: float, every: float = 0.5) -> Any:
    """``probe``'s first truthy answer within ``timeout``, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(every)
    return None


def test_a_healthy_revision_is_promoted_and_its_model_loads_once_per_replica(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
    load: LoadDriver,
) -> None:
    # The example as it is: one pod per revision, judged against a fresh baseline at
    # 25% then 50%, under the product's rule (+20%, 200 requests per arm at least).
    doc = manifest(stack, namespace, replicas=1)
    deploy_stable(kubectl, stack, namespace, doc)
    load.start()
    time.sleep(5)  # both arms' series exist in Prometheus before the first check
    healthy = changed(doc, "2")
    new = revision(healthy)
    kubectl.apply(healthy, namespace)
    started = time.monotonic()

    def decided() -> dict[str, Any] | None:
        st = status(kubectl, namespace)
        if st.get("phase") == "RolledBack":
            return st
        return st if st.get("stableRevision") == new and st.get("phase") == "Stable" else None

    try:
        # Identical arms on two shared cores took 364-522 s to be promoted on this stack
        # (docs/benchmarks.md, "The judge on the local stack"), and one run in CI was still
        # collecting after 18 min: TTFT's P95 there sits between two modes, requests are
        # slow in bursts, and the judge waits for the evidence instead of guessing. What
        # must never happen is a rollback (it ends the wait at once). A judge still
        # collecting at the bound is promoted on request, as an operator would, which
        # proves the rest: promotion loads no model again.
        final = wait_for_or_none(decided, timeout=900)
        if final is None:
            st = status(kubectl, namespace)
            assert st.get("phase") == "Progressing", st.get("message")
            assert (st.get("lastAnalysis") or {}).get("waiting"), st.get("lastAnalysis")
            print(f"still collecting after 900 s ({st['lastAnalysis']['reason']}): promoting")
            promote(kubectl, namespace, NAME)
            final = wait_for("revision 2 promoted on request", decided, timeout=120)
        if final["phase"] == "RolledBack":
            raise AssertionError(f"an identical revision was rolled back: {final['message']}")
    except AssertionError:
        st = status(kubectl, namespace)
        print(json.dumps({k: st.get(k) for k in ("phase", "message", "history")}, indent=1))
        print(json.dumps(st.get("lastAnalysis"), indent=1))
        raise
    results = load.stop()
    print(f"promoted after {time.monotonic() - started:.0f} s")
    assert final["history"][0]["outcome"] == "Promoted"
    # Zero extra model loads: during the whole rollout the data plane started exactly one
    # Triton per replica for the new revision, and that pod serves as stable now.
    assert triton_starts(stack, namespace, new) == 1
    pods = kubectl.list("pod", namespace, f"llmcanary.io/revision={new}")
    assert len(pods) == 1
    assert {p["metadata"]["labels"]["llmcanary.io/track"] for p in pods} == {"stable"}
    assert all(
        c["status"] == "True"
        for p in pods
        for c in p["status"]["conditions"]
        if c["type"] == "Ready"
    )
    # Real traffic reached the canary, as the gateway logged it.
    assert count_requests(stack.access_log)[arm_backend(namespace, NAME, "canary")] > 0
    # The gateway accepted the route and resolved its backends, for its last generation
    # (the promotion's; Traefik writes it asynchronously, on two busy cores not at once).
    wait_for(
        "the gateway's Accepted and ResolvedRefs for the promoted route",
        lambda: (
            route_conditions(kubectl, namespace, NAME)
            == {"Accepted": "True", "ResolvedRefs": "True"}
        ),
        timeout=30,
    )
    errors = [r for r in results if not r.ok]
    print(f"load: {len(results)} requests, {len(errors)} errors: {errors[:3]}")
    assert len(results) > 100
    assert len(errors) <= len(results) * 0.01


def test_a_slower_revision_gets_its_share_then_is_rolled_back(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
    load: LoadDriver,
) -> None:
    # The example as it is: the canary and its baseline get 25% each at the first step.
    doc = manifest(stack, namespace, replicas=1)
    deploy_stable(kubectl, stack, namespace, doc)
    # Closed-loop streams queue behind a slow canary: with 4 of them it finished under one
    # request a second and took four minutes to its 200th. Eight streams keep requests
    # arriving at it (a production service's arrivals do not wait for its latency).
    load.start(concurrency=8)
    time.sleep(5)
    slow = changed(doc, "3", parameters=SLOW)
    new = revision(slow)
    kubectl.apply(slow, namespace)

    # Watch the route itself: when the canary got 25%, and when it lost it.
    with WeightWatch(kubectl, namespace, NAME) as watch:
        st = wait_for(
            "phase RolledBack",
            lambda: (s := status(kubectl, namespace)).get("phase") == "RolledBack" and s,
            timeout=480,
        )
        wait_for("the route back at 0", lambda: "at_0" in watch.seen, timeout=10)
    seen = watch.seen
    load.stop()
    assert st["rolledBackRevision"] == new
    reason = st["history"][0]["reason"]
    pattern = r"canary (e2eLatency|ttft|tpot) p95 \d+ ms vs baseline \d+ ms: \+\d+%"
    assert re.search(pattern, reason), reason
    print(f"rollback: {reason}")

    # While the route said 25%, the gateway sent the canary and the baseline 25% of the
    # requests each, by its own access log: within three standard deviations of a
    # binomial share over those n requests, plus half a point for requests in flight
    # across the changes (Traefik applies a route within its 2 s throttle: 3 s trimmed at
    # each end). With n >= 250 that is at most +-8.7 points.
    counts = count_requests(stack.access_log, since=seen["at_25"] + 3.0, until=seen["at_0"] - 3.0)
    arms = {
        arm: counts[arm_backend(namespace, NAME, arm)] for arm in ("canary", "baseline", "stable")
    }
    total = sum(arms.values())
    tolerance = 3 * math.sqrt(0.25 * 0.75 / total) + 0.005
    print(f"at 25%: {arms} of {total} requests (25% +-{tolerance:.2%} each for canary, baseline)")
    assert total >= 250
    assert abs(arms["canary"] / total - 0.25) <= tolerance
    assert abs(arms["baseline"] / total - 0.25) <= tolerance

    # One canary replica was enough for 5%, loaded once; it is scaled away again.
    assert triton_starts(stack, namespace, new) == 1
    deployment = kubectl.get("deployment", f"{NAME}-{new}", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    wait_for(
        "the canary pod gone",
        lambda: not kubectl.list("pod", namespace, f"llmcanary.io/revision={new}"),
        timeout=60,
    )


def promql(stack: local.StackSettings, query: str) -> list[dict[str, Any]]:
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as answer:
        result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
    return result


def client_p95(results: list[RequestResult], since: float, until: float) -> dict[str, float]:
    """What the load generator measured (ms) for requests that ended in [since, until]."""
    window = [r for r in results if r.ok and since <= r.finished <= until]
    values = {
        "e2eLatency": [r.latency for r in window],
        "ttft": [t for r in window if (t := r.ttft) is not None],
        "tpot": [t for r in window if (t := r.tpot) is not None],
    }
    return {k: percentile(v, 95) * 1000 for k, v in values.items()}


def test_the_status_shows_ttft_and_tpot_per_arm_from_tiny_llms_own_histograms(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
    load: LoadDriver,
) -> None:
    """tiny-llm publishes the vLLM backend's histograms; the operator reads them per arm.
    At 5% the stable arm serves ~95% of the load, so its numbers are compared with what
    the load generator measured through the gateway over the same windows."""
    doc = manifest(stack, namespace, initialWeight=5, stepWeight=10, initialStepInterval="90s")
    # Measure, do not judge: keep the canary at 5% whatever its checks say, compared
    # with the stable arm (no baseline) so that the reference serves most of the load.
    doc["spec"]["canary"]["analysis"].update(
        failureLimit=100, inconclusiveLimit=100, baseline="stable"
    )
    deploy_stable(kubectl, stack, namespace, doc)
    # Monotonic (the load's clock) from wall-clock seconds (the status' times).
    offset = time.monotonic() - time.time()
    load.start()
    time.sleep(5)
    kubectl.apply(changed(doc, "2"), namespace)
    checks: dict[str, dict[str, Any]] = {}

    def five_checks() -> bool:
        record = status(kubectl, namespace).get("lastAnalysis")
        if record and record.get("criteria"):
            checks[record["time"]] = record
        return len(checks) >= 5

    wait_for("five checks at 5%", five_checks, timeout=150, every=0.5)
    results = load.stop()
    assert route_weight(kubectl, namespace) == 5

    # The families are in Prometheus with the arm labels the presets select on.
    tracks = promql(
        stack,
        "count by (track, __name__) ({__name__=~'vllm:(time_to_first_token_seconds|"
        "time_per_output_token_seconds|e2e_request_latency_seconds)_count',"
        f"namespace='{namespace}',llmdeployment='{NAME}'}})",
    )
    found = {(s["metric"]["__name__"], s["metric"]["track"]) for s in tracks}
    assert {track for _, track in found} == {"stable", "canary"}, found
    assert len({name for name, _ in found}) == 3, found

    def moment(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() + offset

    rows = []
    for stamp, record in sorted(checks.items()):
        assert record["reference"] == "stable"
        arms = [
            f"{c['criterion']} {c['canary']['value']}/{c['reference']['value']}"
            f" (n {c['canary']['samples']}/{c['reference']['samples']})"
            for c in record["criteria"]
        ]
        print(f"check {stamp}: {record['verdict']}; canary/stable {'; '.join(arms)}")
        # The evidence covers the step since its start plus warm-up: the same requests.
        client = client_p95(results, moment(record["since"]), moment(stamp))
        by_name = {c["criterion"]: c for c in record["criteria"]}
        for criterion in ("e2eLatency p95", "ttft p95", "tpot p95"):
            stable = by_name[criterion]["reference"]
            assert stable["value"] is not None and stable["samples"] > 0, by_name
            rows.append((criterion, stable["value"], client[criterion.split()[0]]))
    for criterion in ("e2eLatency p95", "ttft p95", "tpot p95"):
        mine = [(server, client) for name, server, client in rows if name == criterion]
        ratios = sorted(server / client for server, client in mine)
        median = ratios[len(ratios) // 2]
        print(
            f"{criterion}: operator (stable arm) / load generator, {len(ratios)} windows:"
            f" median {median:.2f}, each {[round(r, 2) for r in ratios]};"
            f" ms {[(round(s), round(c)) for s, c in mine]}"
        )
        if criterion == "tpot p95":
            # Decoding is what the model times and the client sees alike.
            assert 0.65 <= median <= 1.35, (criterion, mine)
        else:
            # tiny-llm's clock starts in execute(): a request's wait in Triton's queue
            # (and the gateway) is not in it, so the server reads at most the client.
            assert median <= 1.1, (criterion, mine)


def test_a_config_triton_rejects_never_gets_traffic_and_the_status_says_why(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
    load: LoadDriver,
) -> None:
    doc = manifest(stack, namespace, initialWeight=5, stepWeight=10)
    # Preflight's environment diff would stop an instance group change before any pod:
    # this team allows it, so the config reaches Triton.
    doc["spec"]["preflight"]["envDiff"]["allowedDifferences"].append("triton.instanceGroup.*")
    deploy_stable(kubectl, stack, namespace, doc)
    load.start()
    # KIND_GPU on a machine without a GPU: the rendered config.pbtxt asks Triton for
    # something it cannot give, and Triton refuses to load the model.
    bad = changed(doc, "4", instanceGroup={"kind": "KIND_GPU", "count": 1})
    new = revision(bad)
    since = time.time()
    kubectl.apply(bad, namespace)
    st = wait_for(
        "the status to say why the canary is not ready",
        lambda: (
            "no GPUs are available" in (s := status(kubectl, namespace)).get("message", "") and s
        ),
        timeout=180,
    )
    message = st["message"]
    print(f"status: {message}")
    assert st["canaryRevision"] == new and st["phase"] == "Progressing"
    assert "waiting for 1 ready canary and baseline replicas before 5%" in message
    # The model's own error, above Triton's tables in its log (out of the 2 KiB the kubelet
    # keeps), read from the crashed run's log; then Triton's last words.
    assert (
        "(exit 1): failed to load 'tiny-llm' version 1: Invalid argument: instance group"
        " tiny-llm_0 of model tiny-llm has kind KIND_GPU but no GPUs are available;"
        " error: creating server: Internal - failed to load all models"
    ) in message
    assert f"full log: kubectl logs -n {namespace} tiny-llm-" in message
    assert "-c triton" in message  # and --previous once the container runs again
    time.sleep(5)
    load.stop()
    assert route_weight(kubectl, namespace) == 0
    assert status(kubectl, namespace).get("canaryWeight", 0) == 0
    counts = count_requests(stack.access_log, since=since)
    assert counts[arm_backend(namespace, NAME, "canary")] == 0
    assert counts[arm_backend(namespace, NAME, "stable")] > 0
    pod = kubectl.list("pod", namespace, f"llmcanary.io/revision={new}")[0]
    triton = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "triton")
    # Between back-offs the kubelet restarts the container, so its current state may be
    # waiting, running (still loading) or terminated: what holds throughout is that it is
    # not ready, has restarted, and its last run ended in failure.
    assert triton["ready"] is False and triton["restartCount"] >= 1
    ended = triton["state"].get("terminated") or triton["lastState"]["terminated"]
    assert ended["exitCode"] != 0


def test_a_first_revision_whose_model_fails_to_load_says_why_then_is_replaced(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
) -> None:
    doc = manifest(stack, namespace, replicas=1)
    # tiny-llm's initialize() refuses this size: Triton cannot load the model, exits, and
    # the kubelet restarts it. Before, only the pod said so.
    doc["spec"]["triton"]["parameters"] = {"hidden_size": "100", "heads": "3"}
    first = revision(doc)
    kubectl.apply(doc, namespace)
    # The model's own error is above Triton's tables, out of the 2 KiB the kubelet keeps:
    # the operator reads it from the crashed run's log (pods/log, served by KWOK here).
    own_error = "hidden_size 100 is not a multiple of heads 3"
    st = wait_for(
        "the status to say why the first revision is not ready",
        lambda: own_error in (s := status(kubectl, namespace)).get("message", "") and s,
        timeout=120,
    )
    print(f"status: {st['message']}")
    assert st["phase"] == "Initializing"
    assert st["message"].startswith(f"waiting for 0/1 ready replicas of revision {first}: pod ")
    assert re.search(r"triton (CrashLoopBackOff|exited) \(exit 1\)", st["message"])
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and own_error in ready["message"]
    # What the message tells users to run works, as on a real cluster.
    command = re.search(r"full log: kubectl (logs .*)$", st["message"])
    assert command is not None
    args = command.group(1).split()
    if "--previous" not in args:
        args.append("--previous")  # by now Triton has been restarted at least once
    wait_for(
        "kubectl logs --previous to show the crashed run",
        lambda: own_error in kubectl.run(*args, check=False).stdout,
        timeout=60,
    )
    events = kubectl.list("event", namespace)
    warnings = [e for e in events if e.get("reason") == "RevisionNotReady"]
    assert warnings and all(e["type"] == "Warning" for e in warnings)
    # The fix is a new spec: nothing was served, so it replaces the first revision at once
    # (no canary, no preflight against a revision that never ran), loads and serves.
    doc["spec"]["triton"]["parameters"] = {"hidden_size": "128", "heads": "4"}
    # With warm-up samples: Triton runs them before the model is ready (a sample it could
    # not run would fail the load, as the parameters above did).
    doc["spec"]["triton"]["modelWarmup"] = [
        {
            "name": "short prompt",
            "count": 2,
            "inputs": {
                "PROMPT": {"dataType": "TYPE_STRING", "dims": [1], "zeroData": True},
                "MAX_TOKENS": {"dataType": "TYPE_INT32", "dims": [1], "inputDataFile": "four"},
            },
        }
    ]
    deploy_stable(kubectl, stack, namespace, doc)
    config = kubectl.get("configmap", f"{NAME}-{revision(doc)}-config", namespace) or {}
    assert 'model_warmup {\n  name: "short prompt"' in config["data"]["config.pbtxt"]
    final = status(kubectl, namespace)
    assert final["stableRevision"] == revision(doc) and final.get("canaryRevision") is None
    assert final.get("message") is None
    assert any(e.get("reason") == "RevisionReplaced" for e in kubectl.list("event", namespace))
    assert triton_starts(stack, namespace, revision(doc)) == 1
