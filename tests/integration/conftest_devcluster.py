"""pytest plugin: the session fixture ``cluster``, a real local control plane.

Load it with ``pytest_plugins = ["conftest_devcluster"]`` (or import the fixture). It
builds the binaries if they are missing (the first build compiles Kubernetes: minutes),
starts the cluster unless it already runs, and yields a
:class:`llmcanary_dev.devcluster.Cluster` (``.kubeconfig``, ``.kubectl(*args)``,
``.server``, ``.ca_file``, ``.settings``).

At the end of the session the cluster is stopped only if this session started it, and
kept even then when ``LLMCANARY_DEVCLUSTER_KEEP=1`` (faster edit-test loops). State is
never purged here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from llmcanary_dev import devcluster
from llmcanary_dev.devcluster import Cluster, DevClusterError

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    settings = devcluster.Settings.from_env()
    try:
        devcluster.ensure_built(settings)
        running = devcluster.up(settings)
    except DevClusterError as e:
        pytest.fail(f"the dev cluster could not be started: {e}", pytrace=False)
    log.info(
        "dev cluster %s in %.1fs",
        "started" if running.started else "already running",
        running.elapsed,
    )
    yield running
    if running.started and os.environ.get("LLMCANARY_DEVCLUSTER_KEEP") != "1":
        devcluster.down(settings)
