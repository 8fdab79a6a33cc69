"""A small in-memory Kubernetes API for fast unit tests of the reconciler's ordering.

It keeps objects as dicts and records every write in order; it does no admission, no
defaulting and no garbage collection. Behaviour against a real API server is what the
integration tests check; this fake answers "in which order did the operator write?".

Like the API server it stamps a ``uid`` on each new object and a new ``resourceVersion``
on each write, refuses a delete whose UID precondition no longer holds and a status patch
whose ``resourceVersion`` is stale (409). ``faults`` makes a call fail the way the API
server or the network can; the failure reaches the caller as :class:`Kube` words it.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from llmcanary.builders.repository import HEADER
from llmcanary.builders.revision_read import JOB_UID, LABEL_READ, READ_CONTAINER
from llmcanary.kube.errors import Forbidden, MissingApi, api_message, explain, unreachable

Key = tuple[str, str, str, str]  # api_version, kind, namespace, name


@dataclass(frozen=True)
class Write:
    verb: str  # apply | patch | patch_status | delete
    kind: str
    name: str
    body: dict[str, Any]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch (RFC 7386) of ``target`` in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _selects(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        if "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _conflict(message: str) -> ApiException:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = json.dumps(
        {"kind": "Status", "reason": "Conflict", "message": message, "code": 409}
    ).encode()
    return exc


@dataclass
class FakeKube:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    # Kinds the "cluster" does not serve (every call on them raises MissingApi).
    missing: set[str] = field(default_factory=set)
    # (verb, kind) -> what the call raises: an ApiException or a urllib3 error (worded as
    # Kube words it), or any other exception as it is; a list is one per call, then none.
    # Verbs: get, list, apply, patch, patch_status, delete.
    faults: dict[tuple[str, str], BaseException | list[BaseException]] = field(default_factory=dict)
    # (namespace, pod, container, previous) -> the log pods/log returns; reads are counted.
    logs: dict[tuple[str, str, str, bool], str] = field(default_factory=dict)
    log_reads: int = 0
    # What a repository read Job lists when it is created: model -> its config.pbtxt (None:
    # none). None lists the owner's served model alone, without a config.pbtxt, so that
    # the revision's ConfigMap is the spec's own rendering. ``run_reads`` False leaves the
    # Jobs running (a read that has not finished).
    repository: dict[str, str | None] | None = None
    run_reads: bool = True
    _version: int = 0

    def _check(self, api_version: str, kind: str) -> None:
        if kind in self.missing:
            raise MissingApi(api_version, kind, "install the API that serves it")

    def _fault(self, verb: str, kind: str, namespace: str, name: str | None) -> None:
        fault = self.faults.get((verb, kind))
        if isinstance(fault, list):
            if not fault:
                return
            exc = fault.pop(0)
        elif fault is None:
            return
        else:
            exc = fault
        if verb == "patch_status":
            verb, kind = "patch", f"{kind}/status"
        if isinstance(exc, ApiException):
            if exc.status == 403:
                raise Forbidden(verb, kind, namespace, api_message(exc)) from exc
            raise explain(exc, verb, kind, namespace, name) from exc
        if isinstance(exc, Urllib3Error):
            raise unreachable(exc, verb, kind, namespace, name) from exc
        raise exc

    def _stamp(self, obj: dict[str, Any]) -> None:
        self._version += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._version)
        meta.setdefault("uid", f"uid-{self._version}")

    def add(self, obj: dict[str, Any]) -> None:
        """Put an object in place without recording a write (the test's starting state)."""
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        stored = copy.deepcopy(obj)
        self._stamp(stored)
        self.objects[key] = stored

    def pod_log(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        limit_bytes: int = 65536,
        *,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> str | None:
        self.log_reads += 1
        self._fault("get", "Pod/log", namespace, name)
        text = self.logs.get((namespace, name, container or "", previous))
        if text is None:
            return None
        lines = text.splitlines()[-tail_lines:] if tail_lines is not None else text.splitlines()
        return "\n".join(lines)[:limit_bytes]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._check(api_version, kind)
        self._fault("get", kind, namespace, name)
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        self._check(api_version, kind)
        self._fault("list", kind, namespace, None)
        return [
            copy.deepcopy(obj)
            for (v, k, ns, _), obj in sorted(self.objects.items())
            if (v, k, ns) == (api_version, kind, namespace)
            and _selects(label_selector, obj["metadata"].get("labels") or {})
        ]

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self._check(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        self._fault("apply", obj["kind"], meta.get("namespace", ""), meta["name"])
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        current = copy.deepcopy(self.objects.get(key, {}))
        _merge(current, obj)
        self._stamp(current)
        if not dry_run:
            created = key not in self.objects
            self.objects[key] = current
            self.writes.append(Write("apply", obj["kind"], meta["name"], copy.deepcopy(obj)))
            if created and obj["kind"] == "Job" and self.run_reads:
                self._run_read(current)
        return copy.deepcopy(current)

    def _run_read(self, job: dict[str, Any]) -> None:
        """Play the Job controller and the kubelet for a repository read: one pod that
        succeeded, its log the listing READ_SCRIPT prints of :attr:`repository`."""
        template = job["spec"]["template"]
        if LABEL_READ not in (template["metadata"].get("labels") or {}):
            return
        namespace = job["metadata"]["namespace"]
        models = self.repository
        if models is None:
            owner = job["metadata"]["ownerReferences"][0]["name"]
            llmd = self.objects[("llmcanary.io/v1alpha1", "LLMDeployment", namespace, owner)]
            models = {llmd["spec"]["model"]["name"]: None}
        lines = [HEADER]
        for name, config in models.items():
            lines.append(f"model {name}")
            if config is not None:
                lines.append(f"config {base64.b64encode(config.encode()).decode()}")
            lines.append("version 1")
        lines.append("end")
        pod_name = f"{job['metadata']['name']}-x7k2p"
        self.add(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": {
                        **template["metadata"]["labels"],
                        JOB_UID: job["metadata"]["uid"],
                    },
                },
                "status": {"phase": "Succeeded"},
            }
        )
        self.logs[(namespace, pod_name, READ_CONTAINER, False)] = "\n".join(lines) + "\n"
        job["status"] = {"succeeded": 1}

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        self._check(api_version, kind)
        self._fault("patch", kind, namespace, name)
        current = self.objects.get((api_version, kind, namespace, name))
        if current is None:
            return None
        _merge(current, patch)
        self._stamp(current)
        self.writes.append(Write("patch", kind, name, copy.deepcopy(patch)))
        return copy.deepcopy(current)

    def patch_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        self._fault("patch_status", kind, namespace, name)
        current = self.objects[(api_version, kind, namespace, name)]
        held = current["metadata"].get("resourceVersion")
        if resource_version is not None and resource_version != held:
            # What the API server answers when metadata.resourceVersion in a patch is stale.
            exc = _conflict(
                f'Operation cannot be fulfilled on {kind.lower()}s "{name}": the object has'
                " been modified; please apply your changes to the latest version and try again"
            )
            raise explain(exc, "patch", f"{kind}/status", namespace, name) from exc
        current.setdefault("status", {})
        _merge(current["status"], status)
        self._stamp(current)
        self.writes.append(Write("patch_status", kind, name, copy.deepcopy(status)))
        return copy.deepcopy(current)

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> bool:
        self._check(api_version, kind)
        self._fault("delete", kind, namespace, name)
        key = (api_version, kind, namespace, name)
        current = self.objects.get(key)
        if current is None:
            return False
        if uid is not None and current["metadata"].get("uid") != uid:
            return False  # 409 "Precondition failed: UID in precondition": Kube says False
        del self.objects[key]
        self.writes.append(Write("delete", kind, name, {"uid": uid} if uid else {}))
        if propagation is not None and kind == "Job":  # the garbage collector, at once
            job_uid = current["metadata"].get("uid")
            for other, obj in list(self.objects.items()):
                labels = obj["metadata"].get("labels") or {}
                if other[1] == "Pod" and labels.get(JOB_UID) == job_uid:
                    del self.objects[other]
        return True
