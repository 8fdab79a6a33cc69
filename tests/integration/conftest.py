"""Fixtures for tests against the real local control plane.

The session fixture ``cluster`` (conftest_devcluster) builds the binaries if needed and
starts the cluster; here each test gets its own namespace, the CRD installed from
``crds/``, and ``llmcanary run`` as a real process serving that namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_devcluster import cluster  # noqa: F401  (re-exported session fixture)
from conftest_metrics import exporter_fleet, prometheus  # noqa: F401  (re-exported fixtures)
from kubectl import ROOT, Kubectl, OperatorProcess, wait_for
from kubernetes import config

from llmcanary.kube.client import Kube

pytestmark = pytest.mark.k8s


@pytest.fixture(scope="session")
def kubectl(cluster: Any) -> Kubectl:  # noqa: F811
    return Kubectl(Path(cluster.kubeconfig), str(cluster.settings.tool("kubectl")))


@pytest.fixture(scope="session")
def kube(cluster: Any) -> Kube:  # noqa: F811
    """The operator's own client, as an admin of the cluster."""
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig), persist_config=False
    )
    return Kube(api_client)


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/llmdeployments.llmcanary.io",
    )


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    kubectl.run("create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, which a controller creates.
    wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", name))
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator_env() -> dict[str, str]:
    """LLMCANARY_* settings for the operator process; a test module may override this."""
    return {}


@pytest.fixture
def operator(
    kubectl: Kubectl, crd: None, namespace: str, tmp_path: Path, operator_env: dict[str, str]
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        kubectl.kubeconfig, namespace, tmp_path / "operator.log", extra_env=operator_env
    ).start()
    yield proc
    proc.stop()
    log = "\n".join(proc.log_lines()[-40:])
    print(f"--- operator log (tail) ---\n{log}")
