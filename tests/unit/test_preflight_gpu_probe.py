"""The opt-in GPU memory probe: the script shipped, the Job built, the log read."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import GpuFit
from llmcanary.builders import Owner
from llmcanary.preflight.gpu import GIB
from llmcanary.preflight.gpu_probe import (
    LABEL_PROBE,
    PROBE_DEADLINE_SECONDS,
    PROBE_TTL_SECONDS,
    build_probe_config_map,
    build_probe_job,
    parse_probe_log,
    probe_job_name,
    probe_script,
    with_probe,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "llmcanary"
SCRIPT = PACKAGE / "preflight" / "scripts" / "gpu_memory_probe.py"
OWNER = Owner("llama", "serving", "uid-1")
H100 = "NVIDIA-H100-80GB-HBM3"
DEFAULT_IMAGE = "nvcr.io/nvidia/pytorch:24.10-py3"


def spec(**fields: object) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(
        {"model": {"name": "m", "repository": "/models"}, **fields}
    )


def test_the_script_is_package_data_not_a_module() -> None:
    # No __init__.py beside it: grimp (import-linter) and setuptools never see a module,
    # so nothing can import torch through it; package-data puts it in the wheel.
    assert not (SCRIPT.parent / "__init__.py").exists()
    with (ROOT / "pyproject.toml").open("rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["llmcanary"]
    relative = SCRIPT.relative_to(PACKAGE).as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def test_the_script_without_torch_or_cuda_says_so() -> None:
    # Runs with an interpreter that has no torch (the operator's): an error line, no crash.
    done = subprocess.run(
        [sys.executable, "-S", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert done.returncode in (2, 3)
    assert "error" in json.loads(done.stdout.strip().splitlines()[-1])


def test_the_config_map_carries_the_script_and_is_owned() -> None:
    cm = build_probe_config_map(OWNER)
    assert cm["data"] == {"gpu_memory_probe.py": SCRIPT.read_text()}
    assert probe_script() == SCRIPT.read_text()
    [ref] = cm["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("LLMDeployment", "uid-1", True)


def test_the_job_runs_on_the_node_type_with_the_pods_gpus() -> None:
    s = spec(
        resources={"gpus": 2},
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    job = build_probe_job(OWNER, s, "abc123", H100, DEFAULT_IMAGE)
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["namespace"] == "serving"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["spec"]["ttlSecondsAfterFinished"] == PROBE_TTL_SECONDS
    assert job["spec"]["activeDeadlineSeconds"] == PROBE_DEADLINE_SECONDS
    assert job["spec"]["backoffLimit"] == 0
    template = job["spec"]["template"]
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": H100}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    [container] = pod["containers"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["command"] == ["python3", "/opt/llmcanary-probe/gpu_memory_probe.py"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["volumes"] == [{"name": "probe", "configMap": {"name": "llama-gpu-probe"}}]
    assert template["metadata"]["labels"][LABEL_PROBE] == job["metadata"]["name"]
    # Never selected by the model's Services.
    assert "llmcanary.io/deployment" not in template["metadata"]["labels"]


def test_the_probe_pod_meets_pod_security_restricted() -> None:
    pod = build_probe_job(OWNER, spec(), "abc123", H100, DEFAULT_IMAGE)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def test_the_image_comes_from_the_spec_else_the_operator_setting() -> None:
    own = spec(preflight={"gpuMemory": {"probe": {"enabled": True, "image": "me/torch:1"}}})
    job = build_probe_job(OWNER, own, "abc123", H100, DEFAULT_IMAGE)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "me/torch:1"


def test_job_names_are_short_and_change_with_what_the_template_cannot() -> None:
    a = probe_job_name("llama", "abc123", H100, DEFAULT_IMAGE)
    assert a.startswith("llama-gpu-probe-")
    assert a == probe_job_name("llama", "abc123", H100, DEFAULT_IMAGE)
    assert a != probe_job_name("llama", "abc123", "NVIDIA-A100-SXM4-40GB", DEFAULT_IMAGE)
    assert a != probe_job_name("llama", "abc123", H100, "me/torch:1")
    assert a != probe_job_name("llama", "def456", H100, DEFAULT_IMAGE)
    long = probe_job_name("x" * 200, "abc123", H100, DEFAULT_IMAGE)
    assert len(long) <= 63


def test_parse_the_log_of_two_gpus() -> None:
    log = "\n".join(
        [
            "=== PyTorch banner ===",
            json.dumps({"device": 0, "free_bytes": 80 * GIB, "total_bytes": 81 * GIB}),
            json.dumps({"device": 1, "free_bytes": 79 * GIB, "total_bytes": 81 * GIB}),
        ]
    )
    reading = parse_probe_log(log)
    assert reading.error is None
    assert reading.free_bytes == 159 * GIB
    assert reading.total_bytes == 162 * GIB


def test_parse_an_error_or_nothing() -> None:
    assert parse_probe_log('{"error": "no CUDA device"}').error == "no CUDA device"
    assert parse_probe_log("").error == "the probe printed no GPU reading"


FIT = GpuFit(
    required_gi_b=70.0,
    available_gi_b=79.65,
    fits=True,
    node_type=H100,
    gpus_needed=1,
    gpus_free=8,
    message="fits",
)


def test_a_probe_reading_below_the_requirement_fails_the_fit() -> None:
    short = with_probe(FIT, 60.0, "60 GiB free")
    assert short.fits is False
    assert short.probed_free_gi_b == 60.0
    assert "measured 60.0 GiB free per pod, less than the 70.0 GiB needed" in short.message
    enough = with_probe(FIT, 79.0, "79 GiB free")
    assert enough.fits is True
    assert enough.probed_free_gi_b == 79.0
    failed = with_probe(FIT, None, "Job x failed: no CUDA device")
    assert failed.fits is True
    assert failed.probed_free_gi_b is None
    assert failed.message.endswith("probe: Job x failed: no CUDA device")
