"""The sandbox ALB's data plane: real HTTP listeners on loopback that behave like an Application Load Balancer.

The controller stand-in (ingress.py) builds one `LoadBalancer` per IngressGroup and hands it the
group's Ingresses on every pass; this module does what AWS does with that model:

- one listener per listen port of the group, each a real HTTP server on 127.0.0.1 (its URL is
  what `.sandbox/state.json` lists as `alb_listeners`); the rules of an Ingress apply to the
  ports that Ingress declares; no matching rule: 404, the listener's default action the
  controller creates. Sources outside the port's `inbound-cidrs` are refused (on AWS the
  security group drops them, so clients time out; here the connection is closed at once).
- target-type ip: one target group per Service port of a rule, targets = the ready addresses of
  the Service's Endpoints at the container port. A target that leaves them (NotReady, deleted)
  is deregistered: `draining` for `deregistration_delay.timeout_seconds` (default 300 s): after
  `DEREGISTRATION_PROPAGATION` seconds it gets no new requests; requests in flight continue until
  the target answers or closes them, and are cut when the delay ends. No registered target: 503.
  A target that refuses or resets the connection before answering anything gets its client a 502.
- health checks per target from the annotations (Ingress, overridden by the Service):
  healthcheck-path (default /), -port (traffic-port), -interval-seconds (15), -timeout-seconds
  (5), healthy-/unhealthy-threshold-count (2/2), success-codes (200). A new target is `initial`
  and gets no request until its first check passes, which makes it healthy (one pass: AWS's "After
  your target is registered, it must pass one health check to be considered healthy"); a target
  back from `unhealthy` needs the healthy threshold. Requests go to healthy targets; when the
  group holds only unhealthy ones the ALB fails open and uses them all ("If a target group contains
  only unhealthy registered targets, the load balancer routes requests to all those targets"; both
  from the ELB user guide, "Health checks for Application Load Balancer target groups"). Initial
  targets alone: 503.
- `load-balancer-attributes: idle_timeout.timeout_seconds=N` (default 60): a connection on which
  no byte moves for that long is closed; a request whose target sends nothing for that long gets
  504. Backend connections are kept alive and reused; the ALB learns that a target closed one
  only when it next sends a request on it, and that request gets 502. On AWS that race is lost
  only when the close and the request cross, hence sporadic 502s; the sandbox loses it every
  time, so a keep-alive shorter than the idle timeout shows in any test.
- the ALB connects to targets from its subnets (`ClusterOptions.alb_source_address`); a target
  whose pod's NetworkPolicies do not admit that address on the port drops the connection: its
  health checks time out and a request sent to it gets 504 (network_policy.py).
- HTTPS listeners (`listen-ports` `{"HTTPS": 443}`) serve the certificates of `certificate-arn`
  (merged across the group; each must be an ISSUED certificate in the sandbox's ACM, whose key
  the sandbox holds), and need one. `ssl-redirect: '443'` (one value for the whole group) turns
  every HTTP listener into a 301 to that HTTPS port, whatever its rules say. Here the Location
  names the HTTPS listener's loopback port, so a client that follows it stays in the sandbox.

Timings follow the sandbox's time scale (`ClusterOptions.scaled`), so `--fast` behaves the same,
only quicker.

Sources: kubernetes-sigs/aws-load-balancer-controller docs/guide/ingress/annotations.md
(annotation names, defaults, the IngressGroup merge rules, the 0-3600 s deregistration range);
AWS "Edit attributes for your Application Load Balancer" (connection idle timeout; a target that
closes its connection first makes the ALB answer 502) and the EKS knowledge-center article on
HTTP 504 (a target silent past the idle timeout); AWS target group health checks (defaults,
fail-open when no target is healthy; deregistration delay and draining).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import http.server
import ipaddress
import itertools
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from sandbox.speech import read_http_body

ANNOTATION = "alb.ingress.kubernetes.io/"
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_DEREGISTRATION_DELAY = 300.0
# From a pod leaving its Endpoints to the ALB sending it no more requests: the controller's
# reconcile, the DeregisterTargets call and its spread to the ALB's nodes. A few seconds on AWS
# (an assumption: AWS gives no figure; kubernetes-sigs/aws-load-balancer-controller issue 3270
# and GitLab's charts issue 4405 report new requests reaching a target already shown draining),
# which is why servers behind an ALB sleep in a preStop hook before they stop accepting.
DEREGISTRATION_PROPAGATION = 5.0
DEFAULT_CIDRS = ("0.0.0.0/0", "::/0")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "proxy-authenticate", "proxy-authorization", "content-length"}
MAX_BODY = 64 * 1024 * 1024


class AlbConfigError(ValueError):
    """An annotation value the controller would refuse (reported as FailedBuildModel)."""


# ---------------------------------------------------------------------------------------------
# Annotations


def annotation(obj: dict | None, name: str) -> str | None:
    return (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION + name)


def string_map(raw: str | None, what: str) -> dict[str, str]:
    """`key=value,key=value` (the controller's stringMap)."""
    out: dict[str, str] = {}
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AlbConfigError(f"failed to parse stringMap annotation, {ANNOTATION}{what}: {raw}")
        out[key.strip()] = value.strip()
    return out


def seconds_attribute(attributes: dict[str, str], key: str, default: float, low: int, high: int) -> float:
    raw = attributes.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise AlbConfigError(f"{key}={raw}: must be an integer from {low} to {high}")
    return float(raw)


def idle_timeout_of(ingress: dict) -> float | None:
    """The Ingress's idle_timeout.timeout_seconds (1-4000), or None when it does not set one."""
    attributes = string_map(annotation(ingress, "load-balancer-attributes"), "load-balancer-attributes")
    if "idle_timeout.timeout_seconds" not in attributes:
        return None
    return seconds_attribute(attributes, "idle_timeout.timeout_seconds", DEFAULT_IDLE_TIMEOUT, 1, 4000)


def inbound_cidrs(ingress: dict) -> list:
    raw = annotation(ingress, "inbound-cidrs")
    values = [v.strip() for v in (raw or ", ".join(DEFAULT_CIDRS)).split(",") if v.strip()]
    try:
        return [ipaddress.ip_network(v, strict=False) for v in values]
    except ValueError as err:
        raise AlbConfigError(f"inbound-cidrs {raw!r}: {err}") from None


def certificate_arns(ingress: dict) -> list[str]:
    return [v.strip() for v in (annotation(ingress, "certificate-arn") or "").split(",") if v.strip()]


def ssl_redirect_port(ingress: dict) -> int | None:
    raw = annotation(ingress, "ssl-redirect")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise AlbConfigError(f"failed to parse integer annotation, {ANNOTATION}ssl-redirect: {raw}")
    return int(raw)


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/"
    port: str = "traffic-port"
    interval: float = 15.0
    timeout: float = 5.0
    healthy: int = 2
    unhealthy: int = 2
    codes: str = "200"

    @classmethod
    def of(cls, ingress: dict, service: dict | None) -> "HealthCheck":
        """The health check a target group gets: Service annotations win over the Ingress's."""
        def value(name: str) -> str | None:
            return annotation(service, name) or annotation(ingress, name)

        def number(name: str, default: float, low: int, high: int) -> int:
            raw = value(name)
            if raw is None:
                return int(default)
            if not raw.strip().isdigit() or not low <= int(raw) <= high:
                raise AlbConfigError(f"{ANNOTATION}{name}: {raw!r} must be an integer from {low} to {high}")
            return int(raw)

        check = cls(path=value("healthcheck-path") or "/", port=value("healthcheck-port") or "traffic-port",
                    interval=number("healthcheck-interval-seconds", 15, 5, 300),
                    timeout=number("healthcheck-timeout-seconds", 5, 2, 120),
                    healthy=number("healthy-threshold-count", 2, 2, 10),
                    unhealthy=number("unhealthy-threshold-count", 2, 2, 10),
                    codes=value("success-codes") or "200")
        if check.timeout >= check.interval:
            raise AlbConfigError(f"health check timeout {check.timeout:g}s must be smaller than its interval "
                                 f"{check.interval:g}s")
        check.accepts(200)  # parse the success codes now: a bad value fails the model, not a check
        return check

    def accepts(self, status: int) -> bool:
        """Whether `status` is one of the success codes (`200`, `200,201`, `200-299`)."""
        for part in self.codes.split(","):
            low, _, high = part.strip().partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise AlbConfigError(f"{ANNOTATION}success-codes {self.codes!r}: use codes and ranges like 200,300-399")
            if int(low) <= status <= int(high or low):
                return True
        return False


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    """One registered pod IP:port. state: initial | healthy | unhealthy | draining."""

    pod: str
    port: int
    state: str = "initial"
    reason: str = "Elb.RegistrationInProgress"
    successes: int = 0
    failures: int = 0
    next_check: float = 0.0
    checking: bool = False
    drain_until: float | None = None
    routed_until: float = 0.0  # draining: the ALB's nodes still send it requests until then
    was_healthy: bool = False  # draining: whether it was healthy when deregistered
    in_flight: set = field(default_factory=set)      # backend sockets with a request pending
    idle: list = field(default_factory=list)         # (HTTPConnection, last used) kept alive


class TargetGroup:
    """Targets of one Service port, their health, and the connections to them."""

    def __init__(self, namespace: str, service: str, port: Any):
        self.namespace, self.service, self.port = namespace, service, port
        self.health = HealthCheck()
        self.deregistration_delay = DEFAULT_DEREGISTRATION_DELAY
        self.targets: dict[tuple[str, int], Target] = {}
        self.lock = threading.Lock()
        self._turn = itertools.count()

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"

    def register(self, wanted: set[tuple[str, int]], now: float, scaled: Callable[[float], float]) -> None:
        """Targets are the ready endpoints: new ones start `initial`, vanished ones start draining."""
        with self.lock:
            for key in wanted:
                target = self.targets.get(key)
                if target is None or target.state == "draining":
                    self.targets[key] = Target(*key, next_check=now)
            for key, target in self.targets.items():
                if key not in wanted and target.state != "draining":
                    target.was_healthy = target.state == "healthy"
                    target.state, target.reason = "draining", "Target.DeregistrationInProgress"
                    target.drain_until = now + scaled(self.deregistration_delay)
                    target.routed_until = now + scaled(DEREGISTRATION_PROPAGATION)

    def expire(self, now: float) -> None:
        """Drained targets go; whatever they still had in flight is cut."""
        with self.lock:
            done = [k for k, t in self.targets.items() if t.state == "draining" and now >= (t.drain_until or 0)]
            gone = [self.targets.pop(k) for k in done]
        for target in gone:
            for sock in list(target.in_flight):
                _shut(sock)
            for conn, _ in target.idle:
                conn.close()

    def pick(self) -> Target | None:
        """A healthy target, round robin; none healthy: an unhealthy one (fail open); else None.

        A target still `initial` (registered, first check not passed) is never picked.
        """
        now = time.monotonic()
        with self.lock:
            live = [t for t in self.targets.values()
                    if t.state != "initial" and (t.state != "draining" or now < t.routed_until)]
            healthy = [t for t in live if t.state == "healthy" or (t.state == "draining" and t.was_healthy)]
            choice = healthy or live
            return choice[next(self._turn) % len(choice)] if choice else None

    def record(self, target: Target, ok: bool, reason: str) -> None:
        with self.lock:
            target.checking = False
            if target.state == "draining":
                return
            if ok:
                target.successes, target.failures = target.successes + 1, 0
                if target.state == "initial" or (target.state != "healthy"
                                                 and target.successes >= self.health.healthy):
                    target.state, target.reason = "healthy", ""
            else:
                target.failures, target.successes = target.failures + 1, 0
                if target.state != "unhealthy" and target.failures >= self.health.unhealthy:
                    target.state, target.reason = "unhealthy", reason

    def states(self) -> dict[str, str]:
        with self.lock:
            return {f"{t.pod}:{t.port}": t.state for t in self.targets.values()}


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Listeners


@dataclass(frozen=True)
class Rule:
    host: str | None
    path: str
    exact: bool
    group: TargetGroup

    def matches(self, host: str, path: str) -> bool:
        if self.host and self.host.lower() != host.split(":")[0].lower():
            return False
        if self.exact:
            return path == self.path
        prefix = self.path.rstrip("/")
        return path == prefix or path.startswith(prefix + "/") or not prefix


class _ListenerServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class Listener:
    """One listen port of the ALB: a real HTTP or HTTPS server on loopback.

    + protocol: "HTTP" or "HTTPS"
    + certificates: for HTTPS, (cert PEM path, key PEM path) pairs; the first is the default one
    """

    def __init__(self, lb: "LoadBalancer", port: int, protocol: str = "HTTP", certificates: tuple = ()):
        self.lb, self.port, self.protocol, self.certificates = lb, port, protocol, tuple(certificates)
        self.rules: list[Rule] = []
        self.redirect_to: int | None = None  # ssl-redirect: the HTTPS listen port every request is sent to
        self.cidrs: list = [ipaddress.ip_network(c) for c in DEFAULT_CIDRS]
        self.server = _ListenerServer(("127.0.0.1", 0), _proxy_handler(self))
        if protocol == "HTTPS":
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2  # ELBSecurityPolicy-2016-08 and later
            for cert, key in self.certificates:
                context.load_cert_chain(cert, key)
            # The handshake happens in the request's own thread, not in the accepting one.
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.url = f"{protocol.lower()}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"alb-listener-{port}", daemon=True)
        self._thread.start()

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.cidrs if net.version == ip.version)

    def route(self, host: str, path: str) -> TargetGroup | None:
        for rule in self.rules:
            if rule.matches(host, path):
                return rule.group
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _proxy_handler(listener: Listener):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def version_string(self) -> str:
            return "awselb/2.0"

        @property
        def timeout(self) -> float:  # read by StreamRequestHandler.setup: the client side's idle timeout
            return listener.lb.idle_timeout_scaled

        def handle(self) -> None:
            if not listener.allows(self.client_address[0]):
                return  # outside inbound-cidrs: the security group lets nothing through
            try:
                if isinstance(self.connection, ssl.SSLSocket):
                    self.connection.do_handshake()
                super().handle()
            except (TimeoutError, ConnectionError, ssl.SSLError):
                pass  # idle client connection closed by the ALB, the client went away, a failed handshake

        def do_GET(self) -> None:
            if listener.redirect_to is not None:
                listener.lb.redirect(listener, self)
            else:
                listener.lb.forward(listener, self)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# ---------------------------------------------------------------------------------------------
# The load balancer


class LoadBalancer:
    """One ALB (an IngressGroup): listeners, target groups, the idle timeout, health checks."""

    def __init__(self, group: str, scaled: Callable[..., float], local_port: Callable[[str, str, int], int | None]):
        self.group = group
        self.scaled = scaled
        self.local_port = local_port  # (namespace, pod, container port) -> loopback port
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        self.listeners: dict[int, Listener] = {}
        self.target_groups: dict[tuple, TargetGroup] = {}
        self.reachable: Callable[[str, str, int], bool] = lambda namespace, pod, port: True

    @property
    def idle_timeout_scaled(self) -> float:
        return self.scaled(self.idle_timeout, 0.05)

    # -- the model from the Ingresses ------------------------------------------------------------

    def configure(self, members: list[tuple[dict, list[tuple[str, int]]]], services: dict, endpoints: dict,
                  certificate: Callable[[str], tuple] | None = None,
                  reachable: Callable[[str, str, int], bool] | None = None) -> None:
        """Apply the group: (Ingress, its (protocol, port) listen entries) pairs, Services and Endpoints
        by (namespace, name); `certificate(arn)` gives the (cert, key) files of an ACM certificate or
        raises AlbConfigError; `reachable(namespace, pod, port)` says whether the pod's NetworkPolicies
        let the ALB's connections in (default: always).

        Raises AlbConfigError (nothing changed) for annotations the controller would refuse.
        """
        idle = {t for t in (idle_timeout_of(ing) for ing, _ in members) if t is not None}
        if len(idle) > 1:
            raise AlbConfigError(f"conflicting load balancer attributes idle_timeout.timeout_seconds: "
                                 f"{sorted(int(t) for t in idle)}; the attribute is group-wide, so every Ingress "
                                 f"of group {self.group} must give the same value or leave it out")
        protocols, redirect, certificates = self._listener_model(members, certificate)
        rules: dict[int, list[Rule]] = {}
        cidrs: dict[int, list] = {}
        groups: dict[tuple, TargetGroup] = {}
        for ing, ports in members:
            ns = ing["metadata"]["namespace"]
            nets = inbound_cidrs(ing)
            ing_rules = []
            for rule in (ing.get("spec") or {}).get("rules") or []:
                for path in ((rule.get("http") or {}).get("paths")) or []:
                    svc = ((path.get("backend") or {}).get("service")) or {}
                    port = (svc.get("port") or {}).get("number") or (svc.get("port") or {}).get("name")
                    group = self._target_group(groups, ns, svc.get("name"), port, ing, services)
                    ing_rules.append(Rule(rule.get("host"), path.get("path") or "/",
                                          path.get("pathType") == "Exact", group))
            default = ((ing.get("spec") or {}).get("defaultBackend") or {}).get("service")
            if default:
                port = (default.get("port") or {}).get("number") or (default.get("port") or {}).get("name")
                ing_rules.append(Rule(None, "/", False, self._target_group(groups, ns, default.get("name"), port,
                                                                           ing, services)))
            for _, port in ports:
                rules.setdefault(port, []).extend(ing_rules)
                cidrs[port] = nets
        # Everything parsed: now change the running ALB.
        self.idle_timeout = idle.pop() if idle else DEFAULT_IDLE_TIMEOUT
        self.target_groups = groups
        self.reachable = reachable or (lambda namespace, pod, port: True)
        for port in [p for p, listener in self.listeners.items() if p not in rules
                     or (listener.protocol, listener.certificates) != (protocols[p], certificates.get(p, ()))]:
            self.listeners.pop(port).close()
        for port, port_rules in rules.items():
            listener = self.listeners.get(port) or self.listeners.setdefault(
                port, Listener(self, port, protocols[port], certificates.get(port, ())))
            listener.rules, listener.cidrs = port_rules, cidrs[port]
            listener.redirect_to = redirect if protocols[port] == "HTTP" else None
        now = time.monotonic()
        for group in groups.values():
            group.register(self._ready_targets(group, services, endpoints), now, self.scaled)

    def _listener_model(self, members: list, certificate: Callable[[str], tuple] | None) -> tuple[dict, int | None, dict]:
        """Protocol per listen port, the ssl-redirect port, and the certificate files per HTTPS port."""
        protocols: dict[int, str] = {}
        for ing, entries in members:
            for protocol, port in entries:
                if protocols.setdefault(port, protocol) != protocol:
                    raise AlbConfigError(f"conflicting protocols for port {port}: {protocols[port]} and {protocol}")
        redirects = {p for p in (ssl_redirect_port(ing) for ing, _ in members) if p is not None}
        if len(redirects) > 1:
            raise AlbConfigError(f"conflicting sslRedirect port: {sorted(redirects)}; ssl-redirect is exclusive "
                                 f"across group {self.group}: give one value or leave it out")
        redirect = redirects.pop() if redirects else None
        if redirect is not None and protocols.get(redirect) != "HTTPS":
            raise AlbConfigError(f"listener does not exist for SSLRedirect port: {redirect}; listen-ports must "
                                 f"contain {{\"HTTPS\": {redirect}}}")
        certificates: dict[int, tuple] = {}
        for ing, entries in members:
            arns = certificate_arns(ing)
            for protocol, port in entries:
                if protocol != "HTTPS":
                    continue
                if not arns:
                    raise AlbConfigError(f"no certificate found for HTTPS listener on port {port} of Ingress "
                                         f"{ing['metadata']['namespace']}/{ing['metadata']['name']}: set "
                                         f"{ANNOTATION}certificate-arn")
                if certificate is None:
                    raise AlbConfigError(f"certificate-arn {arns[0]}: this sandbox has no ACM to find it in")
                files = [certificate(arn) for arn in arns]
                certificates[port] = tuple(dict.fromkeys(certificates.get(port, ()) + tuple(files)))
        return protocols, redirect, certificates

    def _target_group(self, groups: dict, ns: str, service: str, port: Any, ing: dict, services: dict) -> TargetGroup:
        key = (ns, service, port)
        group = groups.get(key)
        if group is None:
            group = self.target_groups.get(key) or TargetGroup(ns, service, port)
            svc = services.get((ns, service))
            group.health = HealthCheck.of(ing, svc)
            attributes = string_map(annotation(svc, "target-group-attributes") or
                                    annotation(ing, "target-group-attributes"), "target-group-attributes")
            group.deregistration_delay = seconds_attribute(attributes, "deregistration_delay.timeout_seconds",
                                                           DEFAULT_DEREGISTRATION_DELAY, 0, 3600)
            groups[key] = group
        return group

    @staticmethod
    def _ready_targets(group: TargetGroup, services: dict, endpoints: dict) -> set[tuple[str, int]]:
        svc = services.get((group.namespace, group.service))
        eps = endpoints.get((group.namespace, group.service))
        if svc is None or eps is None:
            return set()
        entry = next((p for p in (svc.get("spec") or {}).get("ports") or []
                      if p.get("port") == group.port or (p.get("name") and p.get("name") == group.port)), None)
        if entry is None:
            return set()
        wanted = set()
        for subset in eps.get("subsets") or []:
            ports = subset.get("ports") or []
            chosen = next((p for p in ports if entry.get("name") and p.get("name") == entry["name"]),
                          ports[0] if len(ports) == 1 else None)
            if chosen is None:
                continue
            for address in subset.get("addresses") or []:
                pod = (address.get("targetRef") or {}).get("name")
                if pod:
                    wanted.add((pod, int(chosen["port"])))
        return wanted

    # -- health checks ---------------------------------------------------------------------------

    def due_checks(self, now: float) -> list[tuple[TargetGroup, Target]]:
        """Targets whose next health check is due (marked as being checked)."""
        due = []
        for group in list(self.target_groups.values()):
            group.expire(now)
            with group.lock:
                for target in group.targets.values():
                    if target.state != "draining" and not target.checking and now >= target.next_check:
                        target.checking = True
                        target.next_check = now + self.scaled(group.health.interval, 0.05)
                        due.append((group, target))
        return due

    def check(self, group: TargetGroup, target: Target) -> None:
        """One health check: a fresh connection, GET path, success codes, within the timeout."""
        health = group.health
        port = target.port if health.port == "traffic-port" else int(health.port)
        local = self.local_port(group.namespace, target.pod, port)
        if not self.reachable(group.namespace, target.pod, port):
            group.record(target, False, "Target.Timeout: Request timed out")  # the policy drops the SYN
            return
        if local is None:
            group.record(target, False, "Target.FailedHealthChecks: connection refused")
            return
        conn = http.client.HTTPConnection("127.0.0.1", local, timeout=self.scaled(health.timeout, 0.25))
        try:
            conn.request("GET", health.path, headers={"User-Agent": "ELB-HealthChecker/2.0"})
            status = conn.getresponse().status
            ok = health.accepts(status)
            group.record(target, ok, "" if ok else f"Target.ResponseCodeMismatch: {status}")
        except TimeoutError:
            group.record(target, False, "Target.Timeout: Request timed out")
        except (OSError, http.client.HTTPException) as err:
            group.record(target, False, f"Target.FailedHealthChecks: {err}")
        finally:
            conn.close()

    # -- requests --------------------------------------------------------------------------------

    def redirect(self, listener: Listener, h: http.server.BaseHTTPRequestHandler) -> None:
        """ssl-redirect: 301 to https, same host and path (on AWS port 443; here that listener's loopback port)."""
        try:
            read_http_body(h.rfile, h.headers, MAX_BODY)
        except ValueError as err:
            _answer(h, 400, str(err))
            return
        target = self.listeners.get(listener.redirect_to or 0)
        host = urllib.parse.urlsplit("//" + (h.headers.get("Host") or "127.0.0.1")).hostname
        port = int(target.url.rsplit(":", 1)[1]) if target is not None else listener.redirect_to
        body = b"<html><body><center><h1>301 Moved Permanently</h1></center></body></html>\n"
        h.send_response(301, "Moved Permanently")
        h.send_header("Location", f"https://{host}:{port}{h.path}")
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def forward(self, listener: Listener, h: http.server.BaseHTTPRequestHandler) -> None:
        """Proxy one client request to a target; answer 4xx/5xx as the ALB does."""
        try:
            body = read_http_body(h.rfile, h.headers, MAX_BODY)
        except ValueError as err:
            _answer(h, 400, str(err))
            return
        group = listener.route(h.headers.get("Host", ""), h.path.split("?", 1)[0])
        if group is None:
            _answer(h, 404, "")  # the listener's default action: fixed response 404
            return
        target = group.pick()
        if target is None:
            _answer(h, 503, "503 Service Temporarily Unavailable")
            return
        local = self.local_port(group.namespace, target.pod, target.port)
        if not self.reachable(group.namespace, target.pod, target.port):
            _answer(h, 504, "504 Gateway Time-out")  # the connection attempt timed out: dropped by a NetworkPolicy
            return
        if local is None:
            _answer(h, 502, "502 Bad Gateway")
            return
        conn = self._connection(group, target, local)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = h.client_address[0]
        headers["X-Forwarded-Proto"] = listener.protocol.lower()
        headers["X-Forwarded-Port"] = str(listener.port)
        sock = None
        try:
            conn.request(h.command, h.path, body=body or None, headers=headers)
            sock = conn.sock
            with group.lock:
                target.in_flight.add(sock)
            response = conn.getresponse()
            data = response.read()
        except TimeoutError:
            conn.close()
            _answer(h, 504, "504 Gateway Time-out")  # the target sent nothing for the idle timeout
            return
        except (OSError, http.client.HTTPException):
            conn.close()
            _answer(h, 502, "502 Bad Gateway")  # the target closed or reset the connection
            return
        finally:
            if sock is not None:
                with group.lock:
                    target.in_flight.discard(sock)
        if response.will_close:
            conn.close()
        else:
            with group.lock:
                target.idle.append((conn, time.monotonic()))
        h.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP | {"server", "date"}:
                h.send_header(name, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _connection(self, group: TargetGroup, target: Target, local: int) -> http.client.HTTPConnection:
        """A kept-alive connection to the target if one is younger than the idle timeout, else a new one.

        Whether the target has closed it meanwhile is not looked at: the ALB finds out by using it.
        """
        now = time.monotonic()
        idle = self.idle_timeout_scaled
        with group.lock:
            while target.idle:
                conn, used = target.idle.pop()
                if now - used < idle and conn.port == local:
                    conn.timeout = idle
                    if conn.sock is not None:
                        conn.sock.settimeout(idle)
                    return conn
                conn.close()  # idle past the ALB's own timeout: the ALB closed it first
        return http.client.HTTPConnection("127.0.0.1", local, timeout=idle)

    def states(self) -> dict[str, dict[str, str]]:
        """Target health by target group name: {"ns/svc:80": {"pod:8880": "healthy"}}."""
        return {group.name: group.states() for group in self.target_groups.values()}

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        for group in self.target_groups.values():
            with group.lock:
                for target in group.targets.values():
                    for conn, _ in target.idle:
                        conn.close()


def _answer(h: http.server.BaseHTTPRequestHandler, status: int, text: str) -> None:
    body = (f"<html><body><center><h1>{text}</h1></center></body></html>\n" if text else "").encode()
    h.send_response(status)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


class HealthChecker:
    """One thread that starts due health checks of every load balancer on a small pool."""

    def __init__(self, balancers: Callable[[], list[LoadBalancer]], tick: float):
        self._balancers, self._tick = balancers, tick
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="alb-health")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alb-health-checks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._tick):
            for lb in self._balancers():
                for group, target in lb.due_checks(time.monotonic()):
                    try:
                        self._pool.submit(lb.check, group, target)
                    except RuntimeError:
                        return  # pool shut down: stopping

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
