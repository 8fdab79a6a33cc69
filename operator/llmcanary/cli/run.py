"""``llmcanary run``: the operator, on kopf."""

from __future__ import annotations

import click
import kopf


@click.command()
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="Namespace to serve (repeatable)."
)
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Serve every namespace (needs cluster RBAC)."
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "full", "json"]),
    default="full",
    show_default=True,
    help="json: one structured object per line, for log pipelines.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    metavar="URL",
    help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.",
)
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    log_format: str,
    verbose: bool,
    quiet: bool,
    liveness_endpoint: str | None,
) -> None:
    """Run the operator (reads LLMCANARY_* settings and KUBECONFIG)."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("name the namespaces to serve with -n, or pass -A for all")
    kopf.configure(verbose=verbose, quiet=quiet, log_format=kopf.LogFormat[log_format.upper()])
    import llmcanary.main  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=liveness_endpoint,
    )
