"""``llmcanary stack up|down|status|serve``: the local cluster with a real data plane."""

from __future__ import annotations

import json
import logging

import click
import kopf

from llmcanary_dev.localstack import stack as local


@click.group()
def stack() -> None:
    """The local stack: dev cluster, real Triton per pod, Prometheus, Traefik."""


@stack.command()
@click.option("--timeout", default=180, show_default=True, help="Seconds to wait.")
def up(timeout: int) -> None:
    """Start the cluster and the data plane (idempotent); print their addresses."""
    try:
        info = local.up(local.StackSettings.from_env(), timeout=timeout)
    except local.StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"gateway     {info['gateway']}")
    inference = info.get("inference_gateway", "(not in this stack: llmcanary stack down; up)")
    click.echo(f"inference   {inference}  (InferencePool backends)")
    click.echo(f"prometheus  {info['prometheus']}")
    click.echo(f"kubeconfig  {info['kubeconfig']}")


@stack.command()
@click.option("--keep-cluster", is_flag=True, help="Stop only the data plane.")
def down(keep_cluster: bool) -> None:
    """Stop the data plane (every Triton, Traefik, Prometheus) and the cluster."""
    local.down(local.StackSettings.from_env(), keep_cluster=keep_cluster)


@stack.command()
def status() -> None:
    """Whether the data plane runs, and where."""
    info = local.running(local.StackSettings.from_env())
    if info is None:
        click.echo("the data plane is not running (llmcanary stack up)")
        raise SystemExit(1)
    click.echo(json.dumps(info, indent=2))


@stack.command(hidden=True)
def serve() -> None:
    """Run the data plane in the foreground (what `stack up` starts in the background)."""
    # The operator's own structured logs (kopf's JSON lines, extras included).
    kopf.configure(log_format=kopf.LogFormat.JSON)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    local.serve(local.StackSettings.from_env())
