"""``llmcanary run``: the operator, on kopf."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import click
import kopf

from llmcanary.config import OperatorConfig
from llmcanary.observability.logs import quiet_child_events

if TYPE_CHECKING:
    from llmcanary.observability.metrics import OperatorMetrics

log = logging.getLogger(__name__)


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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on http://0.0.0.0:PORT/metrics; 0 turns them off"
    " [default: LLMCANARY_METRICS_PORT, else 0]. See docs/metrics.md.",
)
@click.option(
    "--peering",
    "peering_name",
    default=None,
    metavar="NAME",
    envvar="LLMCANARY_PEERING",
    help="Run beside other replicas: only the one with the highest --priority among those"
    " alive in kopf's peering object NAME (a ClusterKopfPeering with -A, a KopfPeering in each"
    " namespace otherwise) is active, the others wait. Without it: standalone.",
)
@click.option(
    "--priority",
    type=click.IntRange(min=0),
    default=None,
    envvar="LLMCANARY_PEERING_PRIORITY",
    help="Peering priority (with --peering). Default: a random one per process, so that"
    " replicas of one Deployment do not tie (kopf pauses every operator of a tie).",
)
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    log_format: str,
    verbose: bool,
    quiet: bool,
    liveness_endpoint: str | None,
    metrics_port: int | None,
    peering_name: str | None,
    priority: int | None,
) -> None:
    """Run the operator (reads LLMCANARY_* settings and KUBECONFIG)."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("name the namespaces to serve with -n, or pass -A for all")
    kopf.configure(verbose=verbose, quiet=quiet, log_format=kopf.LogFormat[log_format.upper()])
    if not verbose:
        quiet_child_events()
    import llmcanary.main  # noqa: F401  (registers the handlers)

    memo = kopf.Memo(own_metrics=serve_metrics(metrics_port))

    if peering_name is not None:
        priority = peering_priority() if priority is None else priority
        log.info(
            "peering %s with priority %d: the live replica with the highest priority works,"
            " the others wait (kopf logs when this one pauses or resumes)",
            peering_name,
            priority,
            extra={"peering": peering_name, "priority": priority},
        )
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespaces,
        standalone=peering_name is None,
        peering_name=peering_name,
        priority=priority,
        liveness_endpoint=liveness_endpoint,
        memo=memo,
    )


def serve_metrics(port: int | None) -> OperatorMetrics | None:
    """Start /metrics before the operator, so that a taken port stops it at once."""
    if port is None:
        port = OperatorConfig().metrics_port
    if not port:
        return None
    from prometheus_client import disable_created_metrics

    from llmcanary.observability.metrics import OperatorMetrics

    # No *_created series: half the lines, nothing lost. (prometheus_client leaves it untyped.)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    own_metrics = OperatorMetrics()
    try:
        own_metrics.serve(port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on port {port}: {exc.strerror or exc}; choose another"
            " --metrics-port (or LLMCANARY_METRICS_PORT), or 0 to turn metrics off"
        ) from exc
    log.info("serving Prometheus metrics on http://0.0.0.0:%d/metrics", port, extra={"port": port})
    return own_metrics


def peering_priority() -> int:
    """A random peering priority: two replicas tie with a chance of 1 in 2**31."""
    return random.SystemRandom().randint(1, 2**31 - 1)
