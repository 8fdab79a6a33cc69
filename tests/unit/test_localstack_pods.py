from pathlib import Path

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.workload import tritonserver_args
from llmcanary.rollout.observation import pod_problem, triton_errors
from llmcanary_dev.localstack.pods import termination_message, triton_argv
from llmcanary_dev.localstack.process import ManagedProcess, strip_cri
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


TRITON_LOG = "\n".join(
    [
        'I1124 20:36:35.057162 26488 model_lifecycle.cc:472] "loading: tiny-llm:1"',
        'E1124 20:36:35.056183 26488 server.cc:241] "CudaDriverHelper has not been initialized."',
        "E1124 20:36:35.111545 26488 model_lifecycle.cc:642] \"failed to load 'tiny-llm'"
        " version 1: Invalid argument: unexpected platform type 'nope'\"",
        "| Model    | Version | Status |",
        "error: creating server: Internal - failed to load all models",
    ]
)


def test_a_crashed_triton_is_explained_by_its_errors_not_its_banner() -> None:
    reason = triton_errors(TRITON_LOG)
    assert reason.startswith("failed to load 'tiny-llm' version 1: Invalid argument")
    assert reason.endswith("error: creating server: Internal - failed to load all models")
    assert "Cuda" not in reason and "Model" not in reason
    assert triton_errors("") == ""


def test_the_kubelet_keeps_a_log_tail_only_for_containers_that_ask() -> None:
    asking = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    long_log = "\n".join(f"line {i}" for i in range(200))
    kept = termination_message(asking, long_log)
    assert kept.endswith("line 199") and "line 119\n" not in kept
    assert len(kept.encode()) <= 2048 and len(kept.splitlines()) == 80
    assert termination_message({}, TRITON_LOG) == ""
    assert termination_message({"terminationMessagePolicy": "File"}, TRITON_LOG) == ""


def pod(name: str, *states: dict, last: dict | None = None, restarts: int = 0) -> dict:
    statuses = [
        {"name": f"c{i}", "state": st, "lastState": last or {}, "restartCount": restarts}
        for i, st in enumerate(states)
    ]
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "status": {"containerStatuses": statuses},
    }


def test_the_first_container_that_says_why_it_waits_explains_the_pod() -> None:
    starting = pod("a", {"waiting": {"reason": "ContainerCreating"}})
    running = pod("b", {"running": {}})
    pulling = pod("c", {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}})
    assert pod_problem([starting, running]) is None
    assert pod_problem([starting, pulling]) == "pod c: c0 ImagePullBackOff: no such image"


def test_a_crash_loop_is_explained_by_the_log_tail_the_kubelet_kept() -> None:
    crash = {"exitCode": 1, "reason": "Error", "message": TRITON_LOG}
    back_off = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting"}}
    waiting = pod("t", back_off, last={"terminated": crash}, restarts=2)
    problem = pod_problem([waiting])
    assert problem is not None
    assert problem.startswith("pod t: c0 CrashLoopBackOff (exit 1): failed to load 'tiny-llm'")
    assert problem.endswith("; full log: kubectl logs -n ml t -c c0 --previous")
    assert "back-off" not in problem  # the kubelet's words change every restart
    # The same words through the loop: terminated between a crash and the next start,
    # and started again while Triton loads (not Ready yet).
    ended = pod("t", {"terminated": crash}, last={"terminated": crash}, restarts=2)
    again = pod("t", {"running": {}}, last={"terminated": crash}, restarts=2)
    assert pod_problem([ended]) == problem.removesuffix(" --previous")
    assert pod_problem([again]) == problem
    # The very first crash: no previous run yet.
    first = pod_problem([pod("t", {"terminated": crash})])
    assert (first or "").startswith("pod t: c0 exited (exit 1): failed to load")
    assert (first or "").endswith("kubectl logs -n ml t -c c0")
    # The kubelet's reason when it is not just Error, e.g. the OOM killer.
    oom = {"exitCode": 137, "reason": "OOMKilled"}
    killed = pod_problem([pod("k", back_off, last={"terminated": oom}, restarts=1)])
    assert (killed or "").startswith("pod k: c0 CrashLoopBackOff (exit 137, OOMKilled);")
    # A script's last words, when Triton's lines are absent.
    script = {"exitCode": 1, "message": "a\nno model"}
    assert (
        pod_problem([pod("s", back_off, last={"terminated": script}, restarts=1)]) or ""
    ).startswith("pod s: c0 CrashLoopBackOff (exit 1): no model; full log:")
    # Without a termination message (a container that did not ask): the exit code.
    silent = pod_problem([pod("q", back_off, last={"terminated": {"exitCode": 2}}, restarts=1)])
    assert (silent or "").startswith("pod q: c0 CrashLoopBackOff (exit 2); full log:")
    # Ready again, or a container that ended well (an init container done): nothing.
    healthy = pod("h", {"running": {}}, last={"terminated": crash}, restarts=1)
    healthy["status"]["containerStatuses"][0]["ready"] = True
    assert pod_problem([healthy]) is None
    assert pod_problem([pod("d", {"terminated": {"exitCode": 0, "reason": "Completed"}})]) is None


def test_a_pods_container_logs_like_a_runtime_and_keeps_the_previous_run(tmp_path: Path) -> None:
    """What KWOK serves for `kubectl logs [--previous]`: CRI-format lines, one run per file."""
    process = ManagedProcess("triton pod-a", tmp_path / "triton.log", cri_log=True)
    for run in ("first", "second"):
        process.start(["/bin/sh", "-c", f"echo {run} run; echo 'E1 error: it broke' >&2; exit 3"])
        assert process.proc is not None
        process.proc.wait(timeout=10)
        assert process.exit_code() == 3
        assert process.log_tail() == f"{run} run\nE1 error: it broke"
        process.rotate_log()  # as the data plane does when it sees the container exit
        process.proc = None
        # Until the next run, both serve the run that ended, as a kubelet's do.
        assert process.previous_log_file.read_text() == (tmp_path / "triton.log").read_text()
    process.start(["/bin/sh", "-c", "echo third run"])
    assert process.proc is not None
    process.proc.wait(timeout=10)
    assert process.exit_code() == 0
    current = (tmp_path / "triton.log").read_text().splitlines()
    assert [line.split(" ", 3)[1:] for line in current] == [["stdout", "F", "third run"]]
    assert current[0].split(" ")[0].endswith("Z")  # RFC 3339 in UTC, as CRI writes it
    previous = process.previous_log_file.read_text()
    assert "second run" in previous and "first run" not in previous
    assert strip_cri("2026-11-30T16:00:00.1Z stdout F a b  c") == "a b  c"
