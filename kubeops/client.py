"""Connection to the Kubernetes API: the official client's transport and auth, our retries.

Built on `kubernetes.client.ApiClient` so kubeconfig contexts, exec plugins, CA files and the
EKS token refresh hook all work as they do everywhere else; requests go out as plain REST calls
by path (see kinds.py for why there is no discovery). Transient failures (429 with Retry-After,
5xx, dropped connections) are retried for up to `retry_seconds` (kubeops.retry); anything else
comes back as KubeApiError carrying the server's own message.

A retried write may have been done already (the answer, not the request, was lost): that is why
the playbook writes with server-side apply, which is the same request whether or not the object
exists, and treats a 404 on a retried delete as done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from .kinds import Ref, collection_path
from .retry import TRANSIENT_STATUS, RetryLog, RetryPolicy, cause_of

logger = logging.getLogger("kubeops")

APPLY_PATCH = "application/apply-patch+yaml"


class KubeApiError(Exception):
    """The API server refused a request. `reason` is the Status reason (NotFound, Conflict, ...)."""

    def __init__(self, status: int, reason: str, message: str, *, method: str, path: str, body: dict | None = None):
        self.status, self.reason, self.message = status, reason, message
        self.method, self.path, self.body = method, path, body or {}
        super().__init__(f"{method} {path}: {status} {reason}: {message}")

    @property
    def causes(self) -> list[dict]:
        return (self.body.get("details") or {}).get("causes") or []


class KubeUnreachable(Exception):
    """The API server did not answer at all, after retrying for the whole budget."""


class ProxyTimedOut(KubeUnreachable):
    """A pod behind the API server's proxy did not answer in time (the API server did connect)."""


@dataclass
class RequestCounter:
    reads: int = 0
    writes: int = 0
    dry_runs: int = 0
    retries: int = 0


class Kube:
    """A Kubernetes API connection. One per cluster per run; cheap to call, safe to share."""

    def __init__(self, api_client: k8s_client.ApiClient, *, retry_seconds: float = 60.0, timeout: float = 30.0,
                 describe: str = "the cluster"):
        self.api = api_client
        self.retry = RetryPolicy(budget_seconds=retry_seconds)
        self.retries = RetryLog()
        self.timeout = timeout
        self.describe = describe
        self.counter = RequestCounter()
        # Seconds between a wait's heartbeats (kubeops.waiter.Heartbeat), progress_interval_seconds;
        # a request retried for longer than this says so through `on_retry` (None: silent).
        self.progress_interval = 15.0
        self.on_retry: Callable[[str], None] | None = None

    @property
    def host(self) -> str:
        return self.api.configuration.host

    # -- the one place requests are made -------------------------------------------------------

    def request(self, method: str, path: str, *, query: dict | None = None, body: Any = None,
                content_type: str = "application/json", raw: bool = False, timeout: float | None = None) -> Any:
        query_params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # The client serialises dicts itself for JSON content types; others are sent as given.
        if isinstance(body, (dict, list)) and "json" not in content_type:
            body = json.dumps(body)
        started = time.monotonic()
        attempt = 0
        tried = _RequestRetries(self, f"{method} {path}", started)
        while True:
            method_, url, header_params, body_, _ = self.api.param_serialize(
                method, path, query_params=query_params, header_params=dict(headers), body=body,
                auth_settings=["BearerToken"])
            try:
                resp = self.api.call_api(method_, url, header_params=header_params, body=body_,
                                         _request_timeout=timeout or self.timeout)
                data = resp.read() if hasattr(resp, "read") else resp.data
                status = resp.status
            except (urllib3.exceptions.HTTPError, ConnectionError, OSError) as exc:
                attempt += 1
                if not self._pause(attempt, started, None, cause_of(exc), tried):
                    raise KubeUnreachable(f"{self.describe} ({self.host}) did not answer {method} {path}"
                                          f"{tried.suffix()}: {exc}") from exc
                continue
            self._count(method, query)
            if status < 400:
                if raw:
                    return data
                return json.loads(data) if data else {}
            parsed = _parse_status(data)
            if status in TRANSIENT_STATUS:
                attempt += 1
                retry_after = resp.getheader("Retry-After") if hasattr(resp, "getheader") else None
                if self._pause(attempt, started, retry_after, str(status), tried):
                    continue
            raise KubeApiError(status, parsed.get("reason") or _reason_for(status),
                               (parsed.get("message") or (data or b"").decode(errors="replace")[:300])
                               + (tried.suffix() if status in TRANSIENT_STATUS else ""),
                               method=method, path=path, body=parsed)

    def _pause(self, attempt: int, started: float, retry_after: str | None, cause: str,
               tried: "_RequestRetries") -> bool:
        """Wait before retry `attempt`; False when the retry budget is spent."""
        pause = self.retry.delay(attempt, time.monotonic() - started, retry_after)
        if pause is None:
            return False
        logger.debug("retrying in %.1fs (attempt %d) after %s", pause, attempt, cause)
        tried.note(cause, pause)
        self.retries.note(cause, pause)
        self.counter.retries += 1
        time.sleep(pause)
        return True

    def _count(self, method: str, query: dict | None) -> None:
        if query and query.get("dryRun"):
            self.counter.dry_runs += 1
        elif method in ("GET", "HEAD"):
            self.counter.reads += 1
        else:
            self.counter.writes += 1

    # -- typed helpers -------------------------------------------------------------------------

    def get(self, ref: Ref) -> dict | None:
        try:
            return self.request("GET", ref.path())
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict]:
        result = self.request("GET", collection_path(api_version, kind, namespace),
                              query={"labelSelector": label_selector, "fieldSelector": field_selector})
        return result.get("items") or []

    def apply(self, manifest: dict, *, field_manager: str, dry_run: bool = False, force: bool = True) -> dict:
        """Server-side apply. `force` because the playbook is the source of truth for what it applies."""
        ref = Ref.of(manifest)
        return self.request("PATCH", ref.path(), body=manifest, content_type=APPLY_PATCH,
                            query={"fieldManager": field_manager, "force": "true" if force else None,
                                   "dryRun": "All" if dry_run else None})

    def delete(self, ref: Ref, *, dry_run: bool = False, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        try:
            self.request("DELETE", ref.path(), body={"propagationPolicy": propagation},
                         query={"dryRun": "All" if dry_run else None})
            return True
        except KubeApiError as err:
            if err.status == 404:
                return False
            raise

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail_lines: int = 20) -> str:
        try:
            data = self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                                query={"container": container, "tailLines": tail_lines}, raw=True)
        except KubeApiError:
            return ""
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    def service_proxy(self, method: str, namespace: str, service: str, port: int | str, path: str, *,
                      body: bytes | None = None, content_type: str = "application/json",
                      timeout: float = 120.0) -> tuple[int, bytes]:
        """A request to a Service through the API server's proxy: no port-forward, no public ALB needed.

        The body goes out byte for byte (multipart uploads, audio), so this uses the client's
        connection pool and auth directly instead of its JSON serialisation. Not retried: the
        request may not be idempotent. Returns (status, body)."""
        return self._proxy(method, namespace, "services", service, port, path, body, content_type, timeout)

    def pod_proxy(self, method: str, namespace: str, pod: str, port: int | str, path: str, *,
                  body: bytes | None = None, content_type: str = "application/json",
                  timeout: float = 10.0) -> tuple[int, bytes]:
        """A request to one pod through the API server's proxy (pods/proxy), as service_proxy does for
        a Service: to ask each replica, not whichever one the Service picks. Raises ProxyTimedOut when
        the pod did not answer within `timeout`. Returns (status, body)."""
        return self._proxy(method, namespace, "pods", pod, port, path, body, content_type, timeout)

    def _proxy(self, method: str, namespace: str, resource: str, name: str, port: int | str, path: str,
               body: bytes | None, content_type: str, timeout: float) -> tuple[int, bytes]:
        proxy_path = f"/api/v1/namespaces/{namespace}/{resource}/{name}:{port}/proxy/{path.lstrip('/')}"
        _, url, headers, _, _ = self.api.param_serialize(method, proxy_path, header_params={"Content-Type": content_type},
                                                          auth_settings=["BearerToken"])
        # A pod's answer is read once: a timeout says "busy" (a TTS server mid-synthesis), not "retry".
        retries = False if resource == "pods" else None
        try:
            resp = self.api.rest_client.pool_manager.request(method, url, body=body, headers=headers, retries=retries,
                                                             timeout=urllib3.Timeout(total=timeout), preload_content=True)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise ProxyTimedOut(f"{method} {proxy_path} did not answer within {timeout:g}s") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnreachable(f"{self.describe} ({self.host}) did not answer {method} {proxy_path}: {exc}") from exc
        self.counter.reads += 1
        return resp.status, resp.data


class _RequestRetries:
    """The retries of one request: said through `kube.on_retry` once they last longer than a
    heartbeat interval (what is retried, why, for how long), and summed up in the final error."""

    def __init__(self, kube: Kube, what: str, started: float):
        self.kube, self.what, self.started = kube, what, started
        self.log = RetryLog()
        self.next_say = started + kube.progress_interval

    def note(self, cause: str, paused: float) -> None:
        self.log.note(cause, paused)
        now = time.monotonic()
        if self.kube.on_retry is not None and now >= self.next_say:
            self.next_say = now + self.kube.progress_interval
            self.kube.on_retry(f"still retrying {self.what}: {self.log.describe()}, {now - self.started:.0f}s of "
                               f"api_retry_seconds {self.kube.retry.budget_seconds:g}")

    def suffix(self) -> str:
        elapsed = time.monotonic() - self.started
        if not self.log.total:
            return ""
        return (f" (retried {self.log.total} time{'s' if self.log.total > 1 else ''} over {elapsed:.0f}s, "
                f"api_retry_seconds {self.kube.retry.budget_seconds:g}: {self.log.describe()})")


def _parse_status(data: bytes | None) -> dict:
    try:
        parsed = json.loads(data or b"{}")
        return parsed if isinstance(parsed, dict) else {}
    except ValueError:
        return {}


def _reason_for(status: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            422: "Invalid", 429: "TooManyRequests"}.get(status, "InternalError" if status >= 500 else "Unknown")


def from_kubeconfig(path: str | None, context: str | None = None, **kwargs: Any) -> Kube:
    """A connection from a kubeconfig file (exec plugins, tokens and CA data all honoured)."""
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration,
                                persist_config=False)
    where = f"context {context!r} of {path}" if context else (path or "the default kubeconfig")
    return Kube(k8s_client.ApiClient(configuration), describe=f"the Kubernetes API of {where}", **kwargs)


def from_configuration(configuration: k8s_client.Configuration, describe: str, **kwargs: Any) -> Kube:
    return Kube(k8s_client.ApiClient(configuration), describe=describe, **kwargs)


def first(items: Iterable[dict]) -> dict | None:
    for item in items:
        return item
    return None
