"""The AWS Load Balancer Controller stand-in: one ALB per IngressGroup, its DNS name on every member.

Present when the controller's Deployment `aws-load-balancer-controller` exists in kube-system and
an IngressClass names controller `ingress.k8s.aws/alb`. Ingresses of that class form groups by
`alb.ingress.kubernetes.io/group.name` (without it each Ingress is its own group `ns/name`);
listen ports (`alb.ingress.kubernetes.io/listen-ports`) are merged across the group. The load
balancer comes from the sandbox's AWS (`ensure_load_balancer`), so it exists in ELBv2 tagged as
the controller tags it; without AWS a plausible hostname is made up. When the last Ingress of a
group goes, its load balancer is deleted.

Each group also gets a working data plane (alb.py): real listeners on loopback that route by the
rules to the ready pods, health-check them and enforce the idle timeout, as the ALB would. Their
URLs are published through `on_listeners` ({group: {port: url}}; the sandbox writes them to
state.json as `alb_listeners`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Callable

from .alb import AlbConfigError, HealthChecker, LoadBalancer
from .common import DEPLOYMENTS, ENDPOINTS, INGRESSCLASSES, INGRESSES, NETWORKPOLICIES, PODS, SERVICES, is_deleting
from .network_policy import admits

if TYPE_CHECKING:
    from .cluster import Cluster

ALB_CONTROLLER = "ingress.k8s.aws/alb"
CONTROLLER_DEPLOYMENT = ("kube-system", "aws-load-balancer-controller")
GROUP_ANNOTATION = "alb.ingress.kubernetes.io/group.name"
PORTS_ANNOTATION = "alb.ingress.kubernetes.io/listen-ports"
log = logging.getLogger(__name__)


class ListenPortsError(ValueError):
    pass


def listen_ports(ingress: dict) -> list[int]:
    """The ports an Ingress asks for; the controller's default is HTTP 80 (HTTPS 443 with a certificate)."""
    return [port for _, port in listen_entries(ingress)]


def listen_entries(ingress: dict) -> list[tuple[str, int]]:
    """(protocol, port) of each listen port an Ingress asks for."""
    annotations = ingress["metadata"].get("annotations") or {}
    raw = annotations.get(PORTS_ANNOTATION)
    if not raw:
        return [("HTTPS", 443)] if annotations.get("alb.ingress.kubernetes.io/certificate-arn") else [("HTTP", 80)]
    try:
        entries = json.loads(raw)
        out = []
        for entry in entries:
            if not isinstance(entry, dict) or len(entry) != 1:
                raise ValueError(f"entry {entry!r} is not one protocol: port pair")
            (protocol, port), = entry.items()
            if protocol not in ("HTTP", "HTTPS") or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"entry {entry!r} needs HTTP or HTTPS and a port 1-65535")
            out.append((protocol, port))
        return out
    except (ValueError, TypeError, AttributeError) as err:
        raise ListenPortsError(f"failed to parse listen-ports configuration: `{raw}`: {err}") from None


class AlbController:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self._groups: dict[str, tuple[tuple[int, ...], str]] = {}  # group -> (ports, hostname)
        self.balancers: dict[str, LoadBalancer] = {}  # group -> its data plane
        self.on_listeners: Callable[[dict[str, dict[int, str]]], None] | None = None
        self._published: dict[str, dict[int, str]] = {}
        self._health: HealthChecker | None = None
        self._certificates: dict[str, tuple] = {}  # ACM ARN -> (cert, key) files, once found ISSUED
        # group -> monotonic time its ALB turns `active`: until then it has a DNS name that answers
        # nothing, so its listeners are not published (profile.py: alb_provisioning, with a time scale)
        self.active_at: dict[str, float] = {}

    def listeners(self) -> dict[str, dict[int, str]]:
        """{group: {listen port: local URL}} of every load balancer that is active."""
        now = time.monotonic()
        return {group: {port: listener.url for port, listener in sorted(lb.listeners.items())}
                for group, lb in sorted(self.balancers.items()) if self.active_at.get(group, 0.0) <= now}

    def target_health(self, group: str) -> dict[str, dict[str, str]]:
        """Target states of a group's ALB: {"ns/service:port": {"pod:containerPort": "healthy"}}."""
        lb = self.balancers.get(group)
        return lb.states() if lb is not None else {}

    def stop(self) -> None:
        """Close every listener and stop the health checks (the cluster is stopping)."""
        if self._health is not None:
            self._health.stop()
        for lb in self.balancers.values():
            lb.close()
        self.balancers.clear()

    def _publish(self) -> None:
        current = self.listeners()
        if current != self._published:
            self._published = current
            if self.on_listeners is not None:
                self.on_listeners(current)

    def present(self) -> bool:
        """Whether the controller runs here: its Deployment in kube-system and an IngressClass for it."""
        if self.store.get(DEPLOYMENTS, CONTROLLER_DEPLOYMENT[0], CONTROLLER_DEPLOYMENT[1]) is None:
            return False
        return any((c.get("spec") or {}).get("controller") == ALB_CONTROLLER for c in self.cluster.snapshot(INGRESSCLASSES))

    def _alb_classes(self) -> set[str]:
        return {c["metadata"]["name"] for c in self.cluster.snapshot(INGRESSCLASSES)
                if (c.get("spec") or {}).get("controller") == ALB_CONTROLLER}

    def sync(self) -> None:
        """Give every Ingress of class alb its group's load balancer hostname; drop emptied groups."""
        if not self.present():
            return
        classes = self._alb_classes()
        groups: dict[str, list[dict]] = {}
        for ing in self.cluster.snapshot(INGRESSES):
            if is_deleting(ing):
                continue
            annotations = ing["metadata"].get("annotations") or {}
            cls = (ing.get("spec") or {}).get("ingressClassName") or annotations.get("kubernetes.io/ingress.class")
            if cls not in classes:
                continue
            group = annotations.get(GROUP_ANNOTATION) or f"{ing['metadata']['namespace']}/{ing['metadata']['name']}"
            groups.setdefault(group, []).append(ing)
        for group, members in groups.items():
            self._reconcile_group(group, members)
        for group in [g for g in self._groups if g not in groups]:
            self._delete_group(group)
        self._publish()

    def _reconcile_group(self, group: str, members: list[dict]) -> None:
        ports: set[int] = set()
        for ing in members:
            try:
                ports.update(listen_ports(ing))
            except ListenPortsError as err:
                # An error in one member stops the whole group, as with the real controller.
                for member in members:
                    self.cluster.events.record(member, "Warning", "FailedBuildModel",
                                               f"Failed build model due to {err}", component="ingress")
                return
        try:
            self._configure_data_plane(group, members)
        except AlbConfigError as err:
            for member in members:
                self.cluster.events.record(member, "Warning", "FailedBuildModel",
                                           f"Failed build model due to {err}", component="ingress")
            return
        wanted = tuple(sorted(ports))
        known = self._groups.get(group)
        if known is None or known[0] != wanted:
            try:
                hostname = self._ensure(group, list(wanted))
            except Exception as err:  # AWS stand-in failed: report like the controller, retry next pass
                log.warning("ALB for group %s: %s", group, err)
                for member in members:
                    self.cluster.events.record(member, "Warning", "FailedDeployModel",
                                               f"Failed deploy model due to {err}", component="ingress")
                return
            self._groups[group] = (wanted, hostname)
            if known is None:
                options = self.cluster.options
                provisioning = options.profiled("alb_provisioning") if options.time_scale else 0.0
                self.active_at[group] = time.monotonic() + provisioning
            for member in members:
                self.cluster.events.record(member, "Normal", "SuccessfullyReconciled", "Successfully reconciled",
                                           component="ingress")
        hostname = self._groups[group][1]
        for ing in members:
            lb = [{"hostname": hostname}]
            if ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") != lb:
                def write(obj: dict, lb=lb) -> None:
                    obj.setdefault("status", {})["loadBalancer"] = {"ingress": lb}
                self.store.mutate(INGRESSES, ing["metadata"]["namespace"], ing["metadata"]["name"], write)

    def _configure_data_plane(self, group: str, members: list[dict]) -> None:
        lb = self.balancers.get(group)
        if lb is None:
            lb = self.balancers[group] = LoadBalancer(group, self.cluster.options.scaled, self.cluster.kubelet.local_port)
        if self._health is None:
            self._health = HealthChecker(lambda: list(self.balancers.values()), self.cluster.options.tick / 3)
        services = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.cluster.snapshot(SERVICES)}
        endpoints = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.cluster.snapshot(ENDPOINTS)}
        policies = self.cluster.snapshot(NETWORKPOLICIES)
        pods = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.cluster.snapshot(PODS)}
        source = self.cluster.options.alb_source_address

        def reachable(namespace: str, pod: str, port: int) -> bool:
            found = pods.get((namespace, pod))
            return found is None or admits(policies, found, source, port)

        lb.configure([(ing, listen_entries(ing)) for ing in members], services, endpoints, self._certificate,
                     reachable)

    def _certificate(self, arn: str) -> tuple:
        """(cert, key) files of an ISSUED ACM certificate, as the controller resolves certificate-arn."""
        if arn in self._certificates:
            return self._certificates[arn]
        aws = self.cluster.aws
        if aws is None:
            raise AlbConfigError(f"certificate-arn {arn}: this sandbox runs without AWS, so there is no ACM")
        try:
            found = aws.client("acm").describe_certificate(CertificateArn=arn)["Certificate"]
        except Exception as err:  # ClientError (not found, malformed ARN): the controller's model build fails
            raise AlbConfigError(f"certificate-arn {arn}: {err}") from None
        if found.get("Status") != "ISSUED":
            raise AlbConfigError(f"certificate-arn {arn} is {found.get('Status')}, not ISSUED")
        files = aws.certificate_files.get(arn)
        if files is None:
            raise AlbConfigError(f"certificate-arn {arn}: its private key is not in this sandbox (only the "
                                 f"certificate the sandbox imported can be served)")
        self._certificates[arn] = files
        return files

    def _ensure(self, group: str, ports: list[int]) -> str:
        aws = self.cluster.aws
        if aws is not None:
            return aws.ensure_load_balancer(group, ports)
        digest = hashlib.sha256(group.encode()).hexdigest()
        short = "".join(ch for ch in group if ch.isalnum() or ch == "-")[:17]
        return f"internal-k8s-{short}-{digest[:10]}-{int(digest[10:19], 16) % 10**10}.us-west-2.elb.amazonaws.com"

    def _delete_group(self, group: str) -> None:
        aws = self.cluster.aws
        if aws is not None:
            try:
                aws.delete_load_balancer(group)
            except Exception as err:  # retried next pass
                log.warning("deleting the ALB of group %s: %s", group, err)
                return
        del self._groups[group]
        self.active_at.pop(group, None)
        lb = self.balancers.pop(group, None)
        if lb is not None:
            lb.close()
