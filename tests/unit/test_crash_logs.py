"""Why a revision is not Ready, from a crashed Triton's whole log: the kubelet keeps 2 KiB
of its end (Triton's model tables fill it), so the model's own error is read from the log
itself, once per crash, and the termination message stands in when the log cannot be read."""

from __future__ import annotations

from typing import Any

from fake_kube import FakeKube
from kubernetes.client.exceptions import ApiException
from specs import make_spec

from llmcanary.builders import Owner
from llmcanary.builders.workload import build_deployment
from llmcanary.reconciler.observe import CrashLogs, observe_workload

OWNER = Owner(name="adder", namespace="ml", uid="0000-uid")
REVISION = "r1"
POD = "adder-r1-abc"
# What a kubelet keeps of an add_sub-shaped model's crash: the end of the log, where
# Triton's tables and its last words are; the model's error is further up.
TERMINATION = "\n".join(
    [
        "| Model   | Version | Status |",
        "| adder   | 1       | UNAVAILABLE: Internal: see the log |",
        'E1130 17:01:02.000000 71 main.cc:81] "failed to load all models"',
        "error: creating server: Internal - failed to load all models",
    ]
)
# As Triton logs a Python backend's exception: the backend's error, then the model's
# failure with the same exception, each with the traceback (newlines escaped).
TRACEBACK = "\\n\\nAt:\\n  /models/adder/1/model.py(18): initialize\\n"
EXCEPTION = "TypeError: 'NoneType' object is not subscriptable"
WHOLE_LOG = "\n".join(
    [
        'I1130 17:01:00.000000 71 server.cc:1] "Started"',
        'E1130 17:01:01.000000 71 backend_model.cc:692] "ERROR: Failed to create instance:'
        f' {EXCEPTION}{TRACEBACK}"',
        "E1130 17:01:01.000000 71 model_lifecycle.cc:654] \"failed to load 'adder' version 1:"
        f' Internal: {EXCEPTION}{TRACEBACK}"',
        TERMINATION,
    ]
)


def crashed(
    kube: FakeKube, finished_at: str = "2026-11-30T17:01:03Z", *, restarted: bool = True
) -> None:
    deployment = build_deployment(OWNER, make_spec(), REVISION, "stable", 1)
    deployment["status"] = {"readyReplicas": 0, "updatedReplicas": 1}
    kube.add(deployment)
    last: dict[str, Any] = {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "message": TERMINATION,
            "finishedAt": finished_at,
        }
    }
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": POD,
                "namespace": OWNER.namespace,
                "uid": "pod-uid",
                "labels": deployment["spec"]["template"]["metadata"]["labels"],
            },
            "status": {
                "containerStatuses": [
                    # Restarted: in back-off, the crash is the last state. Not yet: the
                    # crash is the current state (the first crash, before any restart).
                    {
                        "name": "triton",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": last,
                        "restartCount": 1,
                    }
                    if restarted
                    else {"name": "triton", "state": last, "lastState": {}, "restartCount": 0}
                ]
            },
        }
    )


def test_the_models_own_error_is_read_from_the_crashed_runs_log_once() -> None:
    kube = FakeKube()
    kube.logs[(OWNER.namespace, POD, "triton", True)] = WHOLE_LOG
    crashed(kube)
    logs = CrashLogs(kube)
    observed = observe_workload(kube, OWNER, REVISION, logs)
    assert observed is not None and observed.problem is not None
    # Each error once, without the traceback (the log the message names has it).
    assert observed.problem == (
        f"pod {POD}: triton CrashLoopBackOff (exit 1): failed to load 'adder' version 1:"
        f" Internal: {EXCEPTION}; error: creating server: Internal - failed to load all models;"
        f" full log: kubectl logs -n ml {POD} -c triton --previous"
    )
    # Every pass observes the loop; the run's log is read once.
    assert observe_workload(kube, OWNER, REVISION, logs) == observed
    assert kube.log_reads == 1


def test_without_the_log_the_termination_message_says_what_it_can() -> None:
    kube = FakeKube(faults={("get", "Pod/log"): ApiException(status=403, reason="Forbidden")})
    crashed(kube)
    observed = observe_workload(kube, OWNER, REVISION, CrashLogs(kube))
    assert observed is not None
    assert observed.problem == (
        f"pod {POD}: triton CrashLoopBackOff (exit 1):"
        " error: creating server: Internal - failed to load all models;"
        f" full log: kubectl logs -n ml {POD} -c triton --previous"
    )


def test_a_new_crash_is_read_again() -> None:
    kube = FakeKube()
    kube.logs[(OWNER.namespace, POD, "triton", True)] = WHOLE_LOG
    crashed(kube)
    logs = CrashLogs(kube, capacity=1)
    observe_workload(kube, OWNER, REVISION, logs)
    kube.objects.clear()
    crashed(kube, finished_at="2026-11-30T17:02:03Z")
    observe_workload(kube, OWNER, REVISION, logs)
    assert kube.log_reads == 2 and len(logs._errors) == 1


def test_the_first_crash_is_read_from_the_current_run() -> None:
    kube = FakeKube()
    kube.logs[(OWNER.namespace, POD, "triton", False)] = WHOLE_LOG
    crashed(kube, restarted=False)
    observed = observe_workload(kube, OWNER, REVISION, CrashLogs(kube))
    assert observed is not None and observed.problem is not None
    assert observed.problem.startswith(f"pod {POD}: triton exited (exit 1): failed to load 'adder'")
    assert observed.problem.endswith(f"kubectl logs -n ml {POD} -c triton")


def test_a_read_that_failed_for_a_passing_reason_is_tried_again_later() -> None:
    kube = FakeKube(faults={("get", "Pod/log"): [ApiException(status=503, reason="Unavailable")]})
    kube.logs[(OWNER.namespace, POD, "triton", True)] = WHOLE_LOG
    crashed(kube)
    clock = [1000.0]
    logs = CrashLogs(kube, monotonic=lambda: clock[0])
    first = observe_workload(kube, OWNER, REVISION, logs)
    assert first is not None and "failed to load 'adder'" not in (first.problem or "")
    assert observe_workload(kube, OWNER, REVISION, logs) == first  # not every pass
    clock[0] += CrashLogs.RETRY_S
    again = observe_workload(kube, OWNER, REVISION, logs)
    assert again is not None and "failed to load 'adder'" in (again.problem or "")
    assert kube.log_reads == 2
