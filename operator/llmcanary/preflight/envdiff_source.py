"""The environment diff against the cluster: read both revisions, resolve their env, compare.

The comparing is :mod:`llmcanary.preflight.envdiff` (pure); this module only reads:
each revision's Deployment, its ``config.pbtxt`` ConfigMap, its pods (for the image
digest) and the ConfigMaps and Secrets its env refers to.

A Secret's value is decoded and digested in memory (:meth:`Masked.of`) and dropped at
once: it is never logged, put in an event, a status, an exception or a ``repr``. Reading
Secrets needs ``get`` on ``secrets`` in the namespace; without it a Secret-backed
variable reads ``(secret NAME/KEY not readable: ...)``, equal on both sides when both
refer to the same key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import EnvDifference
from llmcanary.builders import Owner
from llmcanary.builders.meta import config_map_name, deployment_name, revision_selector
from llmcanary.builders.repository import SERVED_KEY, staged_members
from llmcanary.kube.client import ObjectReader
from llmcanary.kube.errors import Forbidden
from llmcanary.preflight.envdiff import (
    TRITON_CONTAINER,
    Masked,
    RevisionView,
    ViewValue,
    diff_views,
    view_of,
)

__all__ = [
    "env_diff",
    "environment_diff",
    "read_revision_view",
    "resolve_env",
    "revision_view",
]

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # Not what the API server returns; digest the text itself, say nothing about it.
        return encoded.encode()


def _secret_digests(kube: ObjectReader, namespace: str, name: str) -> dict[str, Masked] | None:
    """Every key of a Secret as a digest; the Secret itself is not kept. None: no Secret."""
    secret = kube.get("v1", "Secret", namespace, name)
    if secret is None:
        return None
    data: Mapping[str, str] = secret.get("data") or {}
    digests = {key: Masked.of(_decode(value or "")) for key, value in data.items()}
    del secret, data
    return digests


def _ref(kind: str, selector: Mapping[str, Any]) -> tuple[str, str, str]:
    name, key = str(selector.get("name", "")), str(selector.get("key", ""))
    return name, key, f"{kind} {name}/{key}"


def resolve_env(
    kube: ObjectReader, namespace: str, container_env: Iterable[Mapping[str, Any]]
) -> dict[str, ViewValue]:
    """A container's ``env`` as the pod would see it, name -> value.

    ``value`` is the text; ``configMapKeyRef`` the ConfigMap's value, or ``(missing
    configmap NAME/KEY)``; ``secretKeyRef`` a :class:`Masked` digest of the value, or
    ``(missing secret NAME/KEY)``; ``fieldRef`` and ``resourceFieldRef`` the reference
    itself (``(fieldRef metadata.name)``), known only inside the pod.
    """
    config_maps: dict[str, dict[str, str] | None] = {}
    secrets: dict[str, dict[str, Masked] | Forbidden | None] = {}
    out: dict[str, ViewValue] = {}
    for var in container_env:
        name = str(var["name"])
        source: Mapping[str, Any] = var.get("valueFrom") or {}
        if not source:
            out[name] = str(var.get("value") or "")
        elif "configMapKeyRef" in source:
            cm_name, key, what = _ref("configmap", source["configMapKeyRef"])
            if cm_name not in config_maps:
                found = kube.get("v1", "ConfigMap", namespace, cm_name)
                config_maps[cm_name] = None if found is None else dict(found.get("data") or {})
            data = config_maps[cm_name]
            out[name] = data[key] if data is not None and key in data else f"(missing {what})"
        elif "secretKeyRef" in source:
            secret_name, key, what = _ref("secret", source["secretKeyRef"])
            if secret_name not in secrets:
                try:
                    secrets[secret_name] = _secret_digests(kube, namespace, secret_name)
                except Forbidden as denied:
                    secrets[secret_name] = denied
            digests = secrets[secret_name]
            if isinstance(digests, Forbidden):
                out[name] = f"({what} not readable: the operator may not get secrets)"
            elif digests is not None and key in digests:
                out[name] = digests[key]
            else:
                out[name] = f"(missing {what})"
        elif "fieldRef" in source:
            out[name] = f"(fieldRef {source['fieldRef'].get('fieldPath', '')})"
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            text = f"resourceFieldRef {ref.get('resource', '')}"
            if ref.get("containerName"):
                text += f" of {ref['containerName']}"
            if ref.get("divisor"):
                text += f" / {ref['divisor']}"
            out[name] = f"({text})"
        else:
            out[name] = f"(valueFrom {sorted(source)})"
    return out


def _image_digest(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The Triton image digest the pods report; several (a re-pushed tag) are all listed."""
    digests: set[str] = set()
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != TRITON_CONTAINER:
                continue
            match = _DIGEST.search(str(status.get("imageID") or ""))
            if match:
                digests.add(match.group())
    return ", ".join(sorted(digests)) or None


def revision_view(
    kube: ObjectReader,
    namespace: str,
    deployment: Mapping[str, Any],
    config_map: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> RevisionView:
    """One revision's view: its Deployment, its ConfigMap (None: missing; the served
    model's config and the other models it loads), and its pods; the env's ConfigMaps and
    Secrets are read here."""
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    triton = next((c for c in containers if c.get("name") == TRITON_CONTAINER), None)
    if triton is None and containers:
        triton = containers[0]
    env = resolve_env(kube, namespace, (triton or {}).get("env") or [])
    data: Mapping[str, str] = (config_map or {}).get("data") or {}
    return view_of(deployment, data.get(SERVED_KEY), env, _image_digest(pods), staged_members(data))


def read_revision_view(
    kube: ObjectReader, namespace: str, name: str, revision: str
) -> RevisionView:
    """The view of revision ``revision`` of LLMDeployment ``name``, read from the cluster.

    Raises LookupError when its Deployment does not exist.
    """
    deployment = kube.get("apps/v1", "Deployment", namespace, deployment_name(name, revision))
    if deployment is None:
        raise LookupError(
            f"Deployment {namespace}/{deployment_name(name, revision)} of revision {revision}"
            " does not exist"
        )
    config_map = kube.get("v1", "ConfigMap", namespace, config_map_name(name, revision))
    selector = ",".join(f"{k}={v}" for k, v in revision_selector(name, revision).items())
    pods = kube.list("v1", "Pod", namespace, label_selector=selector)
    return revision_view(kube, namespace, deployment, config_map, pods)


def env_diff(
    kube: ObjectReader,
    namespace: str,
    name: str,
    stable_revision: str,
    canary_revision: str,
    allowed_patterns: Iterable[str],
) -> list[EnvDifference]:
    """The differences between two revisions of LLMDeployment ``name``, sorted by key."""
    stable = read_revision_view(kube, namespace, name, stable_revision)
    canary = read_revision_view(kube, namespace, name, canary_revision)
    differences = diff_views(stable, canary, allowed_patterns)
    log.debug(
        "environment diff",
        extra={
            "namespace": namespace,
            "llmdeployment": name,
            "stable": stable_revision,
            "canary": canary_revision,
            "differences": [d.key for d in differences],
            "offending": [d.key for d in differences if not d.allowed],
        },
    )
    return differences


def environment_diff(
    kube: ObjectReader,
    owner: Owner,
    spec: LLMDeploymentSpec,
    stable_revision: str,
    canary_revision: str,
) -> list[EnvDifference]:
    """:func:`env_diff` for an LLMDeployment, with its ``preflight.envDiff.allowedDifferences``.

    Raises LookupError when either revision's Deployment does not exist.
    """
    return env_diff(
        kube,
        owner.namespace,
        owner.name,
        stable_revision,
        canary_revision,
        spec.preflight.env_diff.allowed_differences,
    )
