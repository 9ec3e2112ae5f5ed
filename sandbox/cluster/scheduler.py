"""The scheduler: binds Pending pods to nodes, or says why none fits, in the real scheduler's words.

Filters run in the default plugin order (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit, PodTopologySpread, InterPodAffinity); a node is rejected by the first filter that fails, and the
reasons are summed over nodes and sorted, as `FitError` prints them:

    0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) didn't match Pod's node
    affinity/selector. preemption: 0/2 nodes are available: 1 No preemption victims found for
    incoming pod, 1 Preemption is not helpful for scheduling.

All pods here have the same priority, so preemption never finds victims: nodes that failed only
for resources count as "No preemption victims found", the others as "not helpful".
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import TYPE_CHECKING

from sandbox.kubeapi.store import selector_matches

from .common import (PODS, PVCS, STORAGECLASSES, is_deleting, merge_condition, node_matches_pod_selectors,
                     pod_is_terminal, pod_requests, quantity_or_zero, untolerated_taint)

if TYPE_CHECKING:
    from .cluster import Cluster

HOSTNAME = "kubernetes.io/hostname"
PREEMPTION_NO_VICTIMS = "No preemption victims found for incoming pod"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"


class NodeView:
    """What the scheduler knows of a node during one pass (updated as it binds)."""

    def __init__(self, node: dict):
        self.node = node
        self.name = node["metadata"]["name"]
        self.labels = node["metadata"].get("labels") or {}
        alloc = (node.get("status") or {}).get("allocatable") or {}
        self.allocatable = {k: quantity_or_zero(v) for k, v in alloc.items()}
        self.used: dict[str, Fraction] = {}
        self.pod_count = 0

    def add(self, requests: dict[str, Fraction]) -> None:
        for k, v in requests.items():
            self.used[k] = self.used.get(k, Fraction(0)) + v
        self.pod_count += 1


class Scheduler:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self._last_message: dict[str, str] = {}

    def sync(self, pods: list[dict], nodes: list[dict]) -> None:
        """Bind every schedulable Pending pod, or mark it Unschedulable with the reasons."""
        views = {n["metadata"]["name"]: NodeView(n) for n in nodes}
        bound: list[tuple[dict, str]] = []  # (pod, node name) of pods holding resources
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name and not pod_is_terminal(pod):
                bound.append((pod, node_name))
                if node_name in views:
                    views[node_name].add(pod_requests(pod["spec"]))
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName") and not pod_is_terminal(p)
                   and not is_deleting(p)
                   and (p["spec"].get("schedulerName") or "default-scheduler") == "default-scheduler"]
        pending.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), int(p["metadata"]["resourceVersion"])))
        live_uids = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._last_message if u not in live_uids]:
            del self._last_message[uid]
        for pod in pending:
            self._schedule_one(pod, views, bound)

    # -- one pod -------------------------------------------------------------------------------

    def _schedule_one(self, pod: dict, views: dict[str, NodeView], bound: list[tuple[dict, str]]) -> None:
        spec, ns = pod["spec"], pod["metadata"]["namespace"]
        total = len(views)
        volume_problem = self._volume_problem(pod)
        if volume_problem == "wait":
            return  # WaitForFirstConsumer: the provisioner binds it now that a pod uses it
        if volume_problem:
            self._unschedulable(pod, f"0/{total} nodes are available: {volume_problem}. preemption: 0/{total} nodes "
                                     f"are available: {total} {PREEMPTION_NOT_HELPFUL}." if total else
                                "no nodes available to schedule pods")
            return
        requests = pod_requests(spec)
        reasons: Counter = Counter()
        preemption: Counter = Counter()
        feasible: list[NodeView] = []
        for view in views.values():
            failed = self._filter(pod, spec, ns, requests, view, views, bound)
            if not failed:
                feasible.append(view)
                continue
            for reason in failed:
                reasons[reason] += 1
            resource_only = all(r.startswith("Insufficient ") or r == "Too many pods" for r in failed)
            preemption[PREEMPTION_NO_VICTIMS if resource_only else PREEMPTION_NOT_HELPFUL] += 1
        if feasible:
            chosen = min(feasible, key=lambda v: (self._spread_score(pod, v, views, bound), self._score(v), v.name))
            self._bind(pod, chosen)
            chosen.add(requests)
            bound.append((pod, chosen.name))
            return
        if not total:
            self._unschedulable(pod, "no nodes available to schedule pods")
            return
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        pre = ", ".join(f"{count} {reason}" for reason, count in sorted(preemption.items()))
        self._unschedulable(pod, f"0/{total} nodes are available: {summary}. "
                                 f"preemption: 0/{total} nodes are available: {pre}.")

    @staticmethod
    def _score(view: NodeView) -> Fraction:
        """LeastAllocated: prefer the node with the largest free share of cpu and memory."""
        score = Fraction(0)
        for resource in ("cpu", "memory"):
            alloc = view.allocatable.get(resource) or Fraction(1)
            score += view.used.get(resource, Fraction(0)) / alloc
        return score

    def _filter(self, pod: dict, spec: dict, ns: str, requests: dict[str, Fraction], view: NodeView,
                views: dict[str, NodeView], bound: list[tuple[dict, str]]) -> list[str]:
        node = view.node
        if (node.get("spec") or {}).get("unschedulable") and not _tolerates_unschedulable(spec):
            return ["node(s) were unschedulable"]
        taint = untolerated_taint(spec.get("tolerations"), node)
        if taint is not None:
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
        if not node_matches_pod_selectors(spec, node):
            return ["node(s) didn't match Pod's node affinity/selector"]
        insufficient = []
        if view.pod_count + 1 > view.allocatable.get("pods", Fraction(110)):
            insufficient.append("Too many pods")
        for resource, want in sorted(requests.items()):
            if want <= 0:
                continue
            free = view.allocatable.get(resource, Fraction(0)) - view.used.get(resource, Fraction(0))
            if want > free:
                insufficient.append(f"Insufficient {resource}")
        if insufficient:
            return insufficient
        spread = self._spread_problem(pod, view, views, bound)
        if spread:
            return [spread]
        affinity = spec.get("affinity") or {}
        if not self._pod_affinity_ok(pod, ns, affinity.get("podAffinity"), view, views, bound):
            return ["node(s) didn't match pod affinity rules"]
        if not self._pod_anti_affinity_ok(ns, affinity.get("podAntiAffinity"), view, views, bound):
            return ["node(s) didn't match pod anti-affinity rules"]
        if not self._existing_anti_affinity_ok(pod, view, views, bound):
            return ["node(s) didn't satisfy existing pods anti-affinity rules"]
        return []

    # -- topology spread (pkg/scheduler/framework/plugins/podtopologyspread) ---------------------

    @staticmethod
    def _domain_counts(pod: dict, constraint: dict, constraints: list[dict], views: dict[str, NodeView],
                       bound) -> dict[str, int]:
        """Matching pods per domain of `constraint`'s key, over the nodes that count as domains:
        those the pod's nodeSelector/required node affinity admits (nodeAffinityPolicy Honor, the
        default; taints are ignored, nodeTaintsPolicy Ignore) carrying every constraint's key
        (common.go nodeLabelsMatchSpreadConstraints). Terminating pods are not counted
        (countPodsMatchSelector: "Bypass terminating Pod"), nor are other namespaces'."""
        key, selector, ns = constraint["topologyKey"], constraint.get("labelSelector"), pod["metadata"]["namespace"]
        counts: dict[str, int] = {}
        for view in views.values():
            if all(c.get("topologyKey") in view.labels for c in constraints) \
                    and node_matches_pod_selectors(pod["spec"], view.node):
                counts.setdefault(view.labels[key], 0)
        if selector is None:  # a nil selector matches no pod (LabelSelectorAsSelector(nil) is Nothing)
            return counts
        for other, node_name in bound:
            view = views.get(node_name)
            if view is None or is_deleting(other) or other["metadata"]["namespace"] != ns:
                continue
            domain = view.labels.get(key)
            if domain in counts and selector_matches(selector, other["metadata"].get("labels")):
                counts[domain] += 1
        return counts

    def _spread_problem(self, pod: dict, view: NodeView, views: dict[str, NodeView], bound) -> str | None:
        """filtering.go Filter: for each DoNotSchedule constraint, placing the pod here must keep
        (matches here + 1 if the pod matches itself) - the global minimum within maxSkew; with
        fewer domains than minDomains the minimum counts as 0."""
        constraints = [c for c in pod["spec"].get("topologySpreadConstraints") or []
                       if c.get("whenUnsatisfiable") == "DoNotSchedule"]
        for constraint in constraints:
            key = constraint["topologyKey"]
            if key not in view.labels:
                return "node(s) didn't match pod topology spread constraints (missing required label)"
            counts = self._domain_counts(pod, constraint, constraints, views, bound)
            minimum = min(counts.values()) if counts else 0
            if len(counts) < int(constraint.get("minDomains") or 1):
                minimum = 0
            selector = constraint.get("labelSelector")
            itself = int(selector is not None and selector_matches(selector, pod["metadata"].get("labels")))
            if counts.get(view.labels[key], 0) + itself - minimum > int(constraint.get("maxSkew", 1)):
                return "node(s) didn't match pod topology spread constraints"
        return None

    def _spread_score(self, pod: dict, view: NodeView, views: dict[str, NodeView], bound) -> int:
        """scoring.go, reduced to its order: ScheduleAnyway constraints prefer the node whose domain
        holds the fewest matching pods (a node without the key scores worst)."""
        constraints = [c for c in pod["spec"].get("topologySpreadConstraints") or []
                       if c.get("whenUnsatisfiable") == "ScheduleAnyway"]
        score = 0
        for constraint in constraints:
            domain = view.labels.get(constraint["topologyKey"])
            counts = self._domain_counts(pod, constraint, constraints, views, bound)
            score += counts.get(domain, len(bound) + 1) if domain is not None else len(bound) + 1
        return score

    # -- inter-pod affinity --------------------------------------------------------------------

    @staticmethod
    def _term_namespaces(term: dict, ns: str) -> set[str] | None:
        if term.get("namespaceSelector") == {}:
            return None  # all namespaces
        return set(term.get("namespaces") or [ns])

    def _matching_pods(self, term: dict, ns: str, bound: list[tuple[dict, str]]):
        namespaces = self._term_namespaces(term, ns)
        for other, node_name in bound:
            if namespaces is not None and other["metadata"]["namespace"] not in namespaces:
                continue
            if selector_matches(term.get("labelSelector"), other["metadata"].get("labels")) \
                    and term.get("labelSelector") is not None:
                yield other, node_name

    def _pod_affinity_ok(self, pod: dict, ns: str, affinity: dict | None, view: NodeView,
                         views: dict[str, NodeView], bound) -> bool:
        terms = (affinity or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
        for term in terms:
            key = term.get("topologyKey") or HOSTNAME
            here = view.labels.get(key)
            matches = list(self._matching_pods(term, ns, bound))
            if any(here is not None and views.get(n) is not None and views[n].labels.get(key) == here
                   for _, n in matches):
                continue
            # The first pod of a group that selects itself may go anywhere (scheduler rule).
            namespaces = self._term_namespaces(term, ns)
            self_match = (term.get("labelSelector") is not None
                          and selector_matches(term["labelSelector"], pod["metadata"].get("labels"))
                          and (namespaces is None or ns in namespaces))
            if not matches and self_match and here is not None:
                continue
            return False
        return True

    def _pod_anti_affinity_ok(self, ns: str, anti: dict | None, view: NodeView, views, bound) -> bool:
        for term in (anti or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []:
            key = term.get("topologyKey") or HOSTNAME
            here = view.labels.get(key)
            if here is None:
                continue
            for _, n in self._matching_pods(term, ns, bound):
                if views.get(n) is not None and views[n].labels.get(key) == here:
                    return False
        return True

    def _existing_anti_affinity_ok(self, pod: dict, view: NodeView, views, bound) -> bool:
        for other, n in bound:
            anti = ((other["spec"].get("affinity") or {}).get("podAntiAffinity") or {})
            for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
                namespaces = self._term_namespaces(term, other["metadata"]["namespace"])
                if namespaces is not None and pod["metadata"]["namespace"] not in namespaces:
                    continue
                if term.get("labelSelector") is None or \
                        not selector_matches(term["labelSelector"], pod["metadata"].get("labels")):
                    continue
                key = term.get("topologyKey") or HOSTNAME
                if views.get(n) is not None and view.labels.get(key) is not None \
                        and views[n].labels.get(key) == view.labels.get(key):
                    return False
        return True

    # -- volumes -------------------------------------------------------------------------------

    def _volume_problem(self, pod: dict) -> str | None:
        ns = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self.store.get(PVCS, ns, claim)
            if pvc is None:
                return f'persistentvolumeclaim "{claim}" not found'
            if (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            sc_name = (pvc.get("spec") or {}).get("storageClassName")
            sc = self.store.get(STORAGECLASSES, None, sc_name) if sc_name else None
            if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer":
                return "wait"
            return "pod has unbound immediate PersistentVolumeClaims"
        return None

    # -- writes --------------------------------------------------------------------------------

    def _bind(self, pod: dict, view: NodeView) -> None:
        meta = pod["metadata"]

        def bind(obj: dict) -> None:
            if obj["spec"].get("nodeName"):
                return
            obj["spec"]["nodeName"] = view.name
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            status["conditions"] = merge_condition(status.get("conditions"), "PodScheduled", "True", probe_time=True)

        if self.store.mutate(PODS, meta["namespace"], meta["name"], bind) is not None:
            self._last_message.pop(meta["uid"], None)
            self.cluster.events.record(pod, "Normal", "Scheduled",
                                       f"Successfully assigned {meta['namespace']}/{meta['name']} to {view.name}",
                                       component="default-scheduler")

    def _unschedulable(self, pod: dict, message: str) -> None:
        meta = pod["metadata"]

        def mark(obj: dict) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            status["conditions"] = merge_condition(status.get("conditions"), "PodScheduled", "False",
                                                   "Unschedulable", message, probe_time=True)

        self.store.mutate(PODS, meta["namespace"], meta["name"], mark)
        if self._last_message.get(meta["uid"]) != message:
            self._last_message[meta["uid"]] = message
            self.cluster.events.record(pod, "Warning", "FailedScheduling", message, component="default-scheduler")


def _tolerates_unschedulable(spec: dict) -> bool:
    return any(t.get("key") == "node.kubernetes.io/unschedulable" and (t.get("operator") == "Exists")
               for t in spec.get("tolerations") or [])
