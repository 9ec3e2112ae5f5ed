"""kube-proxy stand-in: lets a pod's process connect to a Service by its env vars.

Upstream, the kubelet injects `{SVC}_SERVICE_HOST` / `{SVC}_SERVICE_PORT` (and
`{SVC}_SERVICE_PORT_{PORTNAME}`) for every Service of the pod's namespace (kubernetes/kubernetes
pkg/kubelet/envvars/envvars.go, FromServices; the Docker link vars are left out), and kube-proxy
on each node turns the ClusterIP:port into a ready endpoint. Pod processes here share the host's
loopback, so the "ClusterIP" is 127.0.0.1 and each (node, Service, port) gets its own loopback
port that this node's proxy listens on. With `internalTrafficPolicy: Local` only endpoints on the
caller's node count; with none there, upstream kube-proxy drops the traffic (kubernetes/kubernetes
pkg/proxy/topology.go, CategorizeEndpoints: no local endpoints, nothing to route to). Here the
connection is reset at once, which the client sees as an error it can retry, so a waiter polls it.
Backends are found as the ALB and the API server's service proxy find them: the Endpoints'
ready addresses, then the kubelet's loopback port for that pod's container port.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from typing import TYPE_CHECKING

from .common import ENDPOINTS, SERVICES

if TYPE_CHECKING:
    from .cluster import Cluster


def service_env_name(name: str) -> str:
    """An env var name part, as envvars.go's makeEnvVariableName: '.' and '-' -> '_', upper case,
    '_' in front of a leading digit."""
    out = re.sub(r"[.-]", "_", name).upper()
    return "_" + out if out[:1].isdigit() else out


class KubeProxy:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self._lock = threading.Lock()
        self._listeners: dict[tuple[str, str, str, int], tuple[socket.socket, int]] = {}
        self._stopped = False

    def service_env(self, namespace: str, node: str) -> dict[str, str]:
        """The Service env vars for a container starting on `node` (services of its namespace)."""
        env: dict[str, str] = {}
        for svc in self.cluster.store.list(SERVICES, namespace):
            spec = svc.get("spec") or {}
            if spec.get("clusterIP") == "None" or not spec.get("selector"):
                continue  # headless and selector-less Services get no env vars here
            ports = spec.get("ports") or []
            if not ports:
                continue
            prefix = service_env_name(svc["metadata"]["name"])
            for i, port in enumerate(ports):
                local = self._listen(namespace, svc["metadata"]["name"], node, int(port["port"]))
                if i == 0:  # the first port is the Service's _SERVICE_PORT (envvars.go)
                    env[f"{prefix}_SERVICE_HOST"] = "127.0.0.1"
                    env[f"{prefix}_SERVICE_PORT"] = str(local)
                if port.get("name"):
                    env[f"{prefix}_SERVICE_PORT_{service_env_name(port['name'])}"] = str(local)
        return env

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for sock, _ in self._listeners.values():
                try:
                    sock.close()
                except OSError:
                    pass
            self._listeners.clear()

    # -- internals -------------------------------------------------------------------------------

    def _listen(self, namespace: str, service: str, node: str, port: int) -> int:
        key = (namespace, service, node, port)
        with self._lock:
            if key in self._listeners:
                return self._listeners[key][1]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            local = sock.getsockname()[1]
            self._listeners[key] = (sock, local)
        threading.Thread(target=self._accept, args=(sock, key), daemon=True,
                         name=f"kube-proxy {node} {namespace}/{service}:{port}").start()
        return local

    def _accept(self, sock: socket.socket, key: tuple[str, str, str, int]) -> None:
        while not self._stopped:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, key), daemon=True).start()

    def _backend(self, namespace: str, service: str, node: str, port: int) -> int | None:
        store = self.cluster.store
        svc = store.get(SERVICES, namespace, service)
        eps = store.get(ENDPOINTS, namespace, service)
        if svc is None or eps is None:
            return None
        spec = svc.get("spec") or {}
        entry = next((p for p in spec.get("ports") or [] if int(p.get("port", 0)) == port), None)
        if entry is None:
            return None
        local_only = spec.get("internalTrafficPolicy") == "Local"
        for subset in eps.get("subsets") or []:
            ports = subset.get("ports") or []
            chosen = next((p for p in ports if entry.get("name") and p.get("name") == entry["name"]),
                          ports[0] if len(ports) == 1 else None)
            if chosen is None:
                continue
            for address in subset.get("addresses") or []:  # ready endpoints only
                if local_only and address.get("nodeName") != node:
                    continue
                pod = (address.get("targetRef") or {}).get("name")
                local = pod and self.cluster.kubelet.local_port(namespace, pod, int(chosen["port"]))
                if local:
                    return local
        return None

    def _serve(self, client: socket.socket, key: tuple[str, str, str, int]) -> None:
        local = self._backend(*key)
        upstream = None
        if local is not None:
            try:
                upstream = socket.create_connection(("127.0.0.1", local), timeout=5)
                upstream.settimeout(None)
            except OSError:
                upstream = None
        if upstream is None:
            # No endpoint: reset, as a dropped/refused connection looks to the client.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass
