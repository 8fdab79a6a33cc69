"""The local stack's Prometheus: Debian's binary scraping every Triton of the data plane,
and the gateway.

Tritons come from file-based discovery (``targets/triton.json``, re-read every second)
with the labels a PodMonitor would attach in a cluster: ``namespace``, ``pod``,
``llmdeployment``, ``revision`` and ``track``. The operator's default queries select on
exactly those. The InferencePools' endpoint pickers come the same way
(``targets/endpoint-picker.json``), with the labels of the chart's picker PodMonitor.
Other components (the gateway) are static jobs, scraped as they are: their series name
the backend themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from llmcanary_dev.localstack.process import ManagedProcess

__all__ = ["Prometheus", "PrometheusError", "prometheus_binary"]


class PrometheusError(RuntimeError):
    pass


TRITON_JOB = "triton"
PICKER_JOB = "endpoint-picker"
#: The jobs whose targets come from files (:meth:`Prometheus.set_targets`).
DISCOVERED_JOBS = (TRITON_JOB, PICKER_JOB)


def prometheus_binary(cache_dir: Path) -> Path:
    """Where ``scripts/ensure-deb-binary.sh`` puts Debian's binary."""
    return cache_dir / "prometheus" / "bin" / "prometheus"


class Prometheus:
    def __init__(self, work_dir: Path, binary: Path, port: int, scrape_interval: str = "1s"):
        self.work_dir = work_dir
        self.binary = binary
        self.port = port
        self.scrape_interval = scrape_interval
        self.process = ManagedProcess("prometheus", work_dir / "prometheus.log")
        self._targets: dict[str, str] = {}

    def targets_file(self, job: str) -> Path:
        return self.work_dir / "targets" / f"{job}.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, jobs: Mapping[str, str] | None = None) -> None:
        """Start scraping the pod targets and ``jobs`` (job name: "HOST:PORT")."""
        if not self.binary.is_file():
            raise PrometheusError(
                f"{self.binary} is missing: run `make prometheus-bin`"
                " (scripts/ensure-deb-binary.sh)"
            )
        for job in DISCOVERED_JOBS:
            self.targets_file(job).parent.mkdir(parents=True, exist_ok=True)
            if not self.targets_file(job).exists():
                self.set_targets([], job=job)
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                *(
                    {
                        "job_name": job,
                        "file_sd_configs": [
                            {"files": [str(self.targets_file(job))], "refresh_interval": "1s"}
                        ],
                    }
                    for job in DISCOVERED_JOBS
                ),
                *(
                    {"job_name": job, "static_configs": [{"targets": [address]}]}
                    for job, address in (jobs or {}).items()
                ),
            ],
        }
        config_file = self.work_dir / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.process.start(
            [
                str(self.binary),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
            ],
            cwd=self.work_dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running:
                raise PrometheusError(f"Prometheus exited:\n{self.process.log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise PrometheusError(f"Prometheus not ready at {self.url}:\n{self.process.log_tail()}")

    def set_targets(
        self, targets: Sequence[tuple[str, Mapping[str, str]]], job: str = TRITON_JOB
    ) -> bool:
        """Scrape exactly ``(address, labels)`` in ``job``; returns whether its file
        changed."""
        groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets]
        text = json.dumps(sorted(groups, key=lambda g: g["targets"][0]), indent=1)
        if text == self._targets.get(job):
            return False
        path = self.targets_file(job)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # Prometheus never reads half a file
        self._targets[job] = text
        return True

    def stop(self) -> None:
        self.process.stop()
