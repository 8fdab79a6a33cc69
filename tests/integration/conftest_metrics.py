"""pytest plugin: a real Prometheus and Triton metrics exporters (see metrics.py).

- ``prometheus``: a fresh :class:`metrics.PrometheusServer`, started and ready, for each
  test. Function scope because tests kill and restart it, and a fresh TSDB means no
  series left over from another test; it is ready in about a second (measured), so
  sharing it would save little.
- ``exporter_fleet``: a factory, ``exporter_fleet(model="llm", default=None)``, of
  :class:`metrics.ExporterFleet` scraped by that Prometheus; every fleet, its
  exporter processes and its cluster sync threads are stopped at teardown, whether the
  test passed or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from metrics import Behaviour, ExporterFleet, PrometheusServer

FleetFactory = Callable[..., ExporterFleet]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path / "prometheus").start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        # Captured output: pytest shows it only for a test that failed.
        print(f"--- prometheus log (tail) ---\n{server.log_tail()}")


@pytest.fixture
def exporter_fleet(prometheus: PrometheusServer, tmp_path: Path) -> Iterator[FleetFactory]:
    fleets: list[ExporterFleet] = []

    def make(model: str = "llm", default: Behaviour | None = None) -> ExporterFleet:
        n = len(fleets)
        fleet = ExporterFleet(
            tmp_path / f"exporters-{n}",
            prometheus.targets_dir,
            model=model,
            default=default,
            name=f"fleet-{n}",
        )
        fleets.append(fleet)
        return fleet

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.close()
