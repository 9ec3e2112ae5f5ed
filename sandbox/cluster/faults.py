"""Cluster faults: image pull failure, crash loop, and a Spot interruption with node replacement.

`spot-interruption` plays what Karpenter does on a Spot interruption warning: the node is tainted
`karpenter.sh/disrupted:NoSchedule` and marked NotReady, its pods are evicted and it leaves the
cluster (all before inject() returns, with their events); a replacement node of the same shape
(new name) joins after `replacement_delay` seconds.
Controllers then recreate the evicted pods, the device plugin DaemonSet puts a pod on the new
node, which reports its GPUs again per the plugin's current config, and the pods schedule there.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sandbox.kubeapi.store import ApiError

from .common import DEPLOYMENTS, NODES, PODS, hex_id, merge_condition, now_iso
from .initial_state import new_node_name

if TYPE_CHECKING:
    from .cluster import Cluster

FAULTS = ("spot-interruption", "restart-pods", "image-pull-failure", "crash-loop", "clear")


@dataclass
class FaultState:
    image_pull: set[tuple[str, str]] = field(default_factory=set)  # (namespace, deployment)
    crash_loop: set[tuple[str, str]] = field(default_factory=set)


class Faults:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self.state = FaultState()
        self._timeline: list[tuple[float, str, Callable[[], None]]] = []

    @property
    def image_pull(self) -> set[tuple[str, str]]:
        return self.state.image_pull

    @property
    def crash_loop(self) -> set[tuple[str, str]]:
        return self.state.crash_loop

    def inject(self, fault: str, params: dict) -> dict:
        """Start a fault; returns what it did (for the control endpoint's answer)."""
        params = dict(params or {})
        if fault in ("image-pull-failure", "crash-loop"):
            deployment = params.get("deployment")
            if not deployment:
                raise ValueError(f"fault {fault} needs deployment=NAME and, unless it is in default, namespace=NS; "
                                 f"e.g. `python -m sandbox fault {fault} deployment=qwen3-tts namespace=hosthree`"
                                 f" (got {' '.join(f'{k}={v}' for k, v in params.items()) or 'no parameters'})")
            target = (params.get("namespace") or "default", str(deployment))
            exists = self.store.get(DEPLOYMENTS, target[0], target[1]) is not None
            # A crash loop for a missing Deployment in a namespace nobody named would say "done" and
            # do nothing (the operator forgot namespace=). Named explicitly, either fault may be armed
            # before the Deployment is created (tests arm a crash loop before the deploy's ASR wait).
            if not exists and not params.get("namespace"):
                elsewhere = sorted(d["metadata"]["namespace"] for d in self.store.list(DEPLOYMENTS)
                                   if d["metadata"]["name"] == target[1])
                hint = (f"; it exists in namespace {', '.join(elsewhere)}: add namespace={elsewhere[0]}" if elsewhere
                        else "; deploy first, or name an existing Deployment")
                raise ValueError(f"fault {fault}: there is no Deployment {target[1]} in namespace {target[0]}{hint}")
            (self.state.image_pull if fault == "image-pull-failure" else self.state.crash_loop).add(target)
            if fault == "crash-loop":
                self._restart_pods_of(target)
            answer = {"fault": fault, "namespace": target[0], "deployment": target[1]}
            if not exists:
                answer["note"] = (f"no Deployment {target[1]} in namespace {target[0]} yet: its pods "
                                  f"{'fail to pull' if fault == 'image-pull-failure' else 'crash'} once it is created")
            return answer
        if fault == "clear":
            self.state.image_pull.clear()
            self.state.crash_loop.clear()
            return {"fault": "clear"}
        if fault == "spot-interruption":
            return self._spot_interruption(params)
        if fault == "restart-pods":
            return self._restart_pods(params)
        raise ValueError(f"unknown cluster fault {fault!r}; known: {', '.join(FAULTS)}")

    def _restart_pods_of(self, target: tuple[str, str]) -> None:
        """Running pods of the deployment restart now, so the crash loop starts without a rollout."""
        for run in list(self.cluster.kubelet.runs.values()):
            if run.deployment == target:
                for c in run.main:
                    if c.phase == "running":
                        c.crash_at = time.monotonic()

    def _restart_pods(self, params: dict) -> dict:
        """`kubectl delete pod` of every pod of the named Deployments at once: their ReplicaSets
        recreate them together, as after a node reboot or a manual restart."""
        deployments = params.get("deployments")
        if isinstance(deployments, str):
            deployments = [deployments]
        if not deployments:
            raise ValueError(f"fault 'restart-pods' needs params.deployments (a list of Deployment names), got {params!r}")
        namespace = params.get("namespace") or "default"
        wanted = {(namespace, str(d)) for d in deployments}
        deleted = []
        for run in list(self.cluster.kubelet.runs.values()):
            if run.deployment in wanted:
                try:
                    self.store.delete(PODS, run.namespace, run.name)
                    deleted.append(run.name)
                except ApiError:
                    pass
        return {"fault": "restart-pods", "namespace": namespace, "deployments": sorted(d for _, d in wanted),
                "pods": sorted(deleted)}

    # -- Spot ----------------------------------------------------------------------------------

    def _spot_interruption(self, params: dict) -> dict:
        nodes = self.store.list(NODES)
        name = params.get("node")
        if name:
            node = next((n for n in nodes if n["metadata"]["name"] == name), None)
            if node is None:
                raise ValueError(f"spot-interruption: node {name!r} not found; nodes: "
                                 f"{', '.join(n['metadata']['name'] for n in nodes) or 'none'}")
        else:
            gpu = [n for n in nodes if (n["metadata"].get("labels") or {}).get("node-type") == "gpu"
                   and not any(t.get("key") == "karpenter.sh/disrupted" for t in n["spec"].get("taints") or [])]
            if not gpu:
                raise ValueError("spot-interruption: no GPU node (label node-type=gpu) to interrupt; pass params.node")
            node = gpu[0]
            name = node["metadata"]["name"]
        options = self.cluster.options
        delay = float(params.get("replacement_delay", options.node_replacement))
        now = time.monotonic()
        replacement = self._replacement_for(node, {n["metadata"]["name"] for n in nodes})
        joins_at = now + delay
        pool = (node["metadata"].get("labels") or {}).get("karpenter.sh/nodepool")
        if pool:  # Karpenter's own replacement: it launches no other node for the evicted pods
            self.cluster.karpenter.expect(replacement["metadata"]["name"], pool, joins_at)
        # Warning, drain and removal happen before inject() returns, so a caller sees the pods and
        # the node gone at once; only the replacement takes time.
        self._warn(node)
        self._drain(name)
        self._remove(name)
        self.schedule(joins_at, f"join {replacement['metadata']['name']}", lambda: self.join(replacement))
        return {"fault": "spot-interruption", "node": name, "replacement": replacement["metadata"]["name"],
                "replacement_delay": delay}

    def _replacement_for(self, node: dict, taken: set[str]) -> dict:
        new = copy.deepcopy(node)
        subnet = ".".join(((node.get("status") or {}).get("addresses") or [{}])[0].get("address", "10.0.1.1")
                          .split(".")[:3]) or "10.0.1"
        name, ip = new_node_name(subnet, taken)
        meta = new["metadata"]
        for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
            meta.pop(key, None)
        meta["name"] = name
        labels = meta.setdefault("labels", {})
        labels["kubernetes.io/hostname"] = name
        for key in [k for k in labels if k.startswith("nvidia.com/gpu.") and k != "nvidia.com/gpu.present"]:
            del labels[key]  # GFD labels come back when the plugin reports
        meta.setdefault("annotations", {})["alpha.kubernetes.io/provided-node-ip"] = ip
        zone = labels.get("topology.kubernetes.io/zone", "us-west-2a")
        new["spec"]["providerID"] = f"aws:///{zone}/i-0{hex_id(16)}"
        new["spec"]["taints"] = [t for t in new["spec"].get("taints") or []
                                 if not t.get("key", "").startswith(("karpenter.sh/", "node.kubernetes.io/"))]
        status = new["status"]
        for resource in [r for r in status.get("capacity", {}) if r.startswith("nvidia.com/")]:
            status["capacity"].pop(resource, None)
            status["allocatable"].pop(resource, None)
        status["addresses"] = [{"type": "InternalIP", "address": ip}, {"type": "InternalDNS", "address": name},
                               {"type": "Hostname", "address": name}]
        stamp = now_iso()
        for cond in status.get("conditions") or []:
            cond["lastHeartbeatTime"] = cond["lastTransitionTime"] = stamp
            if cond.get("type") == "Ready":
                cond.update({"status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"})
        self.cluster.device_plugins.physical[name] = self.cluster.device_plugins.physical_gpus(node)
        return self.cluster.karpenter.launched(new)

    def _warn(self, node: dict) -> None:
        name = node["metadata"]["name"]
        self.cluster.events.record(node, "Warning", "SpotInterrupted", "Spot interruption warning was triggered",
                                   component="karpenter")
        self.cluster.events.record(node, "Normal", "DisruptionTerminating", "Disrupting Node: Interrupted",
                                   component="karpenter")

        def taint(obj: dict) -> None:
            taints = obj["spec"].setdefault("taints", [])
            if not any(t.get("key") == "karpenter.sh/disrupted" for t in taints):
                taints.append({"key": "karpenter.sh/disrupted", "effect": "NoSchedule", "timeAdded": now_iso()})
        self.store.mutate(NODES, None, name, taint)

    def _delete_pods_on(self, name: str, evicted: bool = False) -> None:
        for pod in self.store.list(PODS, field_selector=f"spec.nodeName={name}"):
            if evicted:
                self.cluster.events.record(pod, "Normal", "Evicted", "Evicted pod: Interrupted", component="karpenter")
                # Karpenter drains through the Eviction API, which marks the pod before deleting it
                # (pkg/registry/core/pod/storage/eviction.go): Jobs' podFailurePolicy matches on it.
                self.store.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], _disruption_target)
            try:
                self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
            except ApiError:
                pass

    def _drain(self, name: str) -> None:
        node = self.store.get(NODES, None, name)
        self._delete_pods_on(name, evicted=True)
        if node is None:
            return

        def not_ready(obj: dict) -> None:
            status = obj.setdefault("status", {})
            status["conditions"] = merge_condition(status.get("conditions"), "Ready", "Unknown", "NodeStatusUnknown",
                                                   "Kubelet stopped posting node status.")
            taints = obj["spec"].setdefault("taints", [])
            if not any(t.get("key") == "node.kubernetes.io/unreachable" for t in taints):
                taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"})
        self.store.mutate(NODES, None, name, not_ready)
        self.cluster.events.record(node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady",
                                   component="node-controller")

    def _remove(self, name: str) -> None:
        node = self.store.get(NODES, None, name)
        self._delete_pods_on(name)
        if node is None:
            return
        try:
            self.store.delete(NODES, None, name)
        except ApiError:
            return
        self.cluster.kubelet.forget_node(name)
        self.cluster.device_plugins.forget(name)
        self.cluster.events.record(node, "Normal", "RemovingNode", f"Node {name} event: Removing Node {name} from Controller",
                                   component="node-controller")

    def schedule(self, at: float, what: str, action: Callable[[], None]) -> None:
        """Run `action` on the loop thread once monotonic time passes `at`."""
        self._timeline.append((at, what, action))

    def join(self, node: dict) -> None:
        """A new node registers with the cluster (Spot replacement or Karpenter launch)."""
        try:
            created = self.store.create(NODES, node)
        except ApiError:
            return
        name = created["metadata"]["name"]
        self.cluster.events.record(created, "Normal", "RegisteredNode",
                                   f"Node {name} event: Registered Node {name} in Controller", component="node-controller")
        self.cluster.events.record(created, "Normal", "NodeReady", f"Node {name} status is now: NodeReady",
                                   component="kubelet")

    def sync(self) -> None:
        """Run the timeline steps that are due."""
        now = time.monotonic()
        due = [step for step in self._timeline if step[0] <= now]
        if not due:
            return
        self._timeline = [step for step in self._timeline if step[0] > now]
        for _, what, action in sorted(due, key=lambda s: s[0]):
            try:
                action()
            except Exception:
                self.cluster.log_exception(f"fault step {what}")

    @property
    def busy(self) -> bool:
        return bool(self._timeline)


def _disruption_target(pod: dict) -> None:
    status = pod.setdefault("status", {})
    status["conditions"] = merge_condition(status.get("conditions"), "DisruptionTarget", "True",
                                           "EvictionByEvictionAPI", "Eviction API: evicting")
