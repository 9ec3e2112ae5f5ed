"""The Karpenter stand-in: a pending pod that no node can take gets a new node from a NodePool.

Like Karpenter it looks at pods the scheduler marked Unschedulable for a short batch window,
and launches one node from a NodePool whose template could run the pod: the pool's taints are
tolerated, the pod's nodeSelector/required node affinity matches the pool's labels and
requirements, and the pod's requests fit the instance type (GPUs counted as the instance's
physical GPUs: Karpenter knows nothing of time-slicing, so two 1-GPU pods without affinity get
two nodes). Pods with required pod affinity are left to the scheduler (a new node cannot hold
the pod they must sit next to). Required pod anti-affinity on the hostname is honoured as
Karpenter's scheduling simulation does (kubernetes-sigs/karpenter pkg/controllers/provisioning/
scheduling/topology.go: a new node is an empty hostname domain): pods that may not share a node
get one node each, launched together, each in the zone (of the VPC's subnets, as the pool admits)
where the pods' zone spread constraints have the fewest pods. While a launched node has not reported
its GPUs yet, or one is on its way (also a Spot replacement), no other node is launched for that pool,
nor for a pod that node could take from any pool; the pool's
`limits` on nvidia.com/gpu and cpu are respected. Launches take `node_replacement` seconds.

Voluntary disruption (website/content/en/docs/concepts/disruption.md): a node is Drifted when its
EC2NodeClass changed since launch (the `karpenter.k8s.aws/ec2nodeclass-hash` it carries differs;
also the `karpenter-drift` fault, as an AMI release would) and is then replaced: a new node of the
pool is launched and the old one drained and deleted. The `karpenter-consolidate` fault removes a
node as consolidation would (its pods go back to pending). Neither touches a node that runs a pod
annotated `karpenter.sh/do-not-disrupt: "true"`: Karpenter records DisruptionBlocked and retries.
Both drain the node as a Spot interruption does (faults.py: taint, evictions that honour PDBs,
graceful pod termination), but without its deadline: the node goes once drained. A Spot
interruption is forceful and ignores the annotation.

A node boots from its pool's EC2NodeClass (`launched`, also for Spot replacements): a Bottlerocket
class whose data volume (/dev/xvdb) comes from an EBS snapshot gives the node the images the
sandbox's AWS saw pulled into that volume before it was snapshotted (cluster.images), which the
kubelet then finds "already present on machine", and the files downloaded into it (the models under
/local), which a hostPath volume on that node finds.
"""

from __future__ import annotations

import shutil
import time
from fractions import Fraction
from typing import TYPE_CHECKING

from sandbox.kubeapi.store import selector_matches

from .common import (NODEPOOLS, NODES, PODS, condition, controller_of, node_matches_pod_selectors, parse_quantity,
                     pod_requests, quantity_or_zero, untolerated_taint)
from .initial_state import INSTANCE_SHAPES, new_node_name, node_object
from .scheduler import HOSTNAME

if TYPE_CHECKING:
    from .cluster import Cluster

ZONE = "topology.kubernetes.io/zone"
SUBNET_ZONES = ("us-west-2a", "us-west-2b")  # the sandbox VPC's private subnets (sandbox/aws.py)
FAMILY_INSTANCE = {"g4dn": "g4dn.xlarge", "t3": "t3.large"}
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
DATA_DEVICE = "/dev/xvdb"  # Bottlerocket's data volume, where containerd keeps images


def data_volume_snapshot(nodeclass: dict | None) -> str | None:
    """The snapshot a Bottlerocket EC2NodeClass makes its nodes' data volume from
    (spec.blockDeviceMappings[].ebs.snapshotID of /dev/xvdb), or None."""
    from .device_plugin import is_bottlerocket

    if not is_bottlerocket(nodeclass):
        return None
    for mapping in (nodeclass.get("spec") or {}).get("blockDeviceMappings") or []:
        if mapping.get("deviceName") == DATA_DEVICE:
            return (mapping.get("ebs") or {}).get("snapshotID")
    return None


class Karpenter:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self.in_flight: dict[str, float] = {}  # node name -> when it joins (or started initializing)
        self._pool_of: dict[str, str] = {}  # node name -> nodepool
        self._unschedulable_since: dict[str, float] = {}  # pod uid -> first seen Unschedulable
        self.drifted: set[str] = set()  # nodes marked drifted by the fault (an AMI release)
        self._blocked_at: dict[str, float] = {}  # node -> when DisruptionBlocked was last recorded

    def inject(self, fault: str, params: dict) -> dict:
        """karpenter-drift [node=NAME] (default: every node of a pool) | karpenter-consolidate node=NAME."""
        nodes = {n["metadata"]["name"]: n for n in self.store.list(NODES)}
        name = params.get("node")
        if name and name not in nodes:
            raise ValueError(f"{fault}: node {name!r} not found; nodes: {', '.join(nodes) or 'none'}")
        pooled = [n for n, obj in nodes.items() if (obj["metadata"].get("labels") or {}).get("karpenter.sh/nodepool")]
        if fault == "karpenter-drift":
            targets = [name] if name else pooled
            self.drifted.update(targets)
            return {"fault": fault, "drifted": targets}
        if fault == "karpenter-consolidate":
            target = name or (pooled[0] if pooled else None)
            if target is None:
                raise ValueError("karpenter-consolidate: no node of a NodePool to consolidate; pass params.node")
            blocker = self._blocker(target)
            if blocker:
                self._record_blocked(nodes[target], blocker, time.monotonic(), force=True)
                return {"fault": fault, "node": target, "blocked": blocker}
            self._disrupt(nodes[target], "Underutilized", replace=False)
            return {"fault": fault, "node": target, "removed": True}
        raise ValueError(f"unknown Karpenter fault {fault!r}; known: karpenter-drift, karpenter-consolidate")

    def _blocker(self, node: str) -> str | None:
        """Why Karpenter may not disrupt `node` voluntarily, or None."""
        for pod in self.store.list(PODS, field_selector=f"spec.nodeName={node}"):
            if (controller_of(pod) or {}).get("kind") == "DaemonSet":
                continue
            if ((pod["metadata"].get("annotations") or {}).get(DO_NOT_DISRUPT)) == "true":
                return f'pod "{pod["metadata"]["namespace"]}/{pod["metadata"]["name"]}" has "{DO_NOT_DISRUPT}" annotation'
        return None

    def _record_blocked(self, node: dict, why: str, now: float, force: bool = False) -> None:
        name = node["metadata"]["name"]
        if force or now - self._blocked_at.get(name, -1e9) > self.cluster.options.scaled(60.0, 0.5):
            self._blocked_at[name] = now
            self.cluster.events.record(node, "Normal", "DisruptionBlocked", f"Cannot disrupt Node: {why}",
                                       component="karpenter")

    def _disrupt_drifted(self, nodes: dict[str, dict], now: float) -> None:
        from .device_plugin import EC2NODECLASSES, NODECLASS_HASH, NODECLASS_LABEL, nodeclass_hash

        for name, node in nodes.items():
            meta = node["metadata"]
            if any(t.get("key") == "karpenter.sh/disrupted" for t in node["spec"].get("taints") or []):
                continue
            nodeclass_name = (meta.get("labels") or {}).get(NODECLASS_LABEL)
            nodeclass = self.store.get(EC2NODECLASSES, None, nodeclass_name) if nodeclass_name else None
            stale = nodeclass is not None and (meta.get("annotations") or {}).get(NODECLASS_HASH) != nodeclass_hash(nodeclass)
            if not stale and name not in self.drifted:
                continue
            blocker = self._blocker(name)
            if blocker:
                self._record_blocked(node, blocker, now)
                continue
            self.drifted.discard(name)
            self._disrupt(node, "Drifted", replace=True)

    def _disrupt(self, node: dict, reason: str, replace: bool) -> None:
        """Karpenter's graceful disruption: (launch the replacement,) taint, drain through the
        Eviction API (PDBs honoured), delete the node once drained (faults.py Faults.drain)."""
        faults = self.cluster.faults
        if replace:
            faults.replace(node, time.monotonic() + self.cluster.options.node_replacement,
                           f"karpenter replaces {node['metadata']['name']} with {{}}")
        faults.drain(node, reason, ends_at=None)

    def launched(self, node: dict) -> dict:
        """A node boots from its pool's EC2NodeClass: the device plugin's settings, and a data volume
        from an image-cache snapshot holding the images the sandbox's AWS saw pulled into it."""
        from .device_plugin import nodeclass_of

        node = self.cluster.device_plugins.launched(node)
        snapshot = data_volume_snapshot(nodeclass_of(self.store, node))
        if snapshot and self.cluster.aws is not None:
            images = self.cluster.aws.snapshot_images(snapshot)
            if images:
                self.cluster.images.preload(node["metadata"]["name"], images)
            # The snapshot's files (models under /local) are on the node's disk, where hostPath finds them.
            disk = self.cluster.root / "hostpath" / node["metadata"]["name"]
            for path, content in self.cluster.aws.snapshot_files(snapshot).items():
                target = disk / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(content, target)
        return node

    def expect(self, node_name: str, pool: str, joins_at: float) -> None:
        """A node for `pool` is on its way (a launch, or a Spot replacement)."""
        self.in_flight[node_name] = joins_at
        self._pool_of[node_name] = pool

    def _busy(self, pool: str, now: float, nodes: dict[str, dict]) -> bool:
        grace = max(self.cluster.options.node_replacement * 3, self.cluster.options.scaled(60.0, 2.0))
        for name, joins_at in list(self.in_flight.items()):
            if self._pool_of.get(name) != pool:
                continue
            node = nodes.get(name)
            if node is None:
                if now - joins_at > grace:  # never joined (e.g. a removed step): forget it
                    del self.in_flight[name]
                    continue
                return True
            shape = INSTANCE_SHAPES.get((node["metadata"].get("labels") or {}).get("node.kubernetes.io/instance-type"), {})
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            initialized = not shape.get("gpus") or any(
                quantity_or_zero(v) > 0 for k, v in allocatable.items() if k.startswith("nvidia.com/gpu"))
            # Joined but its GPUs not registered yet (the device plugin's pod is starting): Karpenter
            # counts a NodeClaim as capacity until it is initialized, so pods pending for its GPUs get
            # no second node (kubernetes-sigs/karpenter pkg/controllers/provisioning/scheduling: in-flight
            # NodeClaims; a claim that never registers is dropped after 15 min, nodeclaim/lifecycle/liveness.go).
            if initialized or now - joins_at > max(grace, self.cluster.options.scaled(900.0, 30.0)):
                del self.in_flight[name]
                continue
            return True
        return False

    def sync(self) -> None:
        """Launch a node for pods that stayed Unschedulable for a batch window, if a pool fits them."""
        pools = self.cluster.snapshot(NODEPOOLS)
        if not pools:
            return
        now = time.monotonic()
        nodes = {n["metadata"]["name"]: n for n in self.cluster.snapshot(NODES)}
        self._disrupt_drifted(nodes, now)
        batch = self._batch()
        pending = []
        pods = self.cluster.snapshot(PODS)
        live = {p["metadata"]["uid"] for p in pods if not p["spec"].get("nodeName")}
        for uid in [u for u in self._unschedulable_since if u not in live]:
            del self._unschedulable_since[uid]
        for pod in pods:
            cond = condition(pod, "PodScheduled")
            if pod["spec"].get("nodeName") or not cond or cond.get("reason") != "Unschedulable":
                continue
            if (((pod["spec"].get("affinity") or {}).get("podAffinity") or {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution")):
                continue
            if self._waited(pod["metadata"]["uid"], now) < batch:
                continue
            pending.append(pod)
        # A node on its way (a launch or a Spot replacement, of any pool) is capacity already: the pods
        # it could take wait for it rather than get another node from some other pool (Karpenter's
        # provisioner schedules pending pods onto in-flight NodeClaims first).
        idle = []
        for pool in sorted(pools, key=lambda p: -int((p.get("spec") or {}).get("weight", 0))):
            if not self._busy(pool["metadata"]["name"], now, nodes):
                idle.append(pool)
                continue
            coming = self._candidate(pool, nodes)
            pending = [p for p in pending if coming is not None and not self._fits(p, coming)]
        for pool in idle:
            candidate = self._candidate(pool, nodes)
            if candidate is None:
                continue
            fitting = [p for p in pending if self._fits(p, candidate)]
            launched = dict(nodes)
            nominated: list[tuple[dict, str]] = []  # (pod, zone of its new node) in this pass
            for group in self._node_groups(fitting, candidate):
                zone = self._zone_for(pool, group, pods, launched, nominated)
                node = self._candidate(pool, launched, zone)
                if node is None:  # the pool's limits allow no more nodes
                    break
                self._launch(pool, node, group, now)
                pending = [p for p in pending if p not in group]
                launched[node["metadata"]["name"]] = node
                nominated.extend((p, zone) for p in group)

    def next_due(self, now: float) -> float | None:
        """When the batch window of a pod seen Unschedulable ends (the loop runs a full pass then)."""
        batch = self._batch()
        later = [since + batch for since in list(self._unschedulable_since.values()) if since + batch > now]
        return min(later) if later else None

    def _batch(self) -> float:
        """Karpenter's batch window (profile.py); the arbitrary modes keep their longer one."""
        options = self.cluster.options
        return options.profiled("karpenter_batch") if options.time_scale else options.scaled(10.0, 0.3, 10.0)

    def _waited(self, uid: str, now: float) -> float:
        return now - self._unschedulable_since.setdefault(uid, now)

    @staticmethod
    def _zone_for(pool: dict, group: list[dict], pods: list[dict], nodes: dict[str, dict],
                  nominated: list[tuple[dict, str]]) -> str:
        """The zone of the node for `group`: among the zones the pool admits (its
        topology.kubernetes.io/zone requirement, else the VPC's subnets), the one with the fewest
        pods matching the group's zone spread constraints, DoNotSchedule or ScheduleAnyway alike
        (Karpenter honours preferences as long as it can: kubernetes-sigs/karpenter
        pkg/controllers/provisioning/scheduling/topology.go and preferences.go); without such a
        constraint the first zone."""
        spec = ((pool.get("spec") or {}).get("template") or {}).get("spec") or {}
        wanted = next((r.get("values") for r in spec.get("requirements") or []
                       if r.get("key") == ZONE and r.get("operator") == "In"), None)
        zones = [z for z in SUBNET_ZONES if not wanted or z in wanted] or list(wanted or SUBNET_ZONES)
        constraints = [c for pod in group for c in pod["spec"].get("topologySpreadConstraints") or []
                       if c.get("topologyKey") == ZONE and c.get("labelSelector") is not None]
        if not constraints:
            return zones[0]
        namespace = group[0]["metadata"]["namespace"]
        zone_of = {name: (n["metadata"].get("labels") or {}).get(ZONE) for name, n in nodes.items()}
        placed = [(p, zone_of.get(p["spec"].get("nodeName"))) for p in pods
                  if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")] + nominated
        counts = {z: sum(1 for p, where in placed if where == z and p["metadata"]["namespace"] == namespace
                         and any(selector_matches(c["labelSelector"], p["metadata"].get("labels")) for c in constraints))
                  for z in zones}
        return min(zones, key=lambda z: (counts[z], zones.index(z)))

    def _candidate(self, pool: dict, nodes: dict[str, dict], zone: str = SUBNET_ZONES[0]) -> dict | None:
        """The node this pool would launch next (in `zone`), or None when its limits are reached."""
        spec = ((pool.get("spec") or {}).get("template") or {}).get("spec") or {}
        requirements = {r.get("key"): r for r in spec.get("requirements") or []}
        family = ((requirements.get("karpenter.k8s.aws/instance-family") or {}).get("values") or ["g4dn"])[0]
        instance = ((requirements.get("node.kubernetes.io/instance-type") or {}).get("values") or
                    [FAMILY_INSTANCE.get(family, "g4dn.xlarge")])[0]
        if instance not in INSTANCE_SHAPES:
            instance = "g4dn.xlarge"
        capacity_type = ((requirements.get("karpenter.sh/capacity-type") or {}).get("values") or ["on-demand"])[0]
        shape = INSTANCE_SHAPES[instance]
        pool_name = pool["metadata"]["name"]
        members = [n for n in nodes.values() if (n["metadata"].get("labels") or {}).get("karpenter.sh/nodepool") == pool_name]
        limits = (pool.get("spec") or {}).get("limits") or {}
        if "nvidia.com/gpu" in limits and (len(members) + 1) * shape["gpus"] > parse_quantity(limits["nvidia.com/gpu"]):
            return None
        if "cpu" in limits and (len(members) + 1) * parse_quantity(shape["capacity"]["cpu"]) > parse_quantity(limits["cpu"]):
            return None
        gpu = bool(shape["gpus"])
        name, ip = new_node_name("10.0.1" if gpu else "10.0.2", set(nodes) | set(self.in_flight))
        node = node_object(name, instance, zone=zone, gpu=gpu, capacity_type=capacity_type,
                           nodepool=pool_name, ip=ip)
        labels = node["metadata"]["labels"]
        labels.update(((pool["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {})
        for key, req in requirements.items():
            if req.get("operator") == "In" and req.get("values") and key not in labels:
                labels[key] = req["values"][0]
        node["spec"]["taints"] = [dict(t) for t in spec.get("taints") or []]
        return node

    def _fits(self, pod: dict, node: dict) -> bool:
        spec = pod["spec"]
        if untolerated_taint(spec.get("tolerations"), node) is not None:
            return False
        if not node_matches_pod_selectors(spec, node):
            return False
        shape = INSTANCE_SHAPES[node["metadata"]["labels"]["node.kubernetes.io/instance-type"]]
        allocatable = {k: quantity_or_zero(v) for k, v in shape["allocatable"].items()}
        allocatable["nvidia.com/gpu"] = Fraction(shape["gpus"])
        return all(want <= allocatable.get(resource, Fraction(0)) for resource, want in pod_requests(spec).items())

    def _node_groups(self, pods: list[dict], node: dict) -> list[list[dict]]:
        """The pods split into groups one new node each can hold: their requests together fit the
        instance (GPUs as physical), and no pod's required anti-affinity on the hostname selects
        another of its group (either way round, as the scheduler checks both)."""
        shape = INSTANCE_SHAPES[node["metadata"]["labels"]["node.kubernetes.io/instance-type"]]
        allocatable = {k: quantity_or_zero(v) for k, v in shape["allocatable"].items()}
        allocatable["nvidia.com/gpu"] = Fraction(shape["gpus"])
        groups: list[tuple[list[dict], dict[str, Fraction]]] = []
        for pod in pods:
            wants = pod_requests(pod["spec"])
            for members, used in groups:
                fits = all(used.get(r, 0) + w <= allocatable.get(r, Fraction(0)) for r, w in wants.items())
                if fits and not any(_repels(pod, other) or _repels(other, pod) for other in members):
                    members.append(pod)
                    for r, w in wants.items():
                        used[r] = used.get(r, Fraction(0)) + w
                    break
            else:
                groups.append(([pod], dict(wants)))
        return [members for members, _ in groups]

    def _launch(self, pool: dict, node: dict, pods: list[dict], now: float) -> None:
        name = node["metadata"]["name"]
        delay = self.cluster.options.node_replacement
        shape = INSTANCE_SHAPES[node["metadata"]["labels"]["node.kubernetes.io/instance-type"]]
        self.cluster.device_plugins.physical[name] = shape["gpus"]
        node = self.launched(node)
        self.expect(name, pool["metadata"]["name"], now + delay)
        claim = f"{pool['metadata']['name']}-{name.split('.')[0][-5:]}"
        for pod in pods:
            self.cluster.events.record(pod, "Normal", "Nominated", f"Pod should schedule on: nodeclaim/{claim}",
                                       component="karpenter")
        self.cluster.faults.schedule(now + delay, f"karpenter launches {name}", lambda: self.cluster.faults.join(node))


def _repels(pod: dict, other: dict) -> bool:
    """`pod` has a required anti-affinity term on the hostname that selects `other`."""
    anti = ((pod["spec"].get("affinity") or {}).get("podAntiAffinity") or {})
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
        namespaces = term.get("namespaces") or [pod["metadata"]["namespace"]]
        if (term.get("topologyKey") == HOSTNAME and term.get("labelSelector") is not None
                and other["metadata"]["namespace"] in namespaces
                and selector_matches(term["labelSelector"], other["metadata"].get("labels"))):
            return True
    return False
