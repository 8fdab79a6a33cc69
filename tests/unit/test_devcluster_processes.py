"""Process liveness must not depend on /proc: CI sandboxes run without it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from llmcanary_dev.devcluster import processes


@pytest.fixture(params=[True, False], ids=["with-proc", "without-proc"])
def proc_visible(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not processes._proc_is_ours():
        pytest.skip("/proc here belongs to another pid namespace (as in CI)")
    if not request.param:
        monkeypatch.setattr(processes, "_proc_is_ours", lambda: False)
    return bool(request.param)


def test_a_running_child_is_alive_and_an_exited_one_is_not(proc_visible: bool) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    processes._children[child.pid] = child
    try:
        assert processes._alive(child.pid, "anything")
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
        assert not processes._alive(child.pid, "anything")
        assert child.pid not in processes._children
    finally:
        child.kill()
        processes._children.pop(child.pid, None)


def test_a_process_started_elsewhere_is_found_by_pid(proc_visible: bool) -> None:
    # Not our child (as after `devcluster up` returned): only the pid is known.
    other = subprocess.Popen(["sleep", "60"])
    try:
        # /proc/<pid>/cmdline can lag the exec by a moment on a busy machine.
        deadline = time.monotonic() + 5
        while not processes._alive(other.pid, "sleep") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes._alive(other.pid, "sleep")
    finally:
        other.kill()
        other.wait()
    assert not processes._alive(other.pid, "sleep")


def test_a_reused_pid_is_not_mistaken_for_the_component() -> None:
    if not processes._proc_is_ours():
        pytest.skip("needs /proc of this pid namespace")
    assert not processes._alive(os.getpid(), "etcd")
