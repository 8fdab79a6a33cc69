"""The preflight a CI pipeline can run on a manifest before it reaches the cluster.

``llmcanary preflight -f deployment.yaml`` checks what can be known without the operator:

- **schema**: the spec against the same rules the CRD enforces (the pydantic models mirror
  its CEL rules), then, when a cluster is reachable, a server-side dry-run apply, so the
  API server's own validation has the last word;
- **GPU memory**: the estimate per pod, and with a cluster the fit on its GPU nodes;
- **environment diff**: the manifest's revision against the live stable revision, read
  from the cluster, with the manifest's ``allowedDifferences``.

Dependencies are listed but not probed: the operator probes them from inside the cluster,
whose network a CI runner does not share.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec, describe_errors
from llmcanary.builders import Owner
from llmcanary.builders.repository import Listing, plan_revision
from llmcanary.builders.triton_checks import spec_config_problems
from llmcanary.builders.workload import build_config_map, build_deployment
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import Forbidden, MissingApi, api_message
from llmcanary.preflight.envdiff import diff_views, offending
from llmcanary.preflight.envdiff_source import read_revision_view, revision_view
from llmcanary.preflight.gpu import effective_max_batch_size, estimate
from llmcanary.preflight.gpu_cluster import check_gpu_fit
from llmcanary.rollout.revision import revision_of

log = logging.getLogger(__name__)

# A placeholder owner for objects built only to be compared, never written.
_NO_UID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Finding:
    """One check's result: ``ok`` is None when it could not run or does not apply."""

    check: str
    ok: bool | None
    summary: str
    rows: Sequence[Sequence[str]] = ()  # details, one per line
    header: Sequence[str] = ()


@dataclass(frozen=True)
class Manifest:
    name: str
    namespace: str | None
    document: dict[str, Any]


class _KubectlLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: PyYAML follows YAML 1.1, where ``7e9`` (no dot) is a
    string; kubectl reads a number, and the models take no numeric strings."""


_KubectlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_documents(text: str) -> list[Any]:
    """The documents of a YAML stream, numbers read as kubectl reads them."""
    return [d for d in yaml.load_all(text, Loader=_KubectlLoader) if d is not None]


def read_manifests(text: str) -> list[Manifest]:
    """The LLMDeployments in a YAML stream (other kinds are skipped).

    Raises ValueError when the text is not YAML or holds no LLMDeployment.
    """
    try:
        documents = yaml_documents(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    found = []
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        if doc.get("apiVersion") != API_VERSION:
            raise ValueError(f"apiVersion {doc.get('apiVersion')!r}: expected {API_VERSION}")
        meta = doc.get("metadata") or {}
        if not meta.get("name"):
            raise ValueError(f"an {KIND} without metadata.name")
        found.append(Manifest(str(meta["name"]), meta.get("namespace"), doc))
    if not found:
        raise ValueError(f"no {KIND} ({API_VERSION}) in the input")
    return found


def validate(manifest: Manifest) -> tuple[LLMDeploymentSpec | None, Finding]:
    """The spec, if it is valid, and the schema finding."""
    try:
        spec = LLMDeploymentSpec.model_validate(manifest.document.get("spec") or {})
    except ValidationError as exc:
        errors = describe_errors(exc).split("; ")
        return None, Finding(
            "schema",
            False,
            f"{len(errors)} invalid field(s)",
            rows=[(e,) for e in errors],
        )
    return spec, Finding("schema", True, f"valid; revision {revision_of(spec)}")


def server_validation(kube: Kube, manifest: Manifest, namespace: str) -> Finding:
    """A server-side dry-run apply: the API server's schema, CEL rules and admission."""
    doc = dict(manifest.document)
    doc["metadata"] = {**(doc.get("metadata") or {}), "namespace": namespace}
    doc.pop("status", None)
    try:
        kube.apply(doc, dry_run=True)
    except MissingApi:
        return Finding(
            "schema (server)", False, f"the cluster does not serve {KIND}: install the CRD"
        )
    except Forbidden:
        return Finding(
            "schema (server)", None, f"not checked: you may not patch {KIND} in {namespace}"
        )
    except ApiException as exc:
        if exc.status in (400, 422):
            return Finding("schema (server)", False, api_message(exc))
        raise
    return Finding("schema (server)", True, "accepted by the API server (dry run)")


def model_config(spec: LLMDeploymentSpec, listing: Listing | None = None) -> Finding:
    """What Triton would refuse in what the revision loads.

    Without ``listing`` only the spec is checked (what the config rendered from it alone
    would be: a model without a config.pbtxt of its own). With it (a local copy of the
    repository, ``--repository``), the plan the operator makes from its read of the
    repository: the served model's own config with the spec overlaid, an ensemble's steps
    with theirs, every check; and the table of what each model loads."""
    problems = spec_config_problems(spec)
    if listing is None:
        if problems:
            return Finding("model config", False, "; ".join(problems))
        return Finding("model config", True, "Triton would load the rendered config.pbtxt")
    plan = plan_revision(spec, listing)
    problems += [str(p) for p in plan.problems]
    rows = [_plan_row(spec, listing, name, text) for name, text in plan.configs.items()]
    header = ("MODEL", "ROLE", "CONFIG")
    if problems:
        return Finding("model config", False, "; ".join(problems), rows=rows, header=header)
    summary = f"Triton would load the repository's {len(plan.configs)} model(s) as planned"
    return Finding("model config", True, summary, rows=rows, header=header)


def _plan_row(
    spec: LLMDeploymentSpec, listing: Listing, name: str, text: str | None
) -> tuple[str, str, str]:
    own = listing.models[name].config is not None
    if name == spec.model.name:
        config = "its config.pbtxt, the spec overlaid" if own else "rendered from the spec"
        return name, "served", config
    return name, "ensemble step", "its config.pbtxt" if text is not None else "auto-complete"


def gpu_memory(
    spec: LLMDeploymentSpec, kube: Kube | None, namespace: str, now: datetime
) -> Finding:
    checks = spec.preflight.gpu_memory
    sizing = spec.model.sizing
    if not checks.enabled:
        return Finding("gpu memory", None, "preflight.gpuMemory.enabled is false")
    if sizing is None:
        return Finding("gpu memory", None, "not estimated: model.sizing is not set")
    est = estimate(sizing, effective_max_batch_size(spec), checks.headroom_percent)
    rows = [
        ("weights", f"{est.weights_gib:.1f} GiB"),
        ("KV cache", f"{est.kv_cache_gib:.1f} GiB" if est.kv_bytes_per_token else "not counted"),
        ("headroom", f"{est.headroom_percent:g}%"),
        ("per pod", f"{est.required_gib:.1f} GiB on {spec.resources.gpus} GPU(s)"),
    ]
    if kube is None:
        summary = f"needs {est.required_gib:.1f} GiB per pod (no cluster: fit not checked)"
        return Finding("gpu memory", None, summary, rows, ("", "estimate"))
    fit = check_gpu_fit(kube, namespace, spec, now)
    return Finding("gpu memory", fit.fits, fit.message, rows, ("", "estimate"))


def environment_diff(
    kube: Kube, manifest: Manifest, spec: LLMDeploymentSpec, namespace: str
) -> Finding:
    """The manifest against the live stable revision of the same LLMDeployment."""
    live = kube.get(API_VERSION, KIND, namespace, manifest.name)
    stable = ((live or {}).get("status") or {}).get("stableRevision")
    if live is None or not stable:
        return Finding("env diff", None, f"no live stable revision of {namespace}/{manifest.name}")
    revision = revision_of(spec)
    if revision == stable:
        return Finding("env diff", True, f"same revision as the live stable one ({stable})")
    owner = Owner(
        name=manifest.name, namespace=namespace, uid=str(live["metadata"].get("uid") or _NO_UID)
    )
    canary = revision_view(
        kube,
        namespace,
        build_deployment(owner, spec, revision, "canary", 0),
        build_config_map(owner, spec, revision),
        [],
    )
    try:
        stable_view = read_revision_view(kube, namespace, manifest.name, stable)
    except LookupError as exc:
        return Finding("env diff", None, f"not checked: {exc}")
    differences = diff_views(stable_view, canary, spec.preflight.env_diff.allowed_differences)
    refused = offending(differences)
    rows = [
        (d.key, d.stable or "-", d.canary or "-", "allowed" if d.allowed else "NOT ALLOWED")
        for d in differences
    ]
    header = ("key", f"stable {stable}", f"this {revision}", "")
    if refused:
        keys = ", ".join(d.key for d in refused)
        summary = (
            f"{len(refused)} difference(s) outside preflight.envDiff.allowedDifferences: {keys}"
        )
        return Finding("env diff", False, summary, rows, header)
    return Finding("env diff", True, f"{len(differences)} difference(s), all allowed", rows, header)


def dependencies(spec: LLMDeploymentSpec) -> Finding:
    deps = spec.preflight.dependencies
    if not deps:
        return Finding("dependencies", None, "none declared")
    return Finding(
        "dependencies",
        None,
        f"{len(deps)} declared; the operator probes them from inside the cluster",
        rows=[
            (d.name, d.url, f"{d.timeout_milliseconds} ms", f"expect {d.expect_status}")
            for d in deps
        ],
    )


def check(
    manifest: Manifest,
    kube: Kube | None,
    namespace: str,
    now: datetime,
    repository: Listing | None = None,
) -> list[Finding]:
    """Every offline check of one manifest. With ``kube`` None, only what needs no cluster;
    with ``repository``, the model config check reads it."""
    spec, schema = validate(manifest)
    findings = [schema]
    if spec is None:
        return findings
    if kube is not None:
        findings.append(server_validation(kube, manifest, namespace))
    findings.append(model_config(spec, repository))
    findings.append(gpu_memory(spec, kube, namespace, now))
    if kube is not None:
        findings.append(environment_diff(kube, manifest, spec, namespace))
    else:
        findings.append(Finding("env diff", None, "no cluster: nothing to compare with"))
    findings.append(dependencies(spec))
    return findings
