"""Test helpers: kubectl against the local cluster, waiting, and the operator process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, every: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class Kubectl:
    kubeconfig: Path
    binary: str = "kubectl"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def apply(
        self, manifest: str | dict[str, Any], namespace: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.run("apply", "-n", namespace, "-f", "-", stdin=text, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        done = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr:
                return None
            raise AssertionError(done.stderr)
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.run(*args).stdout)["items"]
        return items


@dataclass
class OperatorProcess:
    """``llmcanary run`` as a real process, as a user would start it."""

    kubeconfig: Path
    namespace: str
    log_file: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    # Serve /metrics on this port (llmcanary run --metrics-port); None: off.
    metrics_port: int | None = None
    # What it serves and how it runs (default: -n NAMESPACE), e.g. ["-A", "--peering", "x"].
    serve: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LLMCANARY_RESYNC_SECONDS": "2",
            # The tests' Prometheus (and unreachable stand-ins) listen on 127.0.0.1.
            "LLMCANARY_PROMETHEUS_ALLOWED_HOSTS": '["127.0.0.1", "localhost"]',
            **self.extra_env,
        }
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmcanary",
                "run",
                *(self.serve or ["-n", self.namespace]),
                "--log-format",
                "json",
                *(["--metrics-port", str(self.metrics_port)] if self.metrics_port else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sigterm(timeout=20)
        self.proc = None

    def sigterm(self, timeout: float) -> bool:
        """SIGTERM, as Kubernetes stops a pod; False if it was still running after
        ``timeout`` s and had to be killed."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False
        finally:
            self.proc = None

    def log_lines(self) -> list[str]:
        return self.log_file.read_text().splitlines() if self.log_file.exists() else []


def canary_route_weight(kubectl: Kubectl, namespace: str, name: str) -> int | None:
    """The canary backend's weight in the LLMDeployment's HTTPRoute (None: no route yet)."""
    route = kubectl.get("httproute", name, namespace)
    if route is None:
        return None
    refs = route["spec"]["rules"][0]["backendRefs"]
    return int(next(r["weight"] for r in refs if r["name"] == f"{name}-canary"))


def promote(kubectl: Kubectl, namespace: str, name: str) -> None:
    """``llmcanary promote NAME``, as an operator would ask for it."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "llmcanary",
            "promote",
            name,
            "-n",
            namespace,
            "--kubeconfig",
            str(kubectl.kubeconfig),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def gpu_hog(node: str, gpus: int) -> dict[str, Any]:
    """A plain pod bound to ``node`` that holds ``gpus`` of its nvidia.com/gpu."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"hog-{node}"},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }
