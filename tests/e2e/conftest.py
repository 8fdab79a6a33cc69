"""Fixtures for the end-to-end tests: the whole local stack with real Triton.

The dev cluster is the session's (shared with tests/integration: the same
``conftest_devcluster``); ``stack`` starts the data plane on free ports in a temporary
directory, with pod readiness handed to it, and stops it (giving readiness back to KWOK)
when the session ends. Each test gets a namespace, ``llmcanary run`` serving it, and a
``LoadDriver`` that streams requests through the gateway (Traefik), on the hostname
:func:`routes.attach` gives the test's LLMDeployment.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from conftest_devcluster import cluster  # noqa: F401  (the session's cluster)
from kubectl import ROOT, Kubectl, OperatorProcess, wait_for
from load_driver import LoadDriver
from metrics import free_port
from routes import route_host

from llmcanary_dev.localstack import stack as local

pytestmark = pytest.mark.k8s


@pytest.fixture(scope="session")
def kubectl(cluster: Any) -> Kubectl:  # noqa: F811
    return Kubectl(Path(cluster.kubeconfig), str(cluster.settings.tool("kubectl")))


@pytest.fixture(scope="session")
def stack(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.StackSettings]:  # noqa: F811
    settings = local.StackSettings(
        state_dir=tmp_path_factory.mktemp("stack"),
        model_root=ROOT / "model_repo",
        gateway_port=free_port(),
        prometheus_port=free_port(),
        gateway_metrics_port=free_port(),
        inference_port=free_port(),
    )
    try:
        local.up(settings)
    except local.StackError as exc:
        pytest.fail(f"the local stack did not start: {exc}", pytrace=False)
    yield settings
    local.down(settings, keep_cluster=True)


@pytest.fixture
def namespace(
    kubectl: Kubectl, stack: local.StackSettings, request: pytest.FixtureRequest
) -> Iterator[str]:
    name = f"e2e-{request.node.name[5:25].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    kubectl.run("create", "namespace", name)
    wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", name))
    yield name
    # Delete the LLMDeployment while its operator still runs (it holds a finalizer).
    kubectl.run("delete", "llmd", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False)
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubectl.kubeconfig, namespace, tmp_path / "operator.log").start()
    yield proc
    # The namespace fixture (set up first) tears down after this one: keep the operator
    # until the LLMDeployment is gone.
    kubectl.run(
        "delete", "llmd", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False
    )
    proc.stop()


@pytest.fixture
def load(stack: local.StackSettings, namespace: str) -> Iterator[LoadDriver]:
    driver = LoadDriver(stack.gateway_url, host=route_host(namespace, "tiny-llm"))
    yield driver
    driver.stop()
