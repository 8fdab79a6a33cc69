from pathlib import Path

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.workload import tritonserver_args
from llmcanary.rollout.observation import pod_problem
from llmcanary_dev.localstack.pods import failure_reason, triton_argv
from llmcanary_dev.localstack.triton import TritonInstall

SPEC = {
    "model": {"name": "tiny-llm", "repository": "/opt/models", "version": "1"},
    "triton": {"image": "triton:1", "args": ["--log-verbose=1"]},
    "replicas": 1,
    "resources": {"gpus": 1},
}


def test_the_pods_own_arguments_run_with_this_machines_paths_and_the_pod_ip() -> None:
    spec = LLMDeploymentSpec.model_validate(SPEC)
    install = TritonInstall(Path("/venv/tritonserver"), Path("/stack/backends"), {})
    argv = triton_argv(
        {"args": tritonserver_args(spec)}, install, Path("/stack/repo"), "127.244.0.7"
    )
    assert argv[0] == "/venv/tritonserver"
    assert "--log-verbose=1" in argv and "--metrics-config=summary_latencies=true" in argv
    assert "--model-repository=/stack/repo" in argv
    assert not any(a == "--model-repository=/models" for a in argv)
    for flag in ("http", "grpc", "metrics"):
        assert f"--{flag}-address=127.244.0.7" in argv
    assert "--backend-directory=/stack/backends" in argv


def test_a_crashed_triton_is_explained_by_its_errors_not_its_banner() -> None:
    log = "\n".join(
        [
            'I1124 20:36:35.057162 26488 model_lifecycle.cc:472] "loading: tiny-llm:1"',
            'E1124 20:36:35.056183 26488 server.cc:241] "CudaDriverHelper has not been'
            ' initialized."',
            "E1124 20:36:35.111545 26488 model_lifecycle.cc:642] \"failed to load 'tiny-llm'"
            " version 1: Invalid argument: unexpected platform type 'nope'\"",
            "| Model    | Version | Status |",
            "error: creating server: Internal - failed to load all models",
        ]
    )
    reason = failure_reason(log)
    assert reason.startswith("failed to load 'tiny-llm' version 1: Invalid argument")
    assert reason.endswith("error: creating server: Internal - failed to load all models")
    assert "Cuda" not in reason and "Model" not in reason
    assert failure_reason("") == "tritonserver exited (no error in its log)"


def test_the_first_container_that_says_why_it_waits_explains_the_pod() -> None:
    def pod(name: str, *states: dict) -> dict:
        statuses = [{"name": f"c{i}", "state": st} for i, st in enumerate(states)]
        return {"metadata": {"name": name}, "status": {"containerStatuses": statuses}}

    starting = pod("a", {"waiting": {"reason": "ContainerCreating"}})
    running = pod("b", {"running": {}})
    crashing = pod("c", {"waiting": {"reason": "CrashLoopBackOff", "message": "failed to load"}})
    assert pod_problem([starting, running]) is None
    assert pod_problem([starting, crashing]) == "pod c: c0 CrashLoopBackOff: failed to load"
