"""Shared fixtures: real sandboxes (see sandbox/fixtures.py for what each one starts) and clients for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from sandbox.fixtures import SandboxHandle, api_sandbox, make_sandbox, sandbox  # noqa: F401 (pytest finds fixtures by name)


@dataclass
class KubeClients:
    """The official clients, pointed at one sandbox."""

    handle: SandboxHandle
    api: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    dynamic: DynamicClient

    def request(self, method: str, path: str, *, body: Any = None, content_type: str = "application/json",
                query: dict | None = None, token: str | None = "admin",
                accept: str = "application/json") -> tuple[int, Any, dict]:
        """A raw request through the official ApiClient: (status, parsed body, headers); never raises on 4xx/5xx.

        token: "admin" (the kubeconfig's), None (no Authorization header) or a literal bearer token;
        accept: the Accept header (kubectl's Table request, say).
        """
        headers = {"Content-Type": content_type, "Accept": accept}
        auth = ["BearerToken"] if token == "admin" else []
        if token not in ("admin", None):
            headers["Authorization"] = f"Bearer {token}"
        # The client JSON-encodes dicts and lists itself (for any JSON content type); strings go as they are.
        data = body
        method_, url, header_params, body_, _ = self.api.param_serialize(
            method, path, query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers, body=data, auth_settings=auth)
        response = self.api.call_api(method_, url, header_params=header_params, body=body_, _request_timeout=30)
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed, dict(response.getheaders())


@pytest.fixture
def kube(api_sandbox, tmp_path) -> KubeClients:  # noqa: F811 (the fixture imported above)
    """Typed, dynamic and raw clients for an API-only in-process sandbox."""
    api = api_sandbox.api_client()
    return KubeClients(api_sandbox, api, client.CoreV1Api(api), client.AppsV1Api(api),
                       DynamicClient(api, cache_file=str(tmp_path / "discovery-cache.json")))
