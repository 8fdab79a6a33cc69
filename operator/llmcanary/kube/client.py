"""A small typed facade over the Kubernetes dynamic client.

Built once at start-up (never at import time) and kept in kopf's ``memo``. Objects go
in and out as plain dicts, the same dicts the pure builders produce.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from urllib3.exceptions import HTTPError as Urllib3Error

from llmcanary.kube.errors import (
    Forbidden,
    MissingApi,
    NamespaceTerminating,
    api_message,
    explain,
    terminating_namespace,
    unreachable,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "llmcanary"
#: (connect, read) seconds for one API call: a hung call ends as an error, not a held worker.
REQUEST_TIMEOUT = (10.0, 60.0)
#: Told the verb of every API request made (the operator counts them on /metrics).
RequestObserver = Callable[[str], None]


class ObjectReader(Protocol):
    """The reads of :class:`Kube` (preflight's environment diff needs no more)."""

    def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]: ...


class StatusPatcher(Protocol):
    """The one write of the status writer (:mod:`llmcanary.kube.status_writer`)."""

    def patch_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]: ...


class KubeApi(ObjectReader, StatusPatcher, Protocol):
    """The calls the reconciler, the routers and the status writer make: :class:`Kube`
    against an API server, or an in-memory fake in unit tests."""

    def pod_log(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        limit_bytes: int = 65536,
        *,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> str | None: ...

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]: ...

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None: ...

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> bool: ...


@dataclass(frozen=True)
class ObjectKey:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectKey:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class Kube:
    """Get, list, apply and status-patch any kind, with errors turned into advice.

    A 403 always becomes :class:`~llmcanary.kube.errors.Forbidden`. With
    ``explain_errors`` (the operator's client) every other failed call becomes an
    :class:`~llmcanary.kube.errors.ApiError` too (a refused child, a conflict, an API
    server that is unavailable or slow), so the reconciler can put it in status; the
    CLI's client (:meth:`from_kubeconfig`) leaves them as ApiException and urllib3's
    errors, which the CLI words itself.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        on_request: RequestObserver | None = None,
        *,
        explain_errors: bool = True,
    ) -> None:
        self.api_client = api_client
        self._dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._on_request = on_request
        self.explain_errors = explain_errors

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        *,
        pool_size: int | None = None,
        on_request: RequestObserver | None = None,
    ) -> Kube:
        """In-cluster credentials when running in a pod, otherwise the kubeconfig.

        ``pool_size``: connections kept to the API server (one per thread that calls it).
        """
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            log.info("using in-cluster Kubernetes credentials")
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            log.info("using kubeconfig credentials", extra={"kubeconfig": kubeconfig})
        configuration = client.Configuration.get_default_copy()
        if pool_size is not None:
            configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration), on_request)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """A user's credentials: the kubeconfig (default ``$KUBECONFIG``), optionally one context.

        Never in-cluster credentials, and never the global client configuration.
        """
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, persist_config=False
        )
        return cls(api_client, explain_errors=False)

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            # The caller that knows what serves it (a router) says what to install.
            raise MissingApi(api_version, kind, "install the API that serves it") from None

    def _request(
        self, verb: str, kind: str, fn: Any, *, passthrough: tuple[int, ...] = (), **kwargs: Any
    ) -> Any:
        """One API request: counted, bounded in time, its errors turned into advice.

        ``passthrough``: HTTP statuses the caller handles itself (a 404 on a get), raised
        as the ApiException.
        """
        if self._on_request is not None:
            self._on_request(verb)
        try:
            return self._call(verb, kind, fn, **kwargs, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if not self.explain_errors or exc.status in passthrough:
                raise
            namespace, name = kwargs.get("namespace") or "", kwargs.get("name")
            raise explain(exc, verb, kind, namespace, name) from exc
        except Urllib3Error as exc:  # a timeout, a refused or broken connection
            if not self.explain_errors:
                raise
            namespace, name = kwargs.get("namespace") or "", kwargs.get("name")
            raise unreachable(exc, verb, kind, namespace, name) from exc

    def _request_json(
        self, verb: str, kind: str, fn: Any, *, passthrough: tuple[int, ...] = (), **kwargs: Any
    ) -> dict[str, Any]:
        """A dynamic-client request whose JSON answer is parsed as plain dicts.

        The dynamic client's own objects (ResourceInstance, then ``to_dict()``) cost the
        operator 6x the time of ``json.loads`` for a list of Deployments. An answer that
        is not a JSON object is an :class:`~llmcanary.kube.errors.ApiUnavailable`.
        """
        response = self._request(verb, kind, fn, serialize=False, passthrough=passthrough, **kwargs)
        try:
            found = json.loads(response.data)
        except (AttributeError, TypeError, ValueError) as exc:
            found = exc
        if not isinstance(found, dict):
            problem = (
                found
                if isinstance(found, Exception)
                else TypeError(f"a JSON {type(found).__name__} where an object was expected")
            )
            namespace, name = kwargs.get("namespace") or "", kwargs.get("name")
            raise unreachable(problem, verb, kind, namespace, name) from None
        return found

    @staticmethod
    def _call(verb: str, kind: str, fn: Any, **kwargs: Any) -> Any:
        """Call the API; a 403 becomes advice naming the permission the operator lacks
        (unless it only says the namespace is being deleted)."""
        try:
            return fn(**kwargs)
        except ApiException as exc:
            if exc.status == 403:
                namespace = kwargs.get("namespace", "")
                if terminating_namespace(exc):
                    raise NamespaceTerminating(verb, kind, namespace) from exc
                raise Forbidden(verb, kind, namespace, api_message(exc)) from exc
            raise

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self._resource(api_version, kind)
        try:
            return self._request_json(
                "get", kind, resource.get, passthrough=(404,), name=name, namespace=namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_cluster(
        self, api_version: str, kind: str, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        """List a cluster-scoped kind (Node), or a namespaced kind across all namespaces."""
        resource = self._resource(api_version, kind)
        found = self._request_json(
            "list",
            kind,
            resource.get,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return list(found.get("items") or [])

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        found = self._request_json(
            "list",
            kind,
            resource.get,
            namespace=namespace,
            label_selector=label_selector,
        )
        return list(found.get("items") or [])

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``obj`` as the operator's field manager.

        ``dry_run``: the API server validates and admits it (schema, CEL rules, webhooks)
        and stores nothing.
        """
        key = ObjectKey.of(obj)
        resource = self._resource(key.api_version, key.kind)
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        applied = self._request_json(
            "apply",
            key.kind,
            resource.server_side_apply,
            body=obj,
            name=key.name,
            namespace=key.namespace,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            **extra,
        )
        return applied

    def patch_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON-merge-patch the status subresource.

        ``resource_version``: the version the status was decided from. The API server then
        takes the patch only if the object is still at that version, else answers 409
        (:class:`~llmcanary.kube.errors.ApiConflict`): a status decided from stale state
        never overwrites a newer one.
        """
        resource = self._resource(api_version, kind)
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        patched = self._request_json(
            "patch",
            f"{kind}/status",
            resource.status.patch,
            body=body,
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )
        return patched

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """JSON-merge-patch an object (labels, replicas); None if it does not exist."""
        resource = self._resource(api_version, kind)
        try:
            patched = self._request_json(
                "patch",
                kind,
                resource.patch,
                passthrough=(404,),
                body=patch,
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return patched

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Delete an object; False if it was already gone.

        ``uid``: delete only that object (a precondition the API server checks): False,
        and nothing deleted, if the name now belongs to another object (409).
        ``propagation``: ``Background`` or ``Foreground`` to remove its dependents too (a
        Job deleted through the API leaves its pods behind by default).
        """
        resource = self._resource(api_version, kind)
        extra: dict[str, Any] = {}
        options: dict[str, Any] = {}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        if propagation is not None:
            options["propagationPolicy"] = propagation
        if options:
            extra["body"] = {"apiVersion": "v1", "kind": "DeleteOptions", **options}
        try:
            self._request(
                "delete",
                kind,
                resource.delete,
                passthrough=(404, 409) if uid is not None else (404,),
                name=name,
                namespace=namespace,
                **extra,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409 and uid is not None:
                log.warning(
                    "left %s %s/%s alone: it is no longer the object %s (%s)",
                    kind,
                    namespace,
                    name,
                    uid,
                    api_message(exc),
                    extra={"child": f"{kind} {namespace}/{name}", "uid": uid},
                )
                return False
            raise
        return True

    def pod_log(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        limit_bytes: int = 65536,
        *,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> str | None:
        """A pod's log (its last ``tail_lines`` lines when set; ``previous``: the run
        before the current one), ``limit_bytes`` at most; None if the pod is gone."""
        core = client.CoreV1Api(self.api_client)
        kwargs: dict[str, Any] = {"limit_bytes": limit_bytes}
        if container:
            kwargs["container"] = container
        if previous:
            kwargs["previous"] = True
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            text = self._request(
                "get",
                "pods/log",
                core.read_namespaced_pod_log,
                passthrough=(404,),
                name=name,
                namespace=namespace,
                **kwargs,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(text)


def kubeconfig_namespace(kubeconfig: str | None = None, context: str | None = None) -> str | None:
    """The namespace a kubeconfig context names (the current context by default), if any."""
    contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    chosen = (
        current
        if context is None
        else next((c for c in contexts if c.get("name") == context), None)
    )
    if not chosen:
        return None
    namespace = (chosen.get("context") or {}).get("namespace")
    return str(namespace) if namespace else None
