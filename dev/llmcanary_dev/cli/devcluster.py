"""``llmcanary devcluster``: the local Kubernetes control plane (build, up, down, status, env)."""

from __future__ import annotations

import logging

import click

from llmcanary_dev import devcluster as dc

__all__ = ["devcluster"]


def _fail(err: Exception) -> click.ClickException:
    return click.ClickException(str(err))


@click.group("devcluster")
def devcluster() -> None:
    """A local Kubernetes control plane with simulated GPU nodes (etcd, kube-apiserver,
    controller manager, scheduler, KWOK), built from the Kubernetes Go modules.

    State lives in $LLMCANARY_DEVCLUSTER_DIR (default <repo>/.devcluster), binaries in
    $LLMCANARY_CACHE/bin (default ~/.cache/llmcanary/bin).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")


@devcluster.command()
def build() -> None:
    """Build the binaries (devcluster/build.sh; cached, minutes the first time)."""
    try:
        bin_dir = dc.ensure_built(force=True)
    except dc.DevClusterError as e:
        raise _fail(e) from e
    click.echo(f"binaries in {bin_dir}")


@devcluster.command()
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait.")
@click.option("--build/--no-build", default=True, show_default=True, help="Build if missing.")
def up(timeout: float, build: bool) -> None:
    """Start the cluster (idempotent) and wait until pods can be scheduled and run."""
    try:
        if build:
            dc.ensure_built()
        cluster = dc.up(timeout=timeout)
    except dc.DevClusterError as e:
        raise _fail(e) from e
    what = "started" if cluster.started else "already running"
    click.echo(f"dev cluster {what} in {cluster.elapsed:.1f}s: {cluster.server}")
    click.echo(f"export KUBECONFIG={cluster.kubeconfig}")


@devcluster.command()
@click.option("--purge", is_flag=True, help="Also delete the cluster's state (etcd, certs, logs).")
@click.option("--timeout", default=15.0, show_default=True, help="Seconds before SIGKILL.")
def down(purge: bool, timeout: float) -> None:
    """Stop every component (idempotent)."""
    stopped = dc.down(purge=purge, timeout=timeout)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        click.echo("state purged")


@devcluster.command()
def status() -> None:
    """Show the components, API server readiness and nodes (exit 1 unless all run)."""
    st = dc.status()
    click.echo(st.format())
    if not st.running:
        raise SystemExit(1)


@devcluster.command()
def env() -> None:
    """Print shell lines for the cluster: eval "$(llmcanary devcluster env)"."""
    click.echo(dc.env(), nl=False)
