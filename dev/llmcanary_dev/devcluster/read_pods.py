"""The dev cluster's kubelet for repository reads: runs each read pod's script for real.

KWOK runs no containers: its stages would mark a read pod completed at once, with no log,
and the operator would find no listing. Every pod labelled ``llmcanary.io/repository-read``
(the operator's read of a new revision's model repository, ``builders/revision_read.py``)
is left out of KWOK's stages (:mod:`llmcanary_dev.devcluster.stages`) and run here instead,
as a kubelet would run its one container:

- its command (``/bin/sh -c READ_SCRIPT``) with its environment, the repository root it
  names mapped to the dev stack's one model repository (``model_repo/``, or
  ``$LLMCANARY_MODEL_REPO``), since no volume or image is mounted here;
- its output kept as a container runtime keeps it (CRI format) and named in a KWOK
  ``Logs`` object, so ``kubectl logs`` and the operator's pods/log read return it;
- the pod's status as the kubelet reports a container that ran to its end: phase
  ``Succeeded`` or ``Failed``, the container ``terminated`` with its exit code (and the
  end of its log as the message when it failed and asks for it), from which the Job
  controller completes or fails the Job.

It is a component of the dev cluster (``devcluster up`` starts it; it runs in both pod
readiness modes), watching the read pods.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from llmcanary.builders.revision_read import LABEL_READ
from llmcanary.kube.client import Kube
from llmcanary_dev.devcluster.kwok_logs import logs_object
from llmcanary_dev.localstack.process import cri_line

__all__ = ["ReadPodRunner", "main"]

log = logging.getLogger(__name__)

#: The variable the read script takes its repository root from.
ROOT_VARIABLE = "MODEL_REPOSITORY_ROOT"
RUN_TIMEOUT_S = 60.0
RETRY_S = 1.0
_DONE = ("Succeeded", "Failed")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ReadPodRunner:
    def __init__(self, kube: Kube, model_root: Path, work_dir: Path) -> None:
        self.kube = kube
        self.model_root = model_root
        self.work_dir = work_dir
        self._ran: set[str] = set()  # pod uids run to their end (bounded by pruning)

    def sync(self, pods: list[dict[str, Any]]) -> None:
        """Run every scheduled read pod of ``pods`` (all of them) that has not run yet."""
        self._ran &= {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            self.consider(pod)

    def consider(self, pod: Mapping[str, Any]) -> None:
        """Run ``pod`` if it is scheduled and has not run (nor ended) yet."""
        meta, status = pod["metadata"], pod.get("status") or {}
        if (
            meta["uid"] in self._ran
            or meta.get("deletionTimestamp")
            or status.get("phase") in _DONE
            or not (pod.get("spec") or {}).get("nodeName")
        ):
            return
        self._run(pod)
        self._ran.add(meta["uid"])

    def _environment(self, container: Mapping[str, Any]) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
        env[ROOT_VARIABLE] = str(self.model_root)
        return env

    def _run(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        container = pod["spec"]["containers"][0]
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        started = _now()
        try:
            done = subprocess.run(
                command,
                env=self._environment(container),
                capture_output=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
            code, output = done.returncode, done.stdout + done.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            code, output = 1, f"{exc}\n".encode()
        log_file = self.work_dir / meta["namespace"] / meta["name"] / "read.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_bytes(b"".join(cri_line(line) for line in output.splitlines()))
        namespace, name = meta["namespace"], meta["name"]
        status = self._status(container, code, output, started)
        try:
            self.kube.apply(logs_object(namespace, name, meta["uid"], container["name"], log_file))
            self.kube.patch_status("v1", "Pod", namespace, name, status)
        except Exception as exc:  # the pod went meanwhile: nothing to report to
            log.info("could not report read pod %s: %s", key, exc)
            return
        log.info("ran read pod %s: exit code %d", key, code)

    @staticmethod
    def _status(
        container: Mapping[str, Any], code: int, output: bytes, started: str
    ) -> dict[str, Any]:
        finished = _now()
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": finished,
        }
        if code and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            terminated["message"] = output.decode(errors="replace")[-2048:]
        not_ready = {"status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
        return {
            "phase": "Succeeded" if code == 0 else "Failed",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", **not_ready},
                {"type": "Ready", **not_ready},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--model-root", required=True, type=Path)
    parser.add_argument("--work-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    runner = ReadPodRunner(Kube.from_kubeconfig(args.kubeconfig), args.model_root, args.work_dir)

    def plain(obj: Any) -> dict[str, Any]:
        found: dict[str, Any] = api.sanitize_for_serialization(obj)
        return found

    # List, then watch from there (the API server pushes each change; a poll would add
    # requests to every figure of bench/scale.py); after any error, list again.
    while True:
        try:
            listed = core.list_pod_for_all_namespaces(label_selector=LABEL_READ)
            runner.sync([plain(p) for p in listed.items])
            since = listed.metadata.resource_version if listed.metadata else None
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                core.list_pod_for_all_namespaces,
                label_selector=LABEL_READ,
                resource_version=since,
                timeout_seconds=300,
            )
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    runner.consider(plain(event["object"]))
        except Exception as exc:  # the API server restarting, a watch expired: list again
            log.warning("read pods: %s; listing again", exc)
            time.sleep(RETRY_S)


if __name__ == "__main__":
    main()
