"""The simulated EKS cluster's control loop: controllers, scheduler, kubelet, device plugin, EFS, ALB.

One background thread runs every component in order on each pass. A pass starts when the store
reports a change (store.add_listener) or after a short tick; components write only when something
changed, so passes settle quickly. Components read and write the store directly, as in-process
controllers (no HTTP).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from sandbox.kubeapi.registry import Registry
from sandbox.kubeapi.store import ApiError, Store, WatchEvent

from .common import NODES, PODS, SERVICES, pod_is_ready
from .controllers import Controllers, _resolve_target_port
from .device_plugin import DevicePlugins
from .events import EventRecorder
from .faults import Faults
from .images import ImageStore
from .ingress import AlbController
from .karpenter import Karpenter
from .initial_state import seed
from .kube_proxy import KubeProxy
from .kubelet import Kubelet
from .options import ClusterOptions
from .scheduler import Scheduler
from .storage import EfsProvisioner

log = logging.getLogger("sandbox.cluster")
FULL_PASS_SECONDS = 0.5  # deadlines, back-offs and retries are checked at least this often


class Cluster:
    """The cluster behaviour of the sandbox, over a Store.

    + store: the sandbox's object store (the database of the API server)
    + root: the sandbox's runtime directory (pods/, logs/, efs/ live under it)
    + options: ClusterOptions (starting state, delays)
    + registry: the API server's sandbox.kubeapi.registry.Registry (controllers' pod creates go through it)
    + aws: sandbox.aws.SandboxAws or None (EFS existence checks and ALBs; None = offline rules)
    """

    FAULTS = ("spot-interruption", "restart-pods", "image-pull-failure", "crash-loop",  # and "clear"
              "karpenter-drift", "karpenter-consolidate", "gpu-operator-upgrade")

    def __init__(self, store: Store, root: Path, *, options: ClusterOptions, registry: Registry, aws: Any = None):
        self.store = store
        self.registry = registry  # the API server's: controllers create pods through it, admission included
        self.root = Path(root)
        self.options = options
        self.aws = aws
        self.errors: list[str] = []  # tracebacks of failed passes, for tests and `status`
        self.events = EventRecorder(store, throttle=0.5 if options.fast else 2.0)
        self.images = ImageStore(options)  # what each node has on disk; decides pulls (images.py)
        self.device_plugins = DevicePlugins(self)
        self.storage = EfsProvisioner(self)
        self.controllers = Controllers(self)
        self.scheduler = Scheduler(self)
        self.kubelet = Kubelet(self)
        self.kube_proxy = KubeProxy(self)
        self.alb = AlbController(self)
        self.faults = Faults(self)
        self.karpenter = Karpenter(self)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pass_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._gc_due = True
        self._last_gc = 0.0
        self._last_full = 0.0
        self._quiet_version = ""
        self._snapshots: dict[str, tuple[str, list[dict]]] = {}
        self.passes = 0
        # With a time scale a full pass every 0.5 s would be minutes of simulated time: keep deadlines
        # (Karpenter's batch, ALB activation) to a few simulated seconds.
        self._full_pass_seconds = (FULL_PASS_SECONDS if not options.time_scale
                                   else max(0.05, min(FULL_PASS_SECONDS, options.sandbox_seconds(5.0))))

    # -- lifecycle -----------------------------------------------------------------------------

    def seed_initial_state(self) -> None:
        """Write the guide's prerequisites into the store (nodes, namespaces, plugin, drivers)."""
        seed(self)

    def start(self) -> None:
        """Start the control loop in a background thread."""
        if self._thread is not None:
            return
        self.store.add_listener(self._on_change)
        self._thread = threading.Thread(target=self._loop, name="sandbox-cluster", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and every process and stand-in the kubelet started."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._pass_lock:
            self.alb.stop()
            self.kubelet.stop()
            self.kube_proxy.stop()

    def _on_change(self, event: WatchEvent) -> None:
        if event.type == "DELETED":
            self._gc_due = True
        if not (event.resource_key == "events"):
            self._wake.set()

    def wake(self) -> None:
        """Run a pass now (a component saw something happen outside the store: a probe answered, a process exited)."""
        self._wake.set()

    def _loop(self) -> None:
        full_due = None
        while not self._stopping.is_set():
            # Sleep until the soonest known deadline, at most a tick: at a time scale every tick of
            # lateness is tick x scale of simulated time, on each step of a pod's start.
            now = time.monotonic()
            light_due = min((at for at in (self.kubelet.next_due(now), self.faults.next_due()) if at is not None),
                            default=None)
            due = min((at for at in (light_due, full_due) if at is not None), default=None)
            self._wake.wait(self.options.tick if due is None else min(self.options.tick, max(0.0, due - now)))
            self._wake.clear()
            if self._stopping.is_set():
                break
            started = time.monotonic()
            quiet = self.store.resource_version == self._quiet_version
            self.run_pass(full=not quiet or started - self._last_full >= self._full_pass_seconds
                          or (full_due is not None and started >= full_due))
            full_due = self.karpenter.next_due(time.monotonic())  # its batch window ends in a full pass
            # Our own writes wake us again; a small floor keeps a busy store from spinning the CPU.
            spent = time.monotonic() - started
            time.sleep(max(0.0, 0.005 - spent))

    def snapshot(self, res) -> list[dict]:
        """All objects of a kind, listed once per store version (loop thread only; do not modify them)."""
        version = self.store.resource_version
        cached = self._snapshots.get(res.key)
        if cached is not None and cached[0] == version:
            return cached[1]
        objects = self.store.list(res)
        self._snapshots[res.key] = (version, objects)
        return objects

    def run_pass(self, full: bool = True) -> None:
        """One reconcile: every component when `full`, else only the time-driven ones.

        A light pass (nothing in the store changed since the last pass) runs the kubelet (process
        exits, probes, back-offs), fault timelines and event flushes, and when they wrote something
        the components that follow pods (device plugins, endpoints, ALB); the loop still runs a
        full pass at least every `FULL_PASS_SECONDS` for deadlines and retries.
        """
        with self._pass_lock:
            self.passes += 1
            # Writes made during this pass (ours included) make the next pass a full one.
            self._quiet_version = self.store.resource_version
            self._step("faults", self.faults.sync)
            if full:
                self._last_full = time.monotonic()
                self._step("namespaces", self.controllers.sync_namespaces)
                if self._gc_due or self._last_full - self._last_gc > 1.0:
                    self._gc_due = False
                    self._last_gc = self._last_full
                    self._step("garbage collector", self.controllers.collect_garbage)
                self._step("deployments", self.controllers.sync_deployments)
                self._step("replicasets", self.controllers.sync_replicasets)
                self._step("daemonsets", self.controllers.sync_daemonsets)
                self._step("jobs", self.controllers.sync_jobs)
                self._step("efs provisioner", lambda: self.storage.sync(self.snapshot(PODS)))
                self._step("device plugins", lambda: self.device_plugins.sync(self.snapshot(NODES)))
                self._step("scheduler", lambda: self.scheduler.sync(self.snapshot(PODS), self.snapshot(NODES)))
                self._step("karpenter", self.karpenter.sync)
            self._step("kubelet", lambda: self.kubelet.sync(self.snapshot(PODS), self.snapshot(NODES)))
            # A pod the kubelet just made ready reaches its endpoints (and the ALB) in this pass, as
            # the endpoints controller follows pods at once, not after the Deployment's status.
            if full or self.store.resource_version != self._quiet_version:
                self._step("device plugins", lambda: self.device_plugins.sync(self.snapshot(NODES)))
                self._step("endpoints", self.controllers.sync_endpoints)
                self._step("alb controller", self.alb.sync)
                self._step("pod gc", self._collect_orphan_pods)
            self.events.flush()

    def _step(self, name: str, action) -> None:
        try:
            action()
        except Exception:
            self.log_exception(name)

    def log_exception(self, what: str) -> None:
        text = f"{what}: {traceback.format_exc()}"
        log.error("sandbox cluster: %s", text)
        self.errors.append(text)
        del self.errors[:-50]

    def _collect_orphan_pods(self) -> None:
        """Pods bound to nodes that no longer exist are deleted (the pod GC controller)."""
        names = {n["metadata"]["name"] for n in self.snapshot(NODES)}
        for pod in self.snapshot(PODS):
            node = pod["spec"].get("nodeName")
            if node and node not in names:
                try:
                    self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
                except ApiError:
                    pass

    # -- faults --------------------------------------------------------------------------------

    def inject(self, fault: str, params: dict | None = None) -> dict:
        """Inject a cluster fault: spot-interruption, image-pull-failure, crash-loop, karpenter-drift,
        karpenter-consolidate, gpu-operator-upgrade or clear."""
        with self._pass_lock:
            if fault.startswith("karpenter-"):
                result = self.karpenter.inject(fault, params or {})
            elif fault == "gpu-operator-upgrade":  # the operator renders anew, as after its upgrade
                result = self.device_plugins.setup.inject(self, fault, params or {})
            else:
                result = self.faults.inject(fault, params or {})
        self._wake.set()
        return result

    # -- backends for the API server's proxy ---------------------------------------------------

    def backend_for_service(self, namespace: str, service: str, port: Any) -> tuple[str, int]:
        """Where a request to Service port (number or name) lands: a Ready pod's loopback port."""
        svc = self.store.get(SERVICES, namespace, service)
        if svc is None:
            raise ApiError(404, "NotFound", f'services "{service}" not found',
                           {"name": service, "kind": "services"})
        ports = (svc.get("spec") or {}).get("ports") or []
        chosen = None
        for entry in ports:
            if port in (None, "") and len(ports) >= 1:
                chosen = entry
                break
            if str(entry.get("port")) == str(port) or (entry.get("name") and entry.get("name") == str(port)):
                chosen = entry
                break
        unavailable = ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{service}"')
        if chosen is None:
            raise unavailable
        target = chosen.get("targetPort", chosen.get("port"))
        selector = (svc.get("spec") or {}).get("selector") or {}
        if not selector:
            raise unavailable
        candidates = [p for p in self.store.list(PODS, namespace)
                      if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
        for pod in sorted(candidates, key=lambda p: p["metadata"]["name"]):
            if not pod_is_ready(pod):
                continue
            container_port = _resolve_target_port(pod, target)
            if container_port is None:
                continue
            local = self.kubelet.local_port(namespace, pod["metadata"]["name"], container_port)
            if local is not None:
                return "127.0.0.1", local
        raise unavailable

    def backend_for_pod(self, namespace: str, pod: str, port: Any) -> tuple[str, int]:
        """Where a request to a pod's port (number or container port name) lands."""
        obj = self.store.get(PODS, namespace, pod)
        if obj is None:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
        if port in (None, ""):
            declared = [p for c in obj["spec"].get("containers") or [] for p in c.get("ports") or []]
            port = declared[0]["containerPort"] if declared else 80
        container_port = _resolve_target_port(obj, port)
        local = self.kubelet.local_port(namespace, pod, container_port) if container_port is not None else None
        if local is None:
            raise ApiError(503, "ServiceUnavailable",
                           f'error trying to reach service: dial tcp 127.0.0.1:{port}: connect: connection refused')
        return "127.0.0.1", local

    def pod_log_path(self, namespace: str, pod: str, container: str) -> Path:
        """ROOT/logs/<ns>/<pod>/<container>.log: what `kubectl logs` shows."""
        return self.root / "logs" / namespace / pod / f"{container}.log"

