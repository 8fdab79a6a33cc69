"""``llmcanary status|promote|abort|retry|pause|resume``: watch and steer a rollout.

The commands only read the LLMDeployment and write its annotations (JSON merge patch); the
operator acts on them. Each request annotation acts once per distinct value, so every call
writes a new timestamp.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException
from urllib3.exceptions import HTTPError as Urllib3Error

from llmcanary.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESUME,
    ANNOTATION_RETRY,
    API_VERSION,
    KIND,
)
from llmcanary.cli.render import render_status
from llmcanary.kube.client import Kube, kubeconfig_namespace
from llmcanary.kube.errors import Forbidden, MissingApi, api_message

__all__ = ["COMMANDS", "PluginAwareGroup", "request_time"]

F = TypeVar("F", bound=Callable[..., Any])
PLUGIN_PREFIX = "kubectl-"


class PluginAwareGroup(click.Group):
    """Reads ``kubectl llmcanary ...`` in help and usage when run as the kubectl plugin."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("prog_name") is None:
            invoked = Path(sys.argv[0]).name if sys.argv else ""
            if invoked.startswith(PLUGIN_PREFIX):
                kwargs["prog_name"] = "kubectl " + invoked.removeprefix(PLUGIN_PREFIX)
        return super().main(*args, **kwargs)


def request_time() -> str:
    """Now, UTC, RFC 3339 with microseconds: a new value for every request."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Target:
    name: str
    namespace: str
    kubeconfig: str | None
    context: str | None

    def __str__(self) -> str:
        return f"{KIND} {self.namespace}/{self.name}"


def _prog() -> str:
    """The name the user typed: ``llmcanary`` or ``kubectl llmcanary``."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().info_name if ctx else None) or "llmcanary"


def _unreachable(exc: Exception) -> str:
    reason = str(getattr(exc, "reason", None) or exc)
    if "object at 0x" in reason:  # "<HTTPSConnection object at 0x..>: Failed to establish..."
        reason = reason.split(">: ", 1)[-1]
    return reason


@contextmanager
def _cluster_errors(target: Target, verb: str) -> Iterator[None]:
    """Every failure becomes one line on stderr and exit status 1, never a traceback."""
    try:
        yield
    except click.ClickException:
        raise
    except ConfigException as exc:
        raise click.ClickException(
            f"no usable kubeconfig ({exc}): pass --kubeconfig/--context or set KUBECONFIG"
        ) from exc
    except MissingApi as exc:
        raise click.ClickException(
            f"the cluster does not serve {KIND} ({API_VERSION}): install the CRD"
            " (kubectl apply --server-side -f crds/)"
        ) from exc
    except Forbidden as exc:
        detail = api_message(exc.__cause__) if isinstance(exc.__cause__, ApiException) else ""
        raise click.ClickException(
            f"forbidden: you may not {verb} {KIND} {target.name!r} in namespace"
            f" {target.namespace!r}" + (f" ({detail})" if detail else "")
        ) from exc
    except ApiException as exc:
        if exc.status == 401:
            message = "unauthorized: the kubeconfig's credentials were refused"
        else:
            message = f"the API server answered {exc.status}: {api_message(exc)}"
        raise click.ClickException(message) from exc
    except (Urllib3Error, OSError) as exc:
        raise click.ClickException(
            f"cannot reach the Kubernetes API server: {_unreachable(exc)}"
            " (is the cluster up? check --kubeconfig/--context)"
        ) from exc


def _connect(target: Target, verb: str) -> Kube:
    # urllib3 would log each retry of a refused connection; the error says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    with _cluster_errors(target, verb):
        return Kube.from_kubeconfig(target.kubeconfig, target.context)


def _not_found(target: Target) -> click.ClickException:
    return click.ClickException(
        f"{target} not found (kubectl get llmd -n {target.namespace} lists them)"
    )


def _get(kube: Kube, target: Target) -> dict[str, Any]:
    with _cluster_errors(target, "get"):
        found = kube.get(API_VERSION, KIND, target.namespace, target.name)
    if found is None:
        raise _not_found(target)
    return found


def _annotate(target: Target, annotations: dict[str, str | None]) -> dict[str, Any]:
    kube = _connect(target, "patch")
    with _cluster_errors(target, "patch"):
        patched = kube.patch(
            API_VERSION,
            KIND,
            target.namespace,
            target.name,
            {"metadata": {"annotations": annotations}},
        )
    if patched is None:
        raise _not_found(target)
    return patched


def _hint(target: Target) -> None:
    ns = f" -n {target.namespace}"
    click.echo(
        f"follow it: {_prog()} status {target.name}{ns} -w"
        f"   (or: kubectl get llmd {target.name}{ns} -w)"
    )


def _warn(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _target_options(fn: F) -> F:
    """NAME and the options that say which cluster, context and namespace."""
    decorators = [
        click.argument("name"),
        click.option(
            "-n",
            "--namespace",
            default=None,
            help="Namespace (default: the kubeconfig context's, else 'default').",
        ),
        click.option(
            "--kubeconfig",
            default=None,
            metavar="PATH",
            help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
        ),
        click.option(
            "--context", default=None, help="Kubeconfig context (default: the current one)."
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def _target(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None
) -> Target:
    target = Target(name, namespace or "default", kubeconfig, context)
    missing = [p for p in (kubeconfig or "").split(os.pathsep) if p and not Path(p).exists()]
    if missing:
        raise click.ClickException(f"kubeconfig {missing[0]} does not exist")
    if namespace:
        return target
    with _cluster_errors(target, "read"):
        found = kubeconfig_namespace(kubeconfig, context)
    return Target(name, found or "default", kubeconfig, context)


def _request(annotation: str, what: str, target: Target) -> None:
    value = request_time()
    obj = _annotate(target, {annotation: value})
    click.echo(f"{what} requested for {target}: {annotation}={value}")
    status = _status(obj)
    if annotation == ANNOTATION_RETRY and not status.get("rolledBackRevision"):
        _warn("no rolled-back revision is recorded; the operator may have nothing to retry")
    if annotation in (ANNOTATION_PROMOTE, ANNOTATION_ABORT) and not status.get("canaryRevision"):
        phase = status.get("phase") or "unknown"
        _warn(f"no canary is in progress (phase {phase}); the request may have no effect")
    _hint(target)


@click.command()
@_target_options
def promote(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Skip the remaining steps and promote the canary now (sets llmcanary.io/promote)."""
    _request(ANNOTATION_PROMOTE, "promotion", _target(name, namespace, kubeconfig, context))


@click.command()
@_target_options
def abort(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Roll the canary back now: weight 0, canary scaled down (sets llmcanary.io/abort)."""
    _request(ANNOTATION_ABORT, "abort", _target(name, namespace, kubeconfig, context))


@click.command()
@_target_options
def retry(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Try a rolled-back revision again (sets llmcanary.io/retry)."""
    _request(ANNOTATION_RETRY, "retry", _target(name, namespace, kubeconfig, context))


@click.command()
@_target_options
def pause(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Hold the rollout where it is (sets llmcanary.io/paused=true)."""
    target = _target(name, namespace, kubeconfig, context)
    obj = _annotate(target, {ANNOTATION_PAUSED: "true"})
    click.echo(f"pause requested for {target}: {ANNOTATION_PAUSED}=true")
    if (obj.get("spec") or {}).get("paused") is True:
        _warn("spec.paused is already true: the rollout was already held by its spec")
    click.echo(f"undo with: {_prog()} resume {target.name} -n {target.namespace}")


@click.command()
@_target_options
def resume(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Continue the rollout: removes llmcanary.io/paused and sets llmcanary.io/resume
    (which also continues a rollout the operator paused itself)."""
    target = _target(name, namespace, kubeconfig, context)
    value = request_time()
    obj = _annotate(target, {ANNOTATION_PAUSED: None, ANNOTATION_RESUME: value})
    click.echo(
        f"resume requested for {target}: removed {ANNOTATION_PAUSED}, {ANNOTATION_RESUME}={value}"
    )
    if (obj.get("spec") or {}).get("paused") is True:
        _warn(
            "spec.paused is true, and resume cannot override it: set spec.paused to false"
            " in the manifest (in Git, if Argo CD applies it) to continue"
        )
    _hint(target)


@click.command()
@_target_options
@click.option("-w", "--watch", is_flag=True, help="Re-render on every change (Ctrl-C to stop).")
def status(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None, watch: bool
) -> None:
    """Where the rollout stands: phase, revisions, weight, last analysis, conditions, history."""
    target = _target(name, namespace, kubeconfig, context)
    kube = _connect(target, "get")
    shown = render_status(_get(kube, target))
    click.echo(shown, nl=False)
    if not watch:
        return
    interactive = sys.stdout.isatty()
    try:
        while True:
            time.sleep(1)
            text = render_status(_get(kube, target))
            if text == shown:
                continue
            shown = text
            if interactive:
                click.clear()
            else:
                click.echo(f"--- {request_time()}")
            click.echo(shown, nl=False)
    except KeyboardInterrupt:
        click.echo("")


COMMANDS = (status, promote, abort, retry, pause, resume)
