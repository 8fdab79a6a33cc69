"""A minimal HTTPS client for the dev cluster's API server, with the admin client cert.

``up`` polls readiness and creates a handful of small objects; doing that over one
TLS connection costs milliseconds, where each ``kubectl`` run costs a process start.
Everything larger (CRDs from YAML) goes through kubectl.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ApiClient", "ApiError", "Response"]

JSON = dict[str, Any]


class ApiError(RuntimeError):
    """A request that got a response other than the ones the caller accepts."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> JSON:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data


class ApiClient:
    """Requests to ``https://host:port`` authenticated by a client certificate."""

    def __init__(
        self,
        host: str,
        port: int,
        ca_file: Path,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        ctx = ssl.create_default_context(cafile=str(ca_file))
        if cert_file is not None:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        self._ctx = ctx
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        content_type: str = "application/json",
    ) -> Response:
        """One request; reconnects once if the kept-alive connection went away."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, context=self._ctx, timeout=self._timeout
                )
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                return Response(resp.status, resp.read())
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> JSON:
        resp = self.request("GET", path)
        if resp.status != 200:
            raise ApiError("GET", path, resp.status, resp.body.decode(errors="replace"))
        return resp.json()

    def create(self, path: str, body: JSON) -> bool:
        """POST ``body``; True if created, False if it already existed."""
        resp = self.request("POST", path, body)
        if resp.status in (200, 201, 202):
            return True
        if resp.status == 409:
            return False
        raise ApiError("POST", path, resp.status, resp.body.decode(errors="replace"))

    def merge_patch(self, path: str, body: JSON) -> JSON:
        resp = self.request("PATCH", path, body, content_type="application/merge-patch+json")
        if resp.status != 200:
            raise ApiError("PATCH", path, resp.status, resp.body.decode(errors="replace"))
        return resp.json()

    def delete(self, path: str) -> bool:
        """DELETE; True if deleted, False if it did not exist."""
        resp = self.request("DELETE", path)
        if resp.status in (200, 202):
            return True
        if resp.status == 404:
            return False
        raise ApiError("DELETE", path, resp.status, resp.body.decode(errors="replace"))

    def ready(self, path: str = "/readyz") -> bool:
        """Whether ``GET path`` answers 200 (any connection error counts as not ready)."""
        try:
            return self.request("GET", path).status == 200
        except (OSError, http.client.HTTPException):
            self.close()
            return False
