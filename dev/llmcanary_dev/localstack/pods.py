"""The local data plane's kubelet: one real ``tritonserver`` per LLMDeployment pod.

KWOK starts the pods of the dev cluster without running anything. For every pod that
carries ``llmcanary.io/deployment`` and is Running with a pod IP, :class:`PodRunner`
does what a kubelet would do with its ``triton`` container:

- stages the model repository the way the pod's init container would: the served model
  and every model the revision's ConfigMap names (an ensemble's steps), their entries
  from the local ``model_repo/`` linked, and each ``config.pbtxt`` taken from the
  ConfigMap, byte for byte what the operator planned from its read of the repository;
- starts ``tritonserver`` with the container's own arguments and environment, bound to
  the pod IP (a loopback address here) on the container's ports;
- reports readiness from Triton's ``/v2/health/ready``: ``Ready`` and ``ContainersReady``
  go True only once Triton serves the model, and back to False if it stops;
- keeps Triton's output as a container runtime does (CRI-format files, the previous
  run's beside the current one) and names them in a KWOK ``Logs`` object owned by the
  pod, so that ``kubectl logs [--previous]`` (and the operator's pods/log reads) get
  them from KWOK's server, the nodes' kubelet endpoint;
- restarts a Triton that exited, with the kubelet's back-off (10 s doubling to 5 min),
  and shows it as a kubelet would: ``CrashLoopBackOff``, and the end of Triton's log in
  ``lastState.terminated.message`` when the container asks for it
  (``terminationMessagePolicy: FallbackToLogsOnError``, as the operator's do);
- stops the process when the pod is deleted or terminating (the operator scaled the
  revision down).

Every start is appended to ``starts.jsonl``, so that a test can prove how many times a
revision's model was loaded.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_REVISION, LABEL_TRACK
from llmcanary.builders.repository import SERVED_KEY, staged_members
from llmcanary.kube.client import Kube
from llmcanary.rollout.observation import triton_errors
from llmcanary_dev.devcluster.kwok_logs import logs_object
from llmcanary_dev.localstack.process import ManagedProcess, kill_group
from llmcanary_dev.localstack.triton import TritonInstall

__all__ = ["PodRunner", "RunningPod", "termination_message", "triton_argv"]

log = logging.getLogger(__name__)

CONTAINER = "triton"
INIT_CONTAINER = "stage-model"
CONFIG_VOLUME = "model-config"
BACKOFF_START_S = 10.0
BACKOFF_MAX_S = 300.0
STOP_GRACE_S = 20.0
#: The data plane's pod IPs: loopback (local without configuration, never leaves the
#: machine), apart from KWOK's 127.244.0.0/16 for the other pods.
POD_NETWORK = ipaddress.ip_network("127.245.0.0/16")  # a pod's terminationGracePeriod, in effect
# Flags the data plane sets itself: where the files are, and which address to bind.
_OVERRIDDEN = (
    "--model-repository",
    "--backend-directory",
    "--http-address",
    "--grpc-address",
    "--metrics-address",
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _port(container: Mapping[str, Any], name: str, default: int) -> int:
    for port in container.get("ports") or []:
        if port.get("name") == name:
            return int(port["containerPort"])
    return default


def triton_argv(
    container: Mapping[str, Any], install: TritonInstall, repository: Path, address: str
) -> list[str]:
    """The container's ``tritonserver`` command line, with the paths and addresses of
    this machine in place of the image's."""
    args = [a for a in container.get("args") or [] if a.split("=", 1)[0] not in _OVERRIDDEN]
    return [
        str(install.server),
        *args,
        f"--model-repository={repository}",
        f"--backend-directory={install.backends}",
        f"--http-address={address}",
        f"--grpc-address={address}",
        f"--metrics-address={address}",
    ]


#: What the kubelet keeps of a failed container's log (FallbackToLogsOnError).
TERMINATION_LOG_LINES = 80
TERMINATION_LOG_BYTES = 2048


def termination_message(container: Mapping[str, Any], log_tail: str) -> str:
    """What a kubelet puts in ``lastState.terminated.message`` of a container that exited
    with an error: the end of its log (80 lines, 2 KiB) when it asks for it
    (``terminationMessagePolicy: FallbackToLogsOnError``), else nothing (no container
    here writes a termination-log file)."""
    if container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        return ""
    lines = log_tail.splitlines()[-TERMINATION_LOG_LINES:]
    data = "\n".join(lines).encode()[-TERMINATION_LOG_BYTES:]
    return data.decode(errors="replace")


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    ip: str
    labels: dict[str, str]
    work_dir: Path
    process: ManagedProcess
    http_port: int = 8000
    metrics_port: int = 8002
    restarts: int = 0
    next_start: float = 0.0
    reported_ready: bool | None = None
    last_failure: str | None = None
    #: Its KWOK Logs object exists (``kubectl logs`` works).
    logs_published: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class PodRunner:
    kube: Kube
    install: TritonInstall
    work_dir: Path
    model_root: Path
    pods: dict[str, RunningPod] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    #: Tritons told to stop, with their deadline and pod IP (held until they are gone).
    stopping: list[tuple[subprocess.Popen[bytes], float, str]] = field(default_factory=list)

    # --- the loop -------------------------------------------------------------------

    def sync(self, pods: list[dict[str, Any]]) -> None:
        """One pass over every pod of the cluster (the caller lists them once for all the
        data plane): start, check, report and stop, so that processes match the pods."""
        self._reap()
        listed = [p for p in pods if LABEL_DEPLOYMENT in (p["metadata"].get("labels") or {})]
        self._assign_ips(listed)
        wanted = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in listed}
        for key in list(self.pods):
            pod = wanted.get(key)
            if (
                pod is None
                or not self._runnable(pod)
                or pod["metadata"]["uid"] != self.pods[key].uid
            ):
                self._remove(key, "pod deleted or terminating")
        for key, pod in wanted.items():
            if not self._runnable(pod):
                continue
            running = self.pods.get(key) or self._adopt(pod)
            running.labels = dict(pod["metadata"].get("labels") or {})
            if not running.logs_published:
                self._publish_logs(running)
            self._supervise(running, pod)

    def targets(self) -> list[tuple[str, dict[str, str]]]:
        """Prometheus targets (metrics address, PodMonitor-style labels) of live Tritons."""
        out = []
        for pod in self.pods.values():
            if pod.process.running:
                labels = {
                    "namespace": pod.namespace,
                    "pod": pod.name,
                    "llmdeployment": pod.labels.get(LABEL_DEPLOYMENT, ""),
                    "revision": pod.labels.get(LABEL_REVISION, ""),
                    "track": pod.labels.get(LABEL_TRACK, ""),
                }
                out.append((f"{pod.ip}:{pod.metrics_port}", labels))
        return out

    # --- pods -----------------------------------------------------------------------

    def _assign_ips(self, pods: list[dict[str, Any]]) -> None:
        """IPAM: a started pod without an IP gets the lowest free address of POD_NETWORK:
        held by no pod the API server knows, nor by a Triton still stopping."""
        used = {(p.get("status") or {}).get("podIP") for p in pods}
        # A deleted pod's Triton may still be draining on its address.
        used |= {ip for _, _, ip in self.stopping} | {p.ip for p in self.pods.values()}
        free = (str(ip) for ip in POD_NETWORK.hosts() if str(ip) not in used)
        for pod in pods:
            status = pod.get("status") or {}
            if status.get("phase") != "Running" or status.get("podIP"):
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue
            ip = next(free)
            meta = pod["metadata"]
            try:
                self.kube.patch_status(
                    "v1",
                    "Pod",
                    meta["namespace"],
                    meta["name"],
                    {"podIP": ip, "podIPs": [{"ip": ip}]},
                )
            except Exception as exc:  # gone since the list: the next pass sees
                log.info(
                    "could not assign a pod IP", extra={"pod": meta["name"], "error": str(exc)}
                )
                continue
            status["podIP"] = ip
            log.info(
                "assigned pod IP", extra={"pod": f"{meta['namespace']}/{meta['name']}", "ip": ip}
            )

    @staticmethod
    def _runnable(pod: Mapping[str, Any]) -> bool:
        status = pod.get("status") or {}
        return (
            not pod["metadata"].get("deletionTimestamp")
            and status.get("phase") == "Running"
            and bool(status.get("podIP"))
            and any(c.get("name") == CONTAINER for c in pod["spec"].get("containers") or [])
        )

    def _adopt(self, pod: Mapping[str, Any]) -> RunningPod:
        meta = pod["metadata"]
        container = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
        work = self.work_dir / meta["namespace"] / meta["name"]
        running = RunningPod(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            ip=pod["status"]["podIP"],
            labels=dict(meta.get("labels") or {}),
            work_dir=work,
            process=ManagedProcess(f"triton {meta['name']}", work / "triton.log", cri_log=True),
            http_port=_port(container, "http", 8000),
            metrics_port=_port(container, "metrics", 8002),
        )
        self.pods[running.key] = running
        return running

    def _publish_logs(self, pod: RunningPod) -> None:
        """Name the pod's log files in a KWOK ``Logs`` object, which KWOK's server reads
        for pods/log; owned by the pod, so it goes when the pod does."""
        logs = logs_object(
            pod.namespace,
            pod.name,
            pod.uid,
            CONTAINER,
            pod.process.log_file,
            pod.process.previous_log_file,
        )
        try:
            self.kube.apply(logs)
        except Exception as exc:  # tried again next pass; the pod runs meanwhile
            log.warning(
                "could not publish the pod's logs to KWOK",
                extra={"pod": pod.key, "error": str(exc)},
            )
        else:
            pod.logs_published = True

    def _remove(self, key: str, why: str) -> None:
        """SIGTERM the pod's Triton and move on: it drains on its own time, and the next
        passes reap it (SIGKILL after STOP_GRACE_S), so one slow exit delays no pod."""
        pod = self.pods.pop(key)
        proc = pod.process.terminate()
        if proc is not None:
            log.info("stopping Triton", extra={"pod": key, "reason": why})
            self.stopping.append((proc, time.monotonic() + STOP_GRACE_S, pod.ip))

    def _reap(self) -> None:
        still: list[tuple[subprocess.Popen[bytes], float, str]] = []
        for proc, deadline, ip in self.stopping:
            if proc.poll() is not None:
                kill_group(proc.pid)  # a stub left behind by its server
            elif time.monotonic() > deadline:
                kill_group(proc.pid)
                proc.wait()
            else:
                still.append((proc, deadline, ip))
        self.stopping = still

    def stop_all(self, timeout: float = STOP_GRACE_S) -> None:
        for key in list(self.pods):
            self._remove(key, "data plane stopping")
        deadline = time.monotonic() + timeout
        while self.stopping and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for proc, _, _ in self.stopping:
            kill_group(proc.pid)
            proc.wait()
        self.stopping = []

    def _supervise(self, pod: RunningPod, body: Mapping[str, Any]) -> None:
        code = pod.process.exit_code()
        if code is not None:
            log_tail = pod.process.log_tail(TERMINATION_LOG_LINES)
            pod.process.rotate_log()
            reason = triton_errors(log_tail) or "tritonserver exited (no error in its log)"
            pod.process.proc = None
            pod.restarts += 1
            delay = min(BACKOFF_START_S * 2 ** (pod.restarts - 1), BACKOFF_MAX_S)
            pod.next_start = time.monotonic() + delay
            pod.last_failure = reason
            log.warning(
                "Triton exited",
                extra={"pod": pod.key, "exit_code": code, "reason": reason, "retry_in_s": delay},
            )
            self._report_crash(pod, body, code, log_tail, delay)
            return
        if pod.process.proc is None:
            if time.monotonic() >= pod.next_start:
                self._start(pod, body)
            return
        ready = self._triton_ready(pod)
        if ready != pod.reported_ready:
            self._report_ready(pod, body, ready)

    def _start(self, pod: RunningPod, body: Mapping[str, Any]) -> None:
        container = next(c for c in body["spec"]["containers"] if c["name"] == CONTAINER)
        try:
            repository = self._stage(pod, body)
            env = self._environment(container, body)
        except _ConfigError as exc:
            pod.next_start = time.monotonic() + BACKOFF_START_S
            if pod.last_failure != str(exc):
                pod.last_failure = str(exc)
                self._report_waiting(pod, body, "CreateContainerConfigError", str(exc))
            return
        argv = triton_argv(container, self.install, repository, pod.ip)
        pod.process.start(argv, env=self.install.environment(env), cwd=pod.work_dir)
        pod.reported_ready = None
        record = {
            "time": time.time(),
            "namespace": pod.namespace,
            "pod": pod.name,
            "revision": pod.labels.get(LABEL_REVISION, ""),
            "deployment": pod.labels.get(LABEL_DEPLOYMENT, ""),
            "pid": pod.process.pid,
        }
        with (self.work_dir / "starts.jsonl").open("a") as out:
            out.write(json.dumps(record) + "\n")
        log.info("started Triton", extra={"pod": pod.key, "pid": pod.process.pid, "ip": pod.ip})

    def _triton_ready(self, pod: RunningPod) -> bool:
        try:
            answer = self.session.get(
                f"http://{pod.ip}:{pod.http_port}/v2/health/ready", timeout=0.5
            )
        except requests.RequestException:
            return False
        return answer.status_code == 200

    # --- staging --------------------------------------------------------------------

    def _stage(self, pod: RunningPod, body: Mapping[str, Any]) -> Path:
        init = next(
            (c for c in body["spec"].get("initContainers") or [] if c["name"] == INIT_CONTAINER),
            None,
        )
        if init is None:
            raise _ConfigError(f"pod has no {INIT_CONTAINER} init container")
        env = {e["name"]: e.get("value", "") for e in init.get("env") or []}
        model = env.get("MODEL_NAME", "")
        source = Path(env.get("MODEL_SOURCE", ""))
        if not source.is_dir():
            source = self.model_root / model
        if not model or not source.is_dir():
            raise _ConfigError(f"no model directory for {model!r} under {self.model_root}")
        volume = next(
            (v for v in body["spec"].get("volumes") or [] if v["name"] == CONFIG_VOLUME), None
        )
        if volume is None or "configMap" not in volume:
            raise _ConfigError(f"pod has no {CONFIG_VOLUME} ConfigMap volume")
        config_map = self.kube.get("v1", "ConfigMap", pod.namespace, volume["configMap"]["name"])
        if config_map is None or "config.pbtxt" not in (config_map.get("data") or {}):
            raise _ConfigError(f"ConfigMap {volume['configMap']['name']} has no config.pbtxt")
        data: dict[str, str] = config_map.get("data") or {}
        repository = pod.work_dir / "models"
        if repository.exists():
            shutil.rmtree(repository)
        # As the stage script does: the served model, then each model "models" names.
        staged = {model: data.get(SERVED_KEY), **staged_members(data)}
        for name, config in staged.items():
            member_source = source if name == model else source.parent / name
            if not member_source.is_dir():
                raise _ConfigError(f"no model directory for {name!r} under {source.parent}")
            target = repository / name
            target.mkdir(parents=True)
            for entry in member_source.iterdir():
                if entry.name != "config.pbtxt":
                    (target / entry.name).symlink_to(entry.resolve())
            if config is not None:
                (target / "config.pbtxt").write_text(config)
        return repository

    def _environment(self, container: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        namespace = body["metadata"]["namespace"]
        for entry in container.get("env") or []:
            name = entry["name"]
            if "value" in entry:
                env[name] = str(entry["value"])
                continue
            ref = entry.get("valueFrom") or {}
            if "configMapKeyRef" in ref:
                key_ref = ref["configMapKeyRef"]
                found = self.kube.get("v1", "ConfigMap", namespace, key_ref["name"])
                value = ((found or {}).get("data") or {}).get(key_ref["key"])
            elif "secretKeyRef" in ref:
                key_ref = ref["secretKeyRef"]
                found = self.kube.get("v1", "Secret", namespace, key_ref["name"])
                raw = ((found or {}).get("data") or {}).get(key_ref["key"])
                value = None if raw is None else base64.b64decode(raw).decode()
            elif "fieldRef" in ref:
                value = {
                    "metadata.name": body["metadata"]["name"],
                    "metadata.namespace": namespace,
                    "status.podIP": body["status"].get("podIP"),
                }.get(ref["fieldRef"].get("fieldPath", ""))
            else:
                value = None
            if value is None and not (
                ref.get("configMapKeyRef") or ref.get("secretKeyRef") or {}
            ).get("optional"):
                raise _ConfigError(f"env {name}: its source could not be resolved")
            if value is not None:
                env[name] = value
        return env

    # --- status ---------------------------------------------------------------------

    def _container_status(
        self, body: Mapping[str, Any], pod: RunningPod, **fields: Any
    ) -> dict[str, Any]:
        container = next(c for c in body["spec"]["containers"] if c["name"] == CONTAINER)
        return {
            "name": CONTAINER,
            "image": container.get("image", ""),
            "imageID": "",
            "restartCount": pod.restarts,
            **fields,
        }

    def _patch(
        self,
        pod: RunningPod,
        body: Mapping[str, Any],
        ready: bool,
        container: dict[str, Any],
        message: str | None = None,
    ) -> None:
        now = _now()
        conditions = [
            c
            for c in (body.get("status") or {}).get("conditions") or []
            if c.get("type") not in ("Ready", "ContainersReady")
        ]
        for kind in ("ContainersReady", "Ready"):
            condition: dict[str, Any] = {
                "type": kind,
                "status": "True" if ready else "False",
                "lastTransitionTime": now,
            }
            if not ready:
                condition["reason"] = "ContainersNotReady"
                condition["message"] = message or "Triton is not ready"
            conditions.append(condition)
        others = [
            c
            for c in (body.get("status") or {}).get("containerStatuses") or []
            if c.get("name") != CONTAINER
        ]
        try:
            self.kube.patch_status(
                "v1",
                "Pod",
                pod.namespace,
                pod.name,
                {"conditions": conditions, "containerStatuses": [*others, container]},
            )
        except Exception as exc:  # the pod may have gone since the list: next pass decides
            log.info("could not update pod status", extra={"pod": pod.key, "error": str(exc)})
            return
        pod.reported_ready = ready

    def _report_ready(self, pod: RunningPod, body: Mapping[str, Any], ready: bool) -> None:
        started = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = self._container_status(
            body, pod, ready=ready, started=True, state={"running": {"startedAt": started}}
        )
        log.info("Triton readiness", extra={"pod": pod.key, "ready": ready})
        self._patch(pod, body, ready, status, None if ready else "Triton is not ready")

    def _report_crash(
        self, pod: RunningPod, body: Mapping[str, Any], code: int, log_tail: str, delay: float
    ) -> None:
        # As a kubelet words it: the reason is in the termination message, if anywhere.
        container = next(c for c in body["spec"]["containers"] if c["name"] == CONTAINER)
        self._report_waiting(
            pod,
            body,
            "CrashLoopBackOff",
            f"back-off {delay:.0f}s restarting failed container={CONTAINER}"
            f" pod={pod.name}_{pod.namespace}({pod.uid})",
            condition=f"containers with unready status: [{CONTAINER}]",
            lastState={
                "terminated": {
                    "exitCode": code,
                    "reason": "Error",
                    "message": termination_message(container, log_tail),
                    "finishedAt": _now(),
                }
            },
        )

    def _report_waiting(
        self,
        pod: RunningPod,
        body: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        condition: str | None = None,
        **extra: Any,
    ) -> None:
        """The container is not running: waiting for ``reason``; ``condition`` is the
        Ready condition's message (default: ``message``)."""
        status = self._container_status(
            body,
            pod,
            ready=False,
            started=False,
            state={"waiting": {"reason": reason, "message": message}},
            **extra,
        )
        self._patch(pod, body, False, status, condition or message)


class _ConfigError(Exception):
    """The pod's container cannot be set up (a missing ConfigMap, model or env source)."""
