"""``llmcanary demo``: the local cluster, the operator and the example, until it is Stable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from llmcanary.devcluster import cluster as devcluster
from llmcanary.devcluster.paths import Settings, find_repo_root

DEMO_NAMESPACE = "llmcanary-demo"


def _kubectl(settings: Settings, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(settings.tool("kubectl")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=False,
    )
    if done.returncode != 0:
        raise click.ClickException(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@click.command()
@click.option("--timeout", default=180, show_default=True, help="Seconds to wait for Stable.")
@click.option(
    "--example",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="LLMDeployment to apply (default: examples/tiny-llm.yaml).",
)
def demo(timeout: int, example: Path | None) -> None:
    """Start the local cluster and the operator, apply the example, watch it reach Stable."""
    root = find_repo_root()
    example = example or root / "examples" / "tiny-llm.yaml"
    settings = Settings.from_env()
    click.echo(
        "==> local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    )
    devcluster.ensure_built(settings)
    started = time.monotonic()
    cluster = devcluster.up(settings)
    kubeconfig = cluster.kubeconfig
    click.echo(f"    up in {time.monotonic() - started:.1f}s, kubeconfig {kubeconfig}")
    click.echo(_kubectl(settings, kubeconfig, "get", "nodes", "-L", "nvidia.com/gpu.product"))

    click.echo("==> the LLMDeployment CRD")
    _kubectl(
        settings,
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(root / "crds"),
    )
    _kubectl(
        settings,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "crd/llmdeployments.llmcanary.io",
    )
    manifest = _kubectl(
        settings,
        kubeconfig,
        "create",
        "namespace",
        DEMO_NAMESPACE,
        "--dry-run=client",
        "-o",
        "yaml",
    )
    _kubectl(settings, kubeconfig, "apply", "-f", "-", stdin=manifest)

    log_path = settings.state_dir / "logs" / "operator-demo.log"
    click.echo(f"==> the operator (llmcanary run -n {DEMO_NAMESPACE}), log {log_path}")
    with log_path.open("ab") as log:
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmcanary",
                "run",
                "-n",
                DEMO_NAMESPACE,
                "--log-format",
                "json",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "LLMCANARY_RESYNC_SECONDS": "10"},
        )
    try:
        click.echo(f"==> kubectl apply -f {example}")
        name = _kubectl(
            settings,
            kubeconfig,
            "apply",
            "-n",
            DEMO_NAMESPACE,
            "-f",
            str(example),
            "-o",
            "jsonpath={.metadata.name}",
        )
        _watch_until_stable(settings, kubeconfig, name, timeout)
        click.echo(
            _kubectl(
                settings,
                kubeconfig,
                "get",
                "deploy,svc,cm,httproute,pods",
                "-n",
                DEMO_NAMESPACE,
                "-l",
                f"llmcanary.io/deployment={name}",
            )
        )
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    click.echo(
        "The cluster is still up. To look around:\n"
        '  eval "$(llmcanary devcluster env)"\n'
        f"  kubectl get llmd -n {DEMO_NAMESPACE}\n"
        "Stop it with `llmcanary devcluster down` (or `make down`)."
    )


def _watch_until_stable(settings: Settings, kubeconfig: Path, name: str, timeout: int) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        table = _kubectl(settings, kubeconfig, "get", "llmd", name, "-n", DEMO_NAMESPACE)
        if table != last:
            click.echo(table.rstrip())
            last = table
        obj = json.loads(
            _kubectl(settings, kubeconfig, "get", "llmd", name, "-n", DEMO_NAMESPACE, "-o", "json")
        )
        if obj.get("status", {}).get("phase") == "Stable":
            click.echo(f"==> {name} is Stable")
            return
        time.sleep(1)
    raise click.ClickException(
        f"{name} did not reach Stable in {timeout}s:"
        f" see {settings.state_dir / 'logs' / 'operator-demo.log'}"
    )
