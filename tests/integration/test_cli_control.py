"""``llmcanary status|promote|abort|retry|pause|resume`` as real processes against the real
API server (no operator: these commands only read the object and write its annotations)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl

from llmcanary.api.status import ArmEstimate, CriterionRecord

pytestmark = pytest.mark.k8s

EXAMPLE = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
NAME: str = EXAMPLE["metadata"]["name"]
BIN = Path(sys.executable).parent
PROMOTE, ABORT, RETRY = "llmcanary.io/promote", "llmcanary.io/abort", "llmcanary.io/retry"
PAUSED, RESUME = "llmcanary.io/paused", "llmcanary.io/resume"


def cli(
    *args: str, script: str = "llmcanary", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script; KUBECONFIG points nowhere unless ``env`` says otherwise,
    so the tests prove that --kubeconfig is honoured."""
    return subprocess.run(
        [str(BIN / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"},
    )


def annotations_of(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    found = kubectl.get("llmd", NAME, namespace)
    assert found is not None
    return dict(found["metadata"].get("annotations") or {})


def is_request_time(value: str) -> bool:
    """RFC 3339, UTC, with microseconds."""
    return re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value) is not None


@pytest.fixture
def llmd(kubectl: Kubectl, crd: None, namespace: str) -> str:
    kubectl.apply(EXAMPLE, namespace)
    return NAME


def target(kubectl: Kubectl, namespace: str) -> list[str]:
    return [NAME, "-n", namespace, "--kubeconfig", str(kubectl.kubeconfig)]


def test_promote_writes_a_new_timestamp_each_time(
    kubectl: Kubectl, namespace: str, llmd: str
) -> None:
    first = cli("promote", *target(kubectl, namespace))
    assert first.returncode == 0, first.stderr
    assert f"LLMDeployment {namespace}/{NAME}" in first.stdout
    assert f"llmcanary status {NAME} -n {namespace} -w" in first.stdout
    assert f"kubectl get llmd {NAME} -n {namespace} -w" in first.stdout
    value = annotations_of(kubectl, namespace)[PROMOTE]
    assert is_request_time(value)
    assert value in first.stdout

    second = cli("promote", *target(kubectl, namespace), script="kubectl-llmcanary")
    assert second.returncode == 0, second.stderr
    assert annotations_of(kubectl, namespace)[PROMOTE] != value
    assert f"kubectl llmcanary status {NAME}" in second.stdout


def test_abort_and_retry_set_their_annotations(kubectl: Kubectl, namespace: str, llmd: str) -> None:
    for command, annotation in (("abort", ABORT), ("retry", RETRY)):
        done = cli(command, *target(kubectl, namespace))
        assert done.returncode == 0, done.stderr
        assert is_request_time(annotations_of(kubectl, namespace)[annotation])
    # No rollout is going on: the commands say their request may do nothing.
    assert "note:" in done.stderr


def test_pause_then_resume(kubectl: Kubectl, namespace: str, llmd: str) -> None:
    done = cli("pause", *target(kubectl, namespace), script="kubectl-llmcanary")
    assert done.returncode == 0, done.stderr
    assert annotations_of(kubectl, namespace)[PAUSED] == "true"
    shown = cli("status", *target(kubectl, namespace))
    assert f"{PAUSED}=true" in shown.stdout

    done = cli("resume", *target(kubectl, namespace))
    assert done.returncode == 0, done.stderr
    after = annotations_of(kubectl, namespace)
    assert PAUSED not in after
    assert is_request_time(after[RESUME])
    assert "spec.paused" not in done.stderr


def test_resume_says_it_cannot_override_spec_paused(
    kubectl: Kubectl, namespace: str, llmd: str
) -> None:
    kubectl.run(
        "patch", "llmd", NAME, "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    done = cli("resume", *target(kubectl, namespace))
    assert done.returncode == 0, done.stderr
    assert "spec.paused is true" in done.stderr
    assert "resume cannot override it" in done.stderr


def test_status_of_a_fresh_object_names_it(kubectl: Kubectl, namespace: str, llmd: str) -> None:
    done = cli("status", *target(kubectl, namespace))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{NAME} ({namespace})")
    assert "No status yet" in done.stdout
    assert "router gatewayAPI" in done.stdout


def criterion(
    name: str, verdict: str, canary: float | None, stable: float | None, samples: tuple[int, int]
) -> dict[str, Any]:
    """One entry of status.lastAnalysis.criteria, as the operator writes it."""
    record = CriterionRecord(
        criterion=name,
        unit="%" if name == "errorRate" else "ms",
        verdict=verdict,  # type: ignore[arg-type]
        reason=f"{name}: {verdict}",
        canary=ArmEstimate(value=canary, samples=samples[0]),
        reference=ArmEstimate(value=stable, samples=samples[1]),
    )
    return record.model_dump(mode="json", by_alias=True)


HAND_WRITTEN_STATUS: dict[str, Any] = {
    "phase": "RolledBack",
    "stableRevision": "5d8c9f",
    "canaryWeight": 0,
    "failedChecks": 1,
    "inconclusiveChecks": 0,
    "rolledBackRevision": "77ab01",
    "lastAnalysis": {
        "time": "2025-03-01T10:41:00Z",
        "verdict": "fail",
        "reason": "canary ttft p95 2400 ms > stable 1500 ms +20%",
        "criteria": [
            criterion("ttft p95", "fail", 2400.0, 1500.0, (240, 812)),
            criterion("errorRate", "pass", 0.0, 0.1, (240, 812)),
        ],
    },
    "headline": "ttft p95 2400 / 1500 ms",
    "conditions": [
        {
            "type": "Degraded",
            "status": "True",
            "reason": "RolledBack",
            "message": "revision 77ab01 rolled back",
            "lastTransitionTime": "2025-03-01T10:42:00Z",
        }
    ],
    "history": [
        {
            "revision": "5d8c9f",
            "outcome": "Promoted",
            "startedAt": "2025-02-01T08:00:00Z",
            "finishedAt": "2025-02-01T12:00:00Z",
            "reason": "all steps passed",
        },
        {
            "revision": "77ab01",
            "outcome": "RolledBack",
            "startedAt": "2025-03-01T10:00:00Z",
            "finishedAt": "2025-03-01T10:42:00Z",
            "reason": "latency",
        },
    ],
}


def test_status_shows_analysis_and_history(kubectl: Kubectl, namespace: str, llmd: str) -> None:
    kubectl.run(
        "patch",
        "llmd",
        NAME,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": HAND_WRITTEN_STATUS}),
    )
    done = cli("status", *target(kubectl, namespace), script="kubectl-llmcanary")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == [NAME, f"({namespace})", "RolledBack"]
    assert "Last analysis: fail at 2025-03-01T10:41:00Z" in lines
    rows = [line.split() for line in lines]
    assert ["ttft", "p95", "fail", "2400.0", "ms", "1500.0", "ms", "-", "240", "/", "812"] in rows
    assert ["errorRate", "pass", "0.00", "%", "0.10", "%", "-", "240", "/", "812"] in rows
    assert any(line.split()[:3] == ["Degraded", "True", "RolledBack"] for line in lines)
    history = lines.index("History (newest first):")
    assert lines[history + 2].split()[:2] == ["77ab01", "RolledBack"]
    assert lines[history + 3].split()[:2] == ["5d8c9f", "Promoted"]


def test_namespace_defaults_to_the_kubeconfig_context(
    kubectl: Kubectl, namespace: str, llmd: str, tmp_path: Path
) -> None:
    config = tmp_path / "kubeconfig"
    shutil.copy(kubectl.kubeconfig, config)
    subprocess.run(
        [kubectl.binary, "config", "set-context", "--current", f"--namespace={namespace}"],
        env={**os.environ, "KUBECONFIG": str(config)},
        check=True,
        capture_output=True,
    )
    done = cli("status", NAME, env={**os.environ, "KUBECONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{NAME} ({namespace})")


def test_a_missing_object_is_one_clear_line(kubectl: Kubectl, namespace: str, crd: None) -> None:
    for command in ("status", "promote", "resume"):
        done = cli(command, "nope", "-n", namespace, "--kubeconfig", str(kubectl.kubeconfig))
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"Error: LLMDeployment {namespace}/nope not found"
            f" (kubectl get llmd -n {namespace} lists them)"
        ]
        assert "Traceback" not in done.stderr


def test_no_cluster_is_one_clear_line(kubectl: Kubectl, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    text = kubectl.kubeconfig.read_text()
    server = next(
        line.split("server:", 1)[1].strip() for line in text.splitlines() if "server:" in line
    )
    config.write_text(text.replace(server, "https://127.0.0.1:1"))
    done = cli("status", NAME, "-n", "default", "--kubeconfig", str(config))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot reach the Kubernetes API server" in done.stderr

    done = cli("promote", NAME, "--kubeconfig", str(tmp_path / "absent"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: kubeconfig {tmp_path / 'absent'} does not exist"


def test_help_reads_well_under_both_names() -> None:
    plain = cli("status", "--help")
    plugin = cli("status", "--help", script="kubectl-llmcanary")
    assert plain.stdout.startswith("Usage: llmcanary status [OPTIONS] NAME")
    assert plugin.stdout.startswith("Usage: kubectl llmcanary status [OPTIONS] NAME")
    for text in (plain.stdout, plugin.stdout):
        assert "-n, --namespace" in text and "--kubeconfig" in text and "-w, --watch" in text
