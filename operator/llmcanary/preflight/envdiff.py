"""The environment diff: the stable and canary revisions side by side, field by field.

PURE: this module sees only dicts and text handed to it. Each revision is flattened into
a :data:`RevisionView`, a flat mapping from a key users can name in
``spec.preflight.envDiff.allowedDifferences`` to the value in that revision:

=============================  ==========================================================
``image``                      the Triton container's image
``image.digest``               the digest its pods report (compared only when both do)
``args``                       the tritonserver arguments, shell-quoted
``env.NAME``                   an environment variable, ``valueFrom`` resolved
``resources.gpus|cpu|memory``  the Triton container's limits (``resources.NAME`` others)
``model.name|version|...``     ``model.name``, ``model.version``, ``model.repository``
``nodeSelector.KEY``           one node selector entry
``tolerations``                the tolerations, as JSON
``triton.PATH``                a ``config.pbtxt`` field of the served model, camelCase:
                               ``triton.dynamicBatching.maxQueueDelayMicroseconds``,
                               ``triton.instanceGroup.kind``, ``triton.parameters.KEY``
``models.NAME.PATH``           the same of another model the revision loads (an
                               ensemble's step): ``models.tensorrt_llm.parameters.KEY``;
                               ``models.NAME`` alone when it has no ``config.pbtxt``
=============================  ==========================================================

A pattern allows a key when it matches it (:func:`fnmatch.fnmatchcase`, case-sensitive)
or names one of its parents: ``image`` allows ``image.digest``, ``triton.dynamicBatching``
allows every field in that block.

Values from Secrets are :class:`Masked`: a digest of the value, compared and never
shown. A difference involving one reads ``(secret)`` / ``(secret, changed)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, TypeAlias

from llmcanary.api.status import EnvDifference
from llmcanary.builders.triton_config import flatten_model_config, parse_model_config
from llmcanary.builders.workload import (
    ANNOTATION_MODEL_NAME,
    ANNOTATION_MODEL_REPOSITORY,
    ANNOTATION_MODEL_VERSION,
)

__all__ = [
    "MAX_SHOWN",
    "SECRET",
    "SECRET_CHANGED",
    "TRITON_CONTAINER",
    "Masked",
    "RevisionView",
    "ViewValue",
    "describe",
    "diff_views",
    "is_allowed",
    "offending",
    "parse_config_pbtxt",
    "view_of",
]

SECRET = "(secret)"
SECRET_CHANGED = "(secret, changed)"
#: Longer values are cut to this many characters in a difference (status stays small).
MAX_SHOWN = 256
TRITON_CONTAINER = "triton"
GPU_RESOURCE = "nvidia.com/gpu"
# Keys whose value is only known once pods run: a side that does not report one is
# not a difference.
_ONLY_WHEN_BOTH_KNOWN = frozenset({"image.digest"})


class Masked:
    """A Secret's value, kept only as a SHA-256 digest: equal or not, never shown.

    ``repr``, ``str`` and formatting show ``(secret)``; the digest itself never leaves
    this object except through comparison.
    """

    __slots__ = ("_digest",)

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    @classmethod
    def of(cls, value: bytes | str) -> Masked:
        """Digest ``value`` in memory; the caller drops the value."""
        raw = value.encode() if isinstance(value, str) else value
        return cls(hashlib.sha256(raw).digest())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Masked):
            return NotImplemented
        return hmac.compare_digest(self._digest, other._digest)

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"Masked({SECRET!r})"

    def __str__(self) -> str:
        return SECRET

    def __format__(self, spec: str) -> str:
        return format(SECRET, spec)


ViewValue: TypeAlias = str | Masked
#: One revision, flattened: key -> value (plain text, or a masked Secret value).
RevisionView: TypeAlias = dict[str, ViewValue]


# --- config.pbtxt -------------------------------------------------------------------------


def parse_config_pbtxt(text: str, prefix: str = "triton") -> dict[str, str]:
    """A model configuration in protobuf text format, read with Triton's schema and
    flattened to ``prefix.camelPath`` keys (:func:`flatten_model_config`). Raises
    ValueError (:class:`ModelConfigError`) on text the schema cannot read."""
    return dict(flatten_model_config(parse_model_config(text), prefix))


# --- the view of one revision ---------------------------------------------------------------


def _triton_container(pod_spec: Mapping[str, Any]) -> Mapping[str, Any]:
    containers: Sequence[Mapping[str, Any]] = pod_spec.get("containers") or []
    for container in containers:
        if container.get("name") == TRITON_CONTAINER:
            return container
    return containers[0] if containers else {}


def _init_env(pod_spec: Mapping[str, Any]) -> dict[str, str]:
    for container in pod_spec.get("initContainers") or []:
        if container.get("name") == "stage-model":
            return {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
    return {}


def _model_keys(deployment: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> dict[str, str]:
    """``model.*`` from the Deployment's annotations; name and repository fall back to the
    staging container (a Deployment written before the annotations existed)."""
    annotations: Mapping[str, str] = (deployment.get("metadata") or {}).get("annotations") or {}
    out: dict[str, str] = {}
    staged = _init_env(pod_spec)
    name = annotations.get(ANNOTATION_MODEL_NAME, staged.get("MODEL_NAME"))
    if name is not None:
        out["model.name"] = name
    if ANNOTATION_MODEL_VERSION in annotations:
        out["model.version"] = annotations[ANNOTATION_MODEL_VERSION]
    repository = annotations.get(ANNOTATION_MODEL_REPOSITORY)
    if repository is None and name is not None and "MODEL_SOURCE" in staged:
        repository = _repository_from_source(pod_spec, staged["MODEL_SOURCE"], name)
    if repository is not None:
        out["model.repository"] = repository
    return out


def _repository_from_source(pod_spec: Mapping[str, Any], source: str, name: str) -> str:
    for volume in pod_spec.get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if volume.get("name") == "model-source" and claim:
            mounts = next(
                (
                    c.get("volumeMounts") or []
                    for c in pod_spec.get("initContainers") or []
                    if c.get("name") == "stage-model"
                ),
                [],
            )
            sub = next((m.get("subPath") for m in mounts if m.get("name") == "model-source"), None)
            return f"pvc://{claim}/{sub}" if sub else f"pvc://{claim}"
    return source.removesuffix(f"/{name}")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def view_of(
    deployment: Mapping[str, Any],
    config_pbtxt: str | None,
    resolved_env: Mapping[str, ViewValue],
    image_digest: str | None,
    members: Mapping[str, str | None] | None = None,
) -> RevisionView:
    """One revision, flattened: its Deployment (as the builders wrote it, or as read back),
    the ``config.pbtxt`` of its ConfigMap (None: there is none), the Triton container's
    env with every ``valueFrom`` already resolved, the image digest its pods report, and
    the other models it loads with their configs (``staged_members``)."""
    pod_spec: Mapping[str, Any] = deployment["spec"]["template"]["spec"]
    triton = _triton_container(pod_spec)
    view: RevisionView = {"image": str(triton.get("image", ""))}
    if image_digest:
        view["image.digest"] = image_digest
    view["args"] = shlex.join(str(a) for a in triton.get("args") or [])
    for name, value in resolved_env.items():
        view[f"env.{name}"] = value
    resources: Mapping[str, Any] = triton.get("resources") or {}
    amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    view["resources.gpus"] = str(amounts.pop(GPU_RESOURCE, "0"))
    for resource, amount in amounts.items():
        view[f"resources.{resource}"] = str(amount)
    view.update(_model_keys(deployment, pod_spec))
    for label, value in (pod_spec.get("nodeSelector") or {}).items():
        view[f"nodeSelector.{label}"] = str(value)
    tolerations = pod_spec.get("tolerations") or []
    if tolerations:
        view["tolerations"] = _canonical_json(tolerations)
    view.update(_config_view("triton", config_pbtxt))
    for name, text in (members or {}).items():
        view.update(_config_view(f"models.{name}", text))
    return view


def _config_view(prefix: str, text: str | None) -> dict[str, str]:
    if text is None:
        return {prefix: "(no config.pbtxt)"}
    try:
        return parse_config_pbtxt(text, prefix)
    except ValueError as exc:
        return {prefix: f"(unreadable: {exc})"}


# --- the diff ---------------------------------------------------------------------------------


def is_allowed(key: str, patterns: Iterable[str]) -> bool:
    """A pattern matches the key, or names one of its parents (``image`` -> ``image.digest``)."""
    return any(fnmatchcase(key, p) or key.startswith(f"{p}.") for p in patterns)


def _shown(value: ViewValue | None, *, changed: bool = False) -> str | None:
    if value is None:
        return None
    if isinstance(value, Masked):
        return SECRET_CHANGED if changed else SECRET
    return value if len(value) <= MAX_SHOWN else value[: MAX_SHOWN - 1] + "…"


def diff_views(
    stable: Mapping[str, ViewValue],
    canary: Mapping[str, ViewValue],
    allowed_patterns: Iterable[str],
) -> list[EnvDifference]:
    """Every key whose value differs between the revisions, sorted by key.

    A key present on one side only is a difference with None on the other. Masked values
    are compared by digest and shown only as ``(secret)`` (stable) and ``(secret,
    changed)`` (canary).
    """
    patterns = list(allowed_patterns)
    out: list[EnvDifference] = []
    for key in sorted(stable.keys() | canary.keys()):
        old, new = stable.get(key), canary.get(key)
        if old == new:
            continue
        if key in _ONLY_WHEN_BOTH_KNOWN and (old is None or new is None):
            continue
        masked = isinstance(old, Masked) or isinstance(new, Masked)
        out.append(
            EnvDifference(
                key=key,
                stable=_shown(old),
                canary=_shown(new, changed=isinstance(old, Masked)),
                allowed=is_allowed(key, patterns),
                masked=masked,
            )
        )
    return out


def offending(differences: Iterable[EnvDifference]) -> list[EnvDifference]:
    """The differences no pattern allows: any of them fails the check."""
    return [d for d in differences if not d.allowed]


def describe(differences: Iterable[EnvDifference]) -> str:
    """``key: old -> new`` for each difference, ``;``-separated (absent reads ``(none)``)."""
    return "; ".join(
        f"{d.key}: {d.stable if d.stable is not None else '(none)'}"
        f" -> {d.canary if d.canary is not None else '(none)'}"
        for d in differences
    )
