"""The sandbox's Kubernetes API server: HTTPS, bearer-token auth, routing, watch, proxy, audit, faults.

Clients reach it exactly as they reach EKS: a kubeconfig with the server URL, the CA and a
token. The admin token is random per sandbox; EKS tokens (`k8s-aws-v1.<presigned STS URL>`) are
checked by the sandbox's AWS side. Object semantics live in registry.py; this module only speaks
HTTP. Every request that reaches the API (not the sandbox's own control endpoint) is one line of
ROOT/audit.jsonl.
"""

from __future__ import annotations

import collections
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from . import discovery, health, openapi, portforward, printers, rbac
from .faults import ApiFaults
from .fields import check_field_selector
from .podlogs import LogRequest
from .registry import APPLY, Registry, bad_request, default_manager
from .resources import RESOURCES, Resource, served
from .store import ApiError, Store, WatchEvent, field_selector_match, labels_match, parse_label_selector
from .tls import TlsMaterial

logger = logging.getLogger("sandbox.kubeapi")

EKS_TOKEN_PREFIX = "k8s-aws-v1."
WATCH_HISTORY = 10000  # events kept for watches that start from an older resourceVersion
DEFAULT_WATCH_SECONDS = 1800
UPGRADE_SPDY = "spdy/3.1"
BOOKMARK_SECONDS = 60.0  # how often the watch cache sends bookmarks to watchers that allow them
PROXY_TIMEOUT_SECONDS = 600
_BY_PATH = {(r.api_version, r.plural): r for r in RESOURCES}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _unauthorized(detail: str | None = None) -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized" + (f": {detail}" if detail else ""))


def _not_found_path(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource ({path})",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


def _method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource "
                    f"({method} {path})")


class AuditLog:
    """ROOT/audit.jsonl: one JSON object per API request, flushed at once (tests read it while we run)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass
class Route:
    """A parsed request path."""

    kind: str  # version, api, apis, group, resourcelist, health, resource, unknown
    api_version: str = ""
    group: str = ""
    res: Resource | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str = ""
    proxy_path: str = "/"
    watch_path: bool = False


@dataclass
class Reply:
    code: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def parse_route(path: str) -> Route:
    """Map a URL path onto what it addresses (no I/O)."""
    raw = [p for p in path.split("/")]
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if parts == ["version"]:
        return Route("version")
    if parts and parts[0] in ("healthz", "livez", "readyz"):
        return Route("health")
    if parts and parts[0] == "openapi":
        return Route("openapi")
    if parts == ["api"]:
        return Route("api")
    if parts == ["apis"]:
        return Route("apis")
    if len(parts) == 2 and parts[0] == "apis":
        return Route("group", group=parts[1])
    if len(parts) >= 2 and parts[0] == "api":
        api_version, rest, consumed = parts[1], parts[2:], 2
    elif len(parts) >= 3 and parts[0] == "apis":
        api_version, rest, consumed = f"{parts[1]}/{parts[2]}", parts[3:], 3
    else:
        return Route("unknown")
    if not rest:
        return Route("resourcelist", api_version=api_version)
    watch_path = rest[0] == "watch"
    if watch_path:
        rest, consumed = rest[1:], consumed + 1
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (api_version, rest[2]) in _BY_PATH \
            and _BY_PATH[(api_version, rest[2])].namespaced:
        namespace, rest, consumed = rest[1], rest[2:], consumed + 2
    if not rest:
        return Route("unknown")
    res = _BY_PATH.get((api_version, rest[0]))
    if res is None:
        return Route("unknown", api_version=api_version)
    route = Route("resource", api_version=api_version, res=res, namespace=namespace, watch_path=watch_path,
                  name=rest[1] if len(rest) > 1 else None, subresource=rest[2] if len(rest) > 2 else "")
    if route.subresource == "proxy":
        # Keep the proxied path exactly as sent (escapes, trailing slash).
        tail = raw[1 + consumed + 3:]
        route.proxy_path = "/" + "/".join(tail)
    elif len(rest) > 3:
        return Route("unknown")
    if res.namespaced and namespace is None and route.name is not None:
        return Route("unknown")
    return route


def verb_of(method: str, route: Route, query: dict[str, str]) -> str:
    """The audit verb, as Kubernetes names it."""
    if route.kind != "resource":
        return "get" if method == "GET" else method.lower()
    if route.subresource == "proxy":
        return "proxy"
    watching = route.watch_path or query.get("watch", "").lower() in ("true", "1")
    return {
        "GET": "watch" if watching else ("list" if route.name is None else "get"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "deletecollection" if route.name is None else "delete",
    }.get(method, method.lower())


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    api: "KubeApiServer"

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 (socketserver's signature)
        # Clients that hang up (timeouts, dropped watches) are normal; anything else goes to the log.
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError, OSError)):
            return
        logger.error("unhandled error serving %s:\n%s", client_address, traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox-kube-apiserver"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.api.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET


class KubeApiServer:
    """The HTTPS API server. Binds at construction (so its URL is known early), serves after `start()`."""

    def __init__(self, root: Path, store: Store, *, tls: TlsMaterial, admin_token: str, host: str = "127.0.0.1",
                 port: int = 0):
        self.root = Path(root)
        self.store = store
        self.registry = Registry(store, tls.ca_pem)
        self.authorizer = rbac.Authorizer(store)
        self.tls = tls
        self.admin_token = admin_token
        self.aws: Any = None  # sandbox.aws.SandboxAws: validates EKS tokens
        self.cluster: Any = None  # sandbox.cluster.Cluster: pod logs and proxy backends
        self.addons: frozenset[str] = frozenset()  # add-ons whose CRDs are installed (resources.Resource.addon)
        self.state_provider: Callable[[], dict] = dict
        self.status_provider: Callable[[], dict] = dict  # more status from the runtime (GPU memory)
        self.faults = ApiFaults()
        self.fault_handlers: dict[str, Callable[[str, dict], Any]] = {}
        self.audit = AuditLog(self.root / "audit.jsonl")
        self._stopping = threading.Event()
        self._history: collections.deque[tuple[int, WatchEvent]] = collections.deque(maxlen=WATCH_HISTORY)
        self._compacted_rv = 0  # watches from an older resourceVersion get 410 Expired, as after etcd compaction
        self.bookmark_seconds = BOOKMARK_SECONDS
        store.add_listener(self._remember)
        for name in ("api-errors", "api-slow", "api-drop"):
            self.register_fault(name, self.faults.inject)
        self.register_fault("api-compact", self._compact)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.server_cert_path), str(tls.server_key_path))
        context.set_alpn_protocols(["http/1.1"])
        self._httpd = _HttpServer((host, port), _Handler, bind_and_activate=True)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._httpd.api = self
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kube-apiserver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        self.audit.close()

    def register_fault(self, name: str, handler: Callable[[str, dict], Any]) -> None:
        """Route control-endpoint fault `name` to `handler(name, params)`."""
        self.fault_handlers[name] = handler

    def _compact(self, name: str, params: dict) -> dict:
        """Fault `api-compact`: forget watch history up to now, as etcd's compaction (every 5 minutes on EKS) does.

        Watches that resume from an older resourceVersion then get 410 Expired and must list again.
        """
        with self.store.lock:
            self._compacted_rv = int(self.store.resource_version)
            self._history.clear()
        return {"compacted": self._compacted_rv}

    def _remember(self, event: WatchEvent) -> None:
        # Runs under the store lock, right after the event is queued for live watchers.
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0][0]
        self._history.append((int(event.object["metadata"]["resourceVersion"]), event))

    # -- one request -------------------------------------------------------------------------

    def handle(self, h: _Handler) -> None:
        began = time.perf_counter()
        split = urlsplit(h.path)
        path = split.path or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = self._read_body(h)
        if path.startswith("/sandbox/"):
            self._send(h, self._control(h, path, body))
            return
        route = parse_route(path)
        if route.res is not None and not served(route.res, self.addons):
            route = Route("unknown", api_version=route.api_version)  # its CRD is not installed: 404
        record: dict[str, Any] = {
            "time": _now(), "verb": verb_of(h.command, route, query), "method": h.command, "path": path,
            "query": split.query, "resource": route.res.plural if route.res else "",
            "subresource": route.subresource, "namespace": route.namespace, "name": route.name,
            "fieldManager": query.get("fieldManager"), "dry_run": query.get("dryRun") == "All",
            "content_type": (h.headers.get("Content-Type") or "").split(";")[0].strip() or None,
            "user": None, "user_agent": h.headers.get("User-Agent"), "code": None,
        }
        decision = self.faults.take(path)
        reply: Reply | None = None
        try:
            if decision.delay_seconds:
                time.sleep(decision.delay_seconds)
            if decision.drop and not decision.after:
                record["code"], record["fault"] = 0, "api-drop"
                self.audit.write(record)
                self._drop(h)
                return
            if decision.error_code and not decision.after:
                reply = self._injected_error(decision, record)
            else:
                if route.kind == "health" and h.command in ("GET", "HEAD"):
                    # Anyone may read health (system:public-info-viewer), with or without a token.
                    code, text = health.answer(path, query, split.query)
                    reply = Reply(code, text.encode(), "text/plain; charset=utf-8")
                else:
                    user = self._authenticate(h.headers.get("Authorization"))
                    record["user"] = user.name
                    self._authorize(user, h, route, query, path)
                    if route.res is not None and route.res.group in rbac.REVIEW_GROUPS and h.command == "POST":
                        reply = self._json(201, rbac.review(route.res.kind, self._json_body(body), user,
                                                            self.authorizer))
                    else:
                        reply = self._dispatch(h, route, query, body, record)
        except ApiError as err:
            reply = Reply(err.code, _dumps(err.status()))
        except Exception as exc:  # a bug in the sandbox: answer like the real server, keep the trace
            logger.error("internal error on %s %s:\n%s", h.command, h.path, traceback.format_exc())
            reply = Reply(500, _dumps(ApiError(500, "InternalError", f"Internal error occurred: {exc!r}").status()))
        finally:
            record["ms"] = round((time.perf_counter() - began) * 1000, 2)
        if reply is None:  # a watch: already answered and audited
            return
        record["code"] = reply.code
        if decision.after and decision.drop:
            # The work is done (the audit record keeps its real code); the client never hears of it.
            record.update(fault="api-drop", after=True)
            self.audit.write(record)
            self._drop(h)
            return
        if decision.after and decision.error_code:
            record.update(after=True, served_code=reply.code)
            reply = self._injected_error(decision, record)
            record["code"] = reply.code
        self.audit.write(record)  # before answering: a client that got its answer finds the record
        self._send(h, reply)

    @staticmethod
    def _injected_error(decision, record: dict) -> Reply:
        record["fault"] = "api-errors"
        headers = {"Retry-After": str(decision.retry_after)} if decision.retry_after is not None else {}
        return Reply(decision.error_code, _dumps(decision.error_status()), headers=headers)

    @staticmethod
    def _read_body(h: _Handler) -> bytes:
        length = h.headers.get("Content-Length")
        if length:
            return h.rfile.read(int(length))
        if (h.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    h.rfile.readline()
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            return b"".join(chunks)
        return b""

    @staticmethod
    def _send(h: _Handler, reply: Reply) -> None:
        h.send_response(reply.code)
        h.send_header("Content-Type", reply.content_type)
        h.send_header("Content-Length", str(len(reply.body)))
        h.send_header("Cache-Control", "no-cache, private")
        for key, value in reply.headers.items():
            h.send_header(key, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(reply.body)
        h.wfile.flush()

    @staticmethod
    def _drop(h: _Handler) -> None:
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        h.connection.close()

    def _authenticate(self, header: str | None) -> rbac.UserInfo:
        """'admin' for the sandbox's admin token, the caller's ARN for a valid EKS token (both system:masters:
        the cluster creator's access entry), the named user of a `python -m sandbox token`; else 401."""
        if not header or not header.startswith("Bearer "):
            raise _unauthorized()
        token = header[len("Bearer "):].strip()
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return rbac.user_for("admin", (rbac.MASTERS,))
        if token.startswith(EKS_TOKEN_PREFIX):
            if self.aws is None:
                raise _unauthorized("EKS tokens need the sandbox's AWS side, which is not running")
            try:
                # SandboxAws caches valid tokens until they expire, so this costs one dict lookup per request.
                return rbac.user_for(self.aws.validate_eks_token(token), (rbac.MASTERS,))
            except ValueError as err:
                raise _unauthorized(str(err)) from None
        try:
            user = rbac.user_of_token(self.admin_token, token, self.store)
        except ValueError as err:
            raise _unauthorized(str(err)) from None
        if user is None:
            raise _unauthorized()
        return user

    def _authorize(self, user: rbac.UserInfo, h: _Handler, route: Route, query: dict[str, str], path: str) -> None:
        """403 unless RBAC allows the request (sandbox/kubeapi/rbac.py); system:masters skip it."""
        if user.privileged:
            return
        if route.kind != "resource" or route.res is None:
            self.authorizer.check(user, rbac.Attributes("get" if h.command in ("GET", "HEAD") else h.command.lower(),
                                                        False, path=path))
            return
        res = route.res
        verb = verb_of(h.command, route, query)
        if verb == "proxy":  # a subresource proxy is authorized by its HTTP verb (apiserver requestinfo.go)
            verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}.get(h.command, h.command.lower())
        # requestinfo.go: a request for a namespace is made in that namespace.
        namespace = route.name if res.kind == "Namespace" and route.name else route.namespace or ""
        attributes = rbac.Attributes(verb, True, res.group, res.plural, route.subresource, namespace,
                                     route.name or "")
        self.authorizer.check(user, attributes)
        content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        if h.command == "PATCH" and content_type == APPLY and route.name and not route.subresource \
                and self.store.get(res, route.namespace, route.name) is None:
            # An apply that creates the object needs "create" too (apiserver handlers/patch.go).
            self.authorizer.check(user, rbac.Attributes("create", True, res.group, res.plural, "", namespace,
                                                        route.name))

    # -- routing -----------------------------------------------------------------------------

    def _dispatch(self, h: _Handler, route: Route, query: dict[str, str], body: bytes,
                  record: dict) -> Reply | None:
        method = h.command
        if route.kind != "resource":
            if method not in ("GET", "HEAD"):
                raise _method_not_allowed(method, h.path)
            if route.kind == "openapi":
                return self._openapi(h)
            return Reply(200, _dumps(self._discovery(route, h.path)))
        res = route.res
        assert res is not None
        dry_run = self._dry_run(query)
        manager = query.get("fieldManager") or None
        if route.subresource == "proxy":
            return self._proxy(h, route, query, body)
        if route.subresource and route.subresource not in res.subresources:
            raise _not_found_path(h.path)
        if route.subresource == "log":
            if method != "GET":
                raise _method_not_allowed(method, h.path)
            return self._pod_log(h, route, query, record)
        if route.subresource == "scale":
            return self._scale(h, route, query, body, dry_run)
        if route.subresource == "portforward":
            return self._portforward(h, route, record)
        ns, name = route.namespace, route.name
        if method in ("GET", "HEAD"):
            table_version = printers.wants_table(h.headers.get("Accept"))
            printers.check_include_object(query.get("includeObject"))
            if name is None:
                check_field_selector(res, query.get("fieldSelector"))
                if route.watch_path or query.get("watch", "").lower() in ("true", "1"):
                    self._watch(h, res, ns, query, record, table_version=table_version)
                    return None
                limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
                listed = self.registry.list(res, ns, label_selector=query.get("labelSelector"),
                                            field_selector=query.get("fieldSelector"), limit=limit,
                                            continue_token=query.get("continue") or None)
                if table_version:
                    return self._json(200, printers.table(res, listed["items"], version=table_version,
                                                          include_object=query.get("includeObject"),
                                                          list_metadata=listed["metadata"]))
                return self._json(200, listed)
            obj = self.registry.get(res, ns, name)
            if table_version:
                return self._json(200, printers.table(res, [obj], version=table_version,
                                                      include_object=query.get("includeObject"),
                                                      list_metadata={"resourceVersion": obj["metadata"].get(
                                                          "resourceVersion", "")}))
            return self._json(200, obj)
        field_validation = query.get("fieldValidation")
        if method == "POST":
            if name is not None:
                raise _method_not_allowed(method, h.path)
            if res.namespaced and ns is None:
                raise _method_not_allowed(method, h.path)
            obj = self.registry.create(res, ns, self._json_body(body), dry_run=dry_run, field_validation=field_validation,
                                       manager=manager or default_manager(h.headers.get("User-Agent")))
            return self._json(201, obj)
        if name is None:
            if method == "DELETE":
                check_field_selector(res, query.get("fieldSelector"))
                return self._json(200, self.registry.delete_collection(
                    res, ns, label_selector=query.get("labelSelector"), field_selector=query.get("fieldSelector"),
                    options=self._delete_options(body, query), dry_run=dry_run))
            raise _method_not_allowed(method, h.path)
        if method == "PUT":
            obj = self.registry.update(res, ns, name, self._json_body(body), subresource=route.subresource,
                                       manager=manager or default_manager(h.headers.get("User-Agent")),
                                       dry_run=dry_run, field_validation=field_validation)
            return self._json(200, obj)
        if method == "PATCH":
            content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip()
            parsed = self._apply_body(body) if content_type == APPLY else self._json_body(body)
            code, obj = self.registry.patch(res, ns, name, parsed, content_type, manager=manager,
                                            user_agent=h.headers.get("User-Agent"), subresource=route.subresource,
                                            force=query.get("force", "").lower() in ("true", "1"), dry_run=dry_run,
                                            field_validation=field_validation)
            return self._json(code, obj)
        if method == "DELETE":
            if route.subresource:
                raise _method_not_allowed(method, h.path)
            return self._json(200, self.registry.delete(res, ns, name, options=self._delete_options(body, query),
                                                        dry_run=dry_run))
        raise _method_not_allowed(method, h.path)

    @staticmethod
    def _json(code: int, obj: Any) -> Reply:
        return Reply(code, _dumps(obj))

    @staticmethod
    def _dry_run(query: dict[str, str]) -> bool:
        value = query.get("dryRun")
        if value in (None, ""):
            return False
        if value != "All":
            raise bad_request(f'invalid dryRun value {value!r}: the only supported value is "All"')
        return True

    @staticmethod
    def _json_body(body: bytes) -> Any:
        if not body.strip():
            raise bad_request("the request needs a JSON body")
        try:
            return json.loads(body)
        except ValueError as err:
            raise bad_request(f"the request body is not valid JSON: {err}") from None

    @staticmethod
    def _apply_body(body: bytes) -> Any:
        if not body.strip():
            raise bad_request("an apply patch needs a body: the object's configuration as YAML or JSON")
        try:
            return json.loads(body)
        except ValueError:
            pass
        try:
            return yaml.load(body, Loader=_YAML_LOADER)
        except yaml.YAMLError as err:
            raise bad_request(f"the apply patch is neither JSON nor YAML: {err}") from None

    @staticmethod
    def _delete_options(body: bytes, query: dict[str, str]) -> dict:
        options: dict = {}
        if body.strip():
            try:
                parsed = json.loads(body)
            except ValueError as err:
                raise bad_request(f"DeleteOptions body is not valid JSON: {err}") from None
            if isinstance(parsed, dict):
                options.update(parsed)
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if options.get("propagationPolicy") not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(f"propagationPolicy {options['propagationPolicy']!r} is not one of Orphan, Background, "
                              "Foreground")
        return options

    def _openapi(self, h: _Handler) -> Reply:
        path = urlsplit(h.path).path.rstrip("/")
        if path == "/openapi/v2":
            accept = h.headers.get("Accept") or ""
            if openapi.PROTOBUF_V2 in accept and "json" not in accept and "*/*" not in accept:
                raise ApiError(406, "NotAcceptable", f"only the following media types are accepted: application/json "
                               f"(the sandbox serves /openapi/v2 as JSON; {openapi.PROTOBUF_V2} is not implemented)")
            return Reply(200, openapi.v2_document())
        if path == openapi.V3_PREFIX:
            return Reply(200, _dumps(openapi.v3_index(self.addons)))
        document = openapi.v3_for_path(path, self.addons) if path.startswith(openapi.V3_PREFIX + "/") else None
        if document is None:
            raise _not_found_path(path)
        return Reply(200, document)

    def _discovery(self, route: Route, path: str) -> dict:
        if route.kind == "version":
            return discovery.VERSION_INFO
        if route.kind == "api":
            return discovery.api_versions(f"{self.host}:{self.port}")
        if route.kind == "apis":
            return discovery.api_group_list(self.addons)
        if route.kind == "group":
            group = discovery.api_group(route.group, self.addons)
            if group is not None:
                return group
        if route.kind == "resourcelist":
            resources = discovery.resource_list(route.api_version, self.addons)
            if resources is not None:
                return resources
        raise _not_found_path(path)

    # -- subresources ------------------------------------------------------------------------

    def _scale(self, h: _Handler, route: Route, query: dict[str, str], body: bytes, dry_run: bool) -> Reply:
        res, ns, name = route.res, route.namespace, route.name
        assert res is not None and name is not None
        manager = query.get("fieldManager") or default_manager(h.headers.get("User-Agent"))
        if h.command == "GET":
            return self._json(200, self.registry.get_scale(res, ns, name))
        if h.command == "PUT":
            return self._json(200, self.registry.update_scale(res, ns, name, self._json_body(body), manager=manager,
                                                              dry_run=dry_run))
        if h.command == "PATCH":
            from .patches import json_patch, merge_patch

            current = self.registry.get_scale(res, ns, name)
            content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self._json_body(body)
            wanted = json_patch(current, patch) if content_type == "application/json-patch+json" \
                else merge_patch(current, patch)
            return self._json(200, self.registry.update_scale(res, ns, name, wanted, manager=manager, dry_run=dry_run))
        raise _method_not_allowed(h.command, h.path)

    def _pod_log(self, h: _Handler, route: Route, query: dict[str, str], record: dict) -> Reply | None:
        def log_path(ns: str, pod: str, container: str) -> Path:
            if self.cluster is not None:
                return self.cluster.pod_log_path(ns, pod, container)
            return self.root / "logs" / ns / pod / f"{container}.log"

        request = LogRequest(self.store, route.namespace or "", route.name or "", query, log_path)
        if not request.follow:
            return Reply(200, request.read(), "text/plain")
        try:
            self._start_stream(h, record, "text/plain")
            request.stream(lambda data: self._chunk(h, data), self._stopping.is_set)
            self._chunk(h, b"")
        except (ConnectionError, ssl.SSLError, OSError):
            h.close_connection = True
        return None

    def _start_stream(self, h: _Handler, record: dict, content_type: str) -> None:
        """Answer 200 with a chunked body that follows (watch, log -f); audited now, as it may last long."""
        record["code"] = 200
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache, private")
        h.end_headers()
        self.audit.write(record)

    @staticmethod
    def _chunk(h: _Handler, data: bytes) -> None:
        """One chunk of a streamed body; an empty one ends it."""
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    def _portforward(self, h: _Handler, route: Route, record: dict) -> Reply | None:
        """Upgrade to SPDY/3.1 and forward the pod's ports for as long as the client keeps the connection."""
        assert route.res is not None
        ns, name = route.namespace or "", route.name or ""
        pod = self.registry.get(route.res, ns, name)
        upgrade = (h.headers.get("Upgrade") or "").lower()
        if upgrade == "websocket":
            # kubectl 1.31+ tries the websocket tunnel first and falls back to SPDY when it is refused.
            raise bad_request("unable to upgrade connection: the sandbox forwards ports over SPDY/3.1 only "
                              "(kubectl falls back to it)")
        protocols = [p.strip() for v in h.headers.get_all("X-Stream-Protocol-Version") or [] for p in v.split(",")]
        if upgrade != UPGRADE_SPDY or portforward.PROTOCOL not in protocols:
            raise bad_request(f"port-forward needs Upgrade: SPDY/3.1 and X-Stream-Protocol-Version: "
                              f"{portforward.PROTOCOL} (as kubectl port-forward sends)")
        if (pod.get("status") or {}).get("phase") != "Running" or self.cluster is None:
            raise bad_request(f"unable to upgrade connection: pod {name} is not running")
        cluster = self.cluster

        def port_of(port: int) -> int:
            try:
                return cluster.backend_for_pod(ns, name, port)[1]
            except ApiError:
                raise ConnectionRefusedError("connect: connection refused") from None

        h.send_response(101)
        h.send_header("Connection", "Upgrade")
        h.send_header("Upgrade", "SPDY/3.1")
        h.send_header("X-Stream-Protocol-Version", portforward.PROTOCOL)
        h.end_headers()
        h.wfile.flush()
        record["code"] = 101
        self.audit.write(record)
        h.close_connection = True

        def write(data: bytes) -> None:
            h.wfile.write(data)
            h.wfile.flush()

        portforward.SpdyConnection(h.rfile.read1, write, portforward.dialer("127.0.0.1", port_of),
                                   f"{name}, uid {pod['metadata'].get('uid', '')}").serve()
        return None

    def _proxy(self, h: _Handler, route: Route, query_dict: dict[str, str], body: bytes) -> Reply:
        res, ns = route.res, route.namespace or ""
        assert res is not None
        if res.kind not in ("Service", "Pod") or route.name is None:
            raise _not_found_path(h.path)
        parts = route.name.split(":")
        if len(parts) == 3:
            _, name, port_text = parts
        elif len(parts) == 2:
            name, port_text = parts
        else:
            name, port_text = parts[0], ""
        port: int | str | None = int(port_text) if port_text.isdigit() else (port_text or None)
        self.registry.get(res, ns, name)  # 404 for a missing service/pod, as the real server answers
        if self.cluster is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for {res.kind.lower()} "{name}" '
                           "(the sandbox runs without its cluster)")
        if res.kind == "Service":
            host, backend_port = self.cluster.backend_for_service(ns, name, port)
        else:
            host, backend_port = self.cluster.backend_for_pod(ns, name, port)
        target = route.proxy_path + (f"?{urlsplit(h.path).query}" if urlsplit(h.path).query else "")
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in ("content-type", "accept", "accept-encoding", "user-agent")}
        connection = http.client.HTTPConnection(host, backend_port, timeout=PROXY_TIMEOUT_SECONDS)
        try:
            connection.request(h.command, target, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach {res.kind.lower()}: dial tcp "
                           f"{host}:{backend_port}: {err}") from None
        finally:
            connection.close()
        return Reply(response.status, data, response.getheader("Content-Type") or "application/octet-stream")

    # -- watch -------------------------------------------------------------------------------

    def _watch(self, h: _Handler, res: Resource, namespace: str | None, query: dict[str, str], record: dict, *,
               table_version: str | None = None) -> None:
        terms = parse_label_selector(query.get("labelSelector"))
        field_selector = query.get("fieldSelector")
        timeout = query.get("timeoutSeconds")
        deadline = time.monotonic() + (int(timeout) if timeout and timeout.isdigit() else DEFAULT_WATCH_SECONDS)
        since = query.get("resourceVersion") or ""

        def wanted(obj: dict) -> bool:
            return labels_match(obj["metadata"].get("labels"), terms) and field_selector_match(obj, field_selector)

        initial: list[dict] = []
        with self.store.lock:
            events = self.store.watch(res, namespace)
            if since in ("", "0"):
                initial = [{"type": "ADDED", "object": o} for o in
                           self.store.list(res, namespace, query.get("labelSelector"), field_selector)]
            else:
                if not since.isdigit():
                    self.store.unwatch(events)
                    raise bad_request(f"resourceVersion {since!r} is not one this server issued")
                start = int(since)
                if start < self._compacted_rv:
                    # What etcd compaction does to a watcher that held on to an old resourceVersion.
                    expired = ApiError(410, "Expired", f"too old resource version: {start} "
                                       f"({self._compacted_rv + 1})").status()
                    initial = [{"type": "ERROR", "object": expired}]
                else:
                    for rv, event in self._history:
                        if rv > start and event.resource_key == res.key and \
                                (not namespace or event.object["metadata"].get("namespace") == namespace) \
                                and wanted(event.object):
                            initial.append({"type": event.type, "object": event.object})
        try:
            self._start_stream(h, record, "application/json")

            headers_sent = [False]

            def send(event: dict) -> None:
                if table_version and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    # kubectl get -w: every object as a one-row Table, the columns only in the first one.
                    shown = printers.table(res, [event["object"]], version=table_version,
                                           include_object=query.get("includeObject"))
                    if headers_sent[0]:
                        shown["columnDefinitions"] = []
                    headers_sent[0] = True
                    event = {"type": event["type"], "object": shown}
                self._chunk(h, _dumps(event) + b"\n")

            last_rv = [since if since not in ("", "0") else self.store.resource_version]

            def bookmark() -> None:
                # BOOKMARK: only the resourceVersion the watcher has now seen everything up to.
                send({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version,
                                                     "metadata": {"resourceVersion": last_rv[0]}}})

            for event in initial:
                send(event)
                if event["type"] != "ERROR":
                    last_rv[0] = max(last_rv[0], event["object"]["metadata"].get("resourceVersion", "0"), key=int)
            if initial and initial[0]["type"] == "ERROR":
                return
            bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
            next_bookmark = time.monotonic() + self.bookmark_seconds
            while not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    if bookmarks:
                        bookmark()  # the real watch cache sends one just before the watch times out
                    break
                if bookmarks and time.monotonic() >= next_bookmark:
                    last_rv[0] = max(last_rv[0], self.store.resource_version, key=int)
                    bookmark()
                    next_bookmark = time.monotonic() + self.bookmark_seconds
                try:
                    event = events.get(timeout=min(left, 0.25, max(next_bookmark - time.monotonic(), 0.01)))
                except Exception:  # queue.Empty
                    continue
                if wanted(event.object):
                    last_rv[0] = event.object["metadata"]["resourceVersion"]
                    send({"type": event.type, "object": event.object})
            self._chunk(h, b"")
        except (ConnectionError, ssl.SSLError, OSError):
            h.close_connection = True
        finally:
            self.store.unwatch(events)

    # -- the sandbox's control endpoint ------------------------------------------------------

    def _control(self, h: _Handler, path: str, body: bytes) -> Reply:
        try:
            caller = self._authenticate(h.headers.get("Authorization"))
            if not (caller.privileged and caller.name == "admin"):
                raise ApiError(403, "Forbidden", "the sandbox control endpoint needs the admin token")
            if path == "/sandbox/v1/faults" and h.command == "POST":
                request = self._json_body(body)
                if not isinstance(request, dict) or not isinstance(request.get("name"), str):
                    raise bad_request('POST /sandbox/v1/faults wants {"name": "<fault>", "params": {...}}')
                name, params = request["name"], request.get("params") or {}
                handler = self.fault_handlers.get(name)
                if handler is None:
                    raise bad_request(f"unknown fault {name!r}; this sandbox knows: "
                                      f"{', '.join(sorted(self.fault_handlers))}")
                try:
                    result = handler(name, params)
                except ValueError as err:
                    raise bad_request(str(err)) from None
                except ApiError:
                    raise
                logger.info("fault %s injected with %s", name, params)
                return self._json(200, {"fault": name, "params": params, "result": _jsonable(result)})
            if path == "/sandbox/v1/state" and h.command == "GET":
                return self._json(200, self.state_provider())
            if path == "/sandbox/v1/status" and h.command == "GET":
                return self._json(200, self.status())
            raise _not_found_path(path)
        except ApiError as err:
            return Reply(err.code, _dumps(err.status()))

    def status(self) -> dict:
        """Object counts per kind and the armed API faults (for `python -m sandbox status`)."""
        counts: dict[str, int] = {}
        for key, _ in self.store.all_objects():
            counts[key] = counts.get(key, 0) + 1
        return {"objects": counts, "resourceVersion": self.store.resource_version, "api_faults": self.faults.active(),
                **self.status_provider()}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)

