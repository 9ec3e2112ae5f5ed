"""Cluster faults: image pull failure, crash loop, and a Spot interruption with node replacement.

`spot-interruption` plays what EC2 and Karpenter do on a Spot interruption warning, in real time:

- EC2 sends the warning two minutes before it reclaims the instance (EC2 User Guide, "Spot
  Instance interruption notices"); here `ClusterOptions.spot_notice` (120 s on the sandbox's time
  scale), or params.notice.
- Karpenter, on the warning from its queue (aws/karpenter-provider-aws pkg/controllers/interruption:
  the NodeClaim is deleted at once), starts a replacement node right away (website/content/en/docs/
  concepts/disruption.md, "Interruption": the NodePool starts a new node as soon as it sees the
  warning); it joins after `replacement_delay` seconds (default `node_replacement`). Its
  termination controller (same page, "Termination Controller") taints the node
  `karpenter.sh/disrupted:NoSchedule` and evicts its pods through the Eviction API, which honours
  PodDisruptionBudgets: a refused eviction is retried on every pass. Each evicted pod is marked
  DisruptionTarget, then deleted gracefully: the kubelet runs its preStop hook, sends SIGTERM and,
  when terminationGracePeriodSeconds ends, SIGKILL (kubelet.py). DaemonSet pods stay.
- Once only those are left, Karpenter terminates the instance; at the end of the notice EC2 does
  it anyway. Either way, whatever still runs on the node dies where it stands, its pods are
  deleted and the node leaves the cluster.

Controllers recreate the evicted pods as soon as they are Terminating; they wait Pending for the
replacement node, where the device plugin DaemonSet reports its GPUs again per the plugin's
current config. Karpenter's voluntary disruption (karpenter.py) drains the same way, without a
deadline.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sandbox.kubeapi.store import ApiError

from sandbox.kubeapi.resources import by_key
from sandbox.kubeapi.store import selector_matches

from .common import (DEPLOYMENTS, NODES, PODS, controller_of, hex_id, merge_condition, now_iso, pod_is_active,
                     pod_is_ready, pod_is_terminal)
from .controllers import _int_or_percent
from .initial_state import new_node_name

if TYPE_CHECKING:
    from .cluster import Cluster

FAULTS = ("spot-interruption", "restart-pods", "image-pull-failure", "crash-loop", "clear")


PDBS = by_key("poddisruptionbudgets.policy")


@dataclass
class Drain:
    """A node Karpenter is draining: `ends_at` is when its instance goes regardless (a Spot
    interruption's notice), None when it goes once drained (voluntary disruption)."""

    reason: str
    ends_at: float | None


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
        self.drains: dict[str, Drain] = {}  # node name -> its drain

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
        notice = float(params.get("notice", options.spot_notice))
        now = time.monotonic()
        self.cluster.events.record(node, "Warning", "SpotInterrupted", "Spot interruption warning was triggered",
                                   component="karpenter")
        replacement = self.replace(node, now + delay, "join {}")
        self.drain(node, "Interrupted", ends_at=now + notice)
        return {"fault": "spot-interruption", "node": name, "replacement": replacement,
                "replacement_delay": delay, "notice": notice}

    def replace(self, node: dict, joins_at: float, what: str) -> str:
        """Launch a node of `node`'s shape now, joining at `joins_at`: its name."""
        replacement = self._replacement_for(node, {n["metadata"]["name"] for n in self.store.list(NODES)})
        new_name = replacement["metadata"]["name"]
        pool = (node["metadata"].get("labels") or {}).get("karpenter.sh/nodepool")
        if pool:  # Karpenter's own replacement: it launches no other node for the evicted pods
            self.cluster.karpenter.expect(new_name, pool, joins_at)
        self.schedule(joins_at, what.format(new_name), lambda: self.join(replacement))
        return new_name

    def drain(self, node: dict, reason: str, ends_at: float | None) -> None:
        """Karpenter's termination controller: taint the node, then evict its pods (sync does it, and
        retries what a PDB refused) until it is drained or `ends_at` comes."""
        name = node["metadata"]["name"]
        self.cluster.events.record(node, "Normal", "DisruptionTerminating", f"Disrupting Node: {reason}",
                                   component="karpenter")

        def taint(obj: dict) -> None:
            taints = obj["spec"].setdefault("taints", [])
            if not any(t.get("key") == "karpenter.sh/disrupted" for t in taints):
                taints.append({"key": "karpenter.sh/disrupted", "effect": "NoSchedule", "timeAdded": now_iso()})
        self.store.mutate(NODES, None, name, taint)
        self.drains[name] = Drain(reason, ends_at)
        self._drain_step(name, self.drains[name], time.monotonic())

    def _drain_step(self, name: str, drain: Drain, now: float) -> None:
        if self.store.get(NODES, None, name) is None:
            del self.drains[name]
            return
        if drain.ends_at is not None and now >= drain.ends_at:
            del self.drains[name]
            self._remove(name)  # EC2 reclaims the instance
            return
        left = [p for p in self.store.list(PODS, field_selector=f"spec.nodeName={name}")
                if (controller_of(p) or {}).get("kind") != "DaemonSet" and not pod_is_terminal(p)]
        refused = 0
        for pod in left:
            if pod_is_active(pod) and not self._evict(pod, drain.reason):
                refused += 1
        if refused:
            node = self.store.get(NODES, None, name)
            self.cluster.events.record(node, "Warning", "FailedDraining",
                                       f"Failed to drain node, {refused} pods are waiting to be evicted",
                                       component="karpenter")
        if not left:
            del self.drains[name]
            self._remove(name)  # drained: Karpenter terminates the instance

    def _evict(self, pod: dict, reason: str) -> bool:
        """The Eviction API (pkg/registry/core/pod/storage/eviction.go): refused (False) when a
        PodDisruptionBudget allows no disruption; else the pod is marked DisruptionTarget and
        deleted with its own grace period."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if self._budget_refuses(pod):
            return False
        self.cluster.events.record(pod, "Normal", "Evicted", f"Evicted pod: {reason}", component="karpenter")
        # Marked before the delete, as the Eviction API does: Jobs' podFailurePolicy matches on it.
        self.store.mutate(PODS, namespace, name, _disruption_target)
        try:
            self.cluster.registry.delete(PODS, namespace, name)
        except ApiError:
            pass
        return True

    def _budget_refuses(self, pod: dict) -> bool:
        """Whether a PDB selecting the pod has no disruption left (pkg/controller/disruption:
        disruptionsAllowed = currentHealthy - desiredHealthy; expected pods are the active ones).
        An unready pod may go while the budget is met (unhealthyPodEvictionPolicy IfHealthyBudget)."""
        namespace = pod["metadata"]["namespace"]
        labels = pod["metadata"].get("labels") or {}
        for pdb in self.store.list(PDBS, namespace):
            spec = pdb.get("spec") or {}
            selector = spec.get("selector")
            if selector is None or not selector_matches(selector, labels):
                continue
            members = [p for p in self.store.list(PODS, namespace)
                       if pod_is_active(p) and selector_matches(selector, p["metadata"].get("labels"))]
            healthy = sum(1 for p in members if pod_is_ready(p))
            if spec.get("minAvailable") is not None:
                desired = _int_or_percent(spec["minAvailable"], len(members), True, "0")
            elif spec.get("maxUnavailable") is not None:
                desired = max(0, len(members) - _int_or_percent(spec["maxUnavailable"], len(members), True, "0"))
            else:
                continue
            if not pod_is_ready(pod) and healthy >= desired:
                continue
            if healthy - desired < 1:
                return True
        return False

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

    def _delete_pods_on(self, name: str) -> None:
        for pod in self.store.list(PODS, field_selector=f"spec.nodeName={name}"):
            try:
                self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
            except ApiError:
                pass

    def _remove(self, name: str) -> None:
        """The instance is gone: what runs on it dies, its pods are deleted, the node leaves."""
        node = self.store.get(NODES, None, name)
        self.cluster.kubelet.kill_pods_on(name)
        self._delete_pods_on(name)
        if node is None:
            return
        self.cluster.events.record(node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady",
                                   component="node-controller")
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
        """Run the timeline steps that are due, and a step of every drain."""
        now = time.monotonic()
        for name, drain in list(self.drains.items()):
            try:
                self._drain_step(name, drain, now)
            except Exception:
                self.cluster.log_exception(f"draining {name}")
        due = [step for step in self._timeline if step[0] <= now]
        if not due:
            return
        self._timeline = [step for step in self._timeline if step[0] > now]
        for _, what, action in sorted(due, key=lambda s: s[0]):
            try:
                action()
            except Exception:
                self.cluster.log_exception(f"fault step {what}")

    def next_due(self) -> float | None:
        """When the next timeline step is due (a node joining, an instance ending)."""
        return min((at for at, _, _ in self._timeline), default=None)

    @property
    def busy(self) -> bool:
        return bool(self._timeline or self.drains)


def _disruption_target(pod: dict) -> None:
    status = pod.setdefault("status", {})
    status["conditions"] = merge_condition(status.get("conditions"), "DisruptionTarget", "True",
                                           "EvictionByEvictionAPI", "Eviction API: evicting")
