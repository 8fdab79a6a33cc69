"""``llmcanary preflight -f deployment.yaml``: the offline preflight, for a CI pipeline.

Exit status 0 when nothing failed, 1 when a check failed, 2 when the input is unusable.
Without a reachable cluster (or with ``--offline``) only the cluster-free checks run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from kubernetes import client
from kubernetes.config import ConfigException
from urllib3.exceptions import HTTPError as Urllib3Error

from llmcanary.builders.repository import MAX_CONFIG_BYTES, ListedModel, Listing
from llmcanary.cli.render import table
from llmcanary.kube.client import Kube, kubeconfig_namespace
from llmcanary.preflight.offline import Finding, Manifest, check, read_manifests
from llmcanary.problems import ReconcileError

REACH_TIMEOUT_S = 5
RESULT = {True: "ok", False: "FAIL", None: "-"}


def _connect(kubeconfig: str | None, context: str | None) -> tuple[Kube | None, str]:
    """A client for the cluster if one answers, and a line that says which."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        kube = Kube.from_kubeconfig(kubeconfig, context)
        client.VersionApi(kube.api_client).get_code(_request_timeout=REACH_TIMEOUT_S)
    except ConfigException as exc:
        return None, f"no cluster (no usable kubeconfig: {exc})"
    except (Urllib3Error, OSError) as exc:
        return None, f"no cluster (unreachable: {type(exc).__name__})"
    host = kube.api_client.configuration.host
    return kube, f"cluster {host}"


def _namespace(
    manifest: Manifest, flag: str | None, kubeconfig: str | None, ctx: str | None
) -> str:
    if flag:
        return flag
    if manifest.namespace:
        return manifest.namespace
    try:
        return kubeconfig_namespace(kubeconfig, ctx) or "default"
    except ConfigException:
        return "default"


_VERSION = re.compile(r"[1-9][0-9]*")


def list_repository(root: Path) -> Listing:
    """A local repository as the cluster's read lists it (``READ_SCRIPT``): every model
    directory (not hidden ones, such as ``.git``), its config.pbtxt, its version
    directories (numeric, not starting with 0: what Triton loads)."""
    models: dict[str, ListedModel] = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        if directory.name.startswith("."):
            continue
        model = ListedModel(directory.name)
        config_path = directory / "config.pbtxt"
        if config_path.is_file():
            try:
                size = config_path.stat().st_size
                if size > MAX_CONFIG_BYTES:
                    model = dataclasses.replace(model, too_large=size)
                else:
                    text = config_path.read_text(encoding="utf-8")
                    model = dataclasses.replace(model, config=text)
            except PermissionError:
                model = dataclasses.replace(model, unreadable=True)
            except UnicodeDecodeError:
                return Listing(error=f"{directory.name}: its config.pbtxt is not UTF-8 text")
        versions = [v.name for v in directory.iterdir() if v.is_dir()]
        numeric = sorted((v for v in versions if _VERSION.fullmatch(v)), key=int)
        models[directory.name] = dataclasses.replace(model, versions=tuple(numeric))
    return Listing(models=models)


def render(manifest: Manifest, namespace: str, where: str, findings: list[Finding]) -> str:
    lines = [f"LLMDeployment {namespace}/{manifest.name}  ({where})"]
    lines += table(
        ("CHECK", "RESULT", "DETAIL"),
        [(f.check, RESULT[f.ok], f.summary) for f in findings],
    )
    for finding in findings:
        if finding.rows:
            lines += ["", f"  {finding.check}:"]
            width = max(len(r) for r in finding.rows)
            header = [*finding.header, *([""] * (width - len(finding.header)))]
            rows = [[*r, *([""] * (width - len(r)))] for r in finding.rows]
            lines += [line for line in table(header, rows, indent="    ") if line.strip()]
    return "\n".join(lines)


@click.command()
@click.option(
    "-f",
    "--filename",
    "source",
    required=True,
    type=click.File("r"),
    help="YAML with one or more LLMDeployments ('-' reads stdin).",
)
@click.option("-n", "--namespace", default=None, help="Namespace (default: the manifest's).")
@click.option("--kubeconfig", default=None, metavar="PATH", help="Kubeconfig file.")
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option("--offline", is_flag=True, help="Do not contact any cluster.")
@click.option(
    "--repository",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A local copy of the model repository spec.model.repository names: its"
    " config.pbtxt files are read, the spec overlaid, an ensemble's steps followed, and"
    " all of them checked as Triton would.",
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def preflight(
    source: Any,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    offline: bool,
    repository: Path | None,
    output: str,
) -> None:
    """Check a manifest before it reaches the cluster: schema, GPU memory, environment diff.

    With a reachable cluster it also asks the API server to validate the manifest (a dry
    run), fits the model on the cluster's GPU nodes, and diffs it against the live stable
    revision. Exit status 1 when a check fails.
    """
    try:
        manifests = read_manifests(source.read())
    except ValueError as exc:
        raise click.UsageError(f"{source.name}: {exc}") from exc
    kube, where = (None, "offline") if offline else _connect(kubeconfig, context)
    listing = list_repository(repository) if repository is not None else None
    now = datetime.now(UTC)
    failed = False
    reports: list[dict[str, Any]] = []
    for manifest in manifests:
        ns = _namespace(manifest, namespace, kubeconfig, context)
        try:
            findings = check(manifest, kube, ns, now, listing)
        except ReconcileError as exc:
            raise click.ClickException(exc.message) from exc
        failed |= any(f.ok is False for f in findings)
        if output == "json":
            reports.append(
                {
                    "name": manifest.name,
                    "namespace": ns,
                    "cluster": where,
                    "checks": [dataclasses.asdict(f) for f in findings],
                }
            )
        else:
            click.echo(render(manifest, ns, where, findings))
            click.echo()
    if output == "json":
        click.echo(json.dumps(reports, indent=2))
    click.echo("preflight failed" if failed else "preflight passed", err=True)
    sys.exit(1 if failed else 0)
