"""The controller manager: Deployments, ReplicaSets, DaemonSets, Jobs, garbage collection,
Namespaces and Endpoints, each a reconcile function over the store.

They follow kube-controller-manager closely enough for a playbook to be tested against them:
pod-template-hash ReplicaSets and rolling updates with maxSurge/maxUnavailable (or Recreate),
the Available/Progressing conditions with ProgressDeadlineExceeded, one DaemonSet pod per
eligible node rolled one at a time, Jobs with backoffLimit, exponential pod back-off,
podFailurePolicy and activeDeadlineSeconds, and ownerReference garbage collection. Status fields that Kubernetes omits when zero are omitted.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from typing import TYPE_CHECKING

from sandbox.kubeapi.resources import RESOURCES, by_key
from sandbox.kubeapi.store import ApiError, now_iso, selector_matches

from .common import (DAEMONSETS, DEPLOYMENTS, ENDPOINTS, JOBS, NAMESPACES, NODES, PODS, REPLICASETS, SERVICES,
                     condition, controller_of, is_deleting, merge_condition, node_matches_pod_selectors,
                     owner_reference, pod_is_active, pod_is_ready, pod_is_terminal, pod_phase, template_hash,
                     untolerated_taint)

if TYPE_CHECKING:
    from .cluster import Cluster

# The DaemonSet controller adds these tolerations to its pods.
DAEMONSET_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
# DefaultTolerationSeconds admission adds these to every pod without them.
DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]


def _int_or_percent(value, total: int, round_up: bool, default: str) -> int:
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def pod_from_template(template: dict, *, namespace: str, name_prefix: str, owner: dict,
                      extra_labels: dict | None = None) -> dict:
    """A Pod as a controller sends it to the API server's create (which names it, admits and defaults it)."""
    tmeta = copy.deepcopy(template.get("metadata") or {})
    spec = copy.deepcopy(template.get("spec") or {})
    labels = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
    meta = {"generateName": name_prefix, "namespace": namespace, "labels": labels,
            "ownerReferences": [owner_reference(owner)]}
    if tmeta.get("annotations"):
        meta["annotations"] = tmeta["annotations"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = list(spec.get("tolerations") or [])
    for default in DEFAULT_TOLERATIONS:
        if not any(t.get("key") == default["key"] and t.get("effect") in (None, default["effect"]) for t in tolerations):
            tolerations.append(dict(default))
    spec["tolerations"] = tolerations
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        if "imagePullPolicy" not in container:
            image = container.get("image", "")
            name = image.rsplit("/", 1)[-1]
            latest = "@" not in image and (":" not in name or name.endswith(":latest"))
            container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": "Pending"}}


class Controllers:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self.options = cluster.options
        self._progress: dict[str, tuple[tuple, float]] = {}  # deployment uid -> (signature, since)
        self._job_seen: dict[str, set[str]] = {}  # job uid -> uids of its active pods last pass
        self._job_lost: dict[str, int] = {}  # job uid -> pods that vanished before finishing
        self._job_failure_at: dict[str, tuple[int, float]] = {}  # job uid -> (failures, when last counted)
        self._job_pods_gone: dict[str, dict] = {}  # pod uid -> the Job pod's last state when it was deleted
        self.store.add_listener(self._remember_job_pod)
        self._known_namespaces: set[str] = set()
        self._managed_endpoints: set[tuple[str, str]] = set()

    # -- helpers -------------------------------------------------------------------------------

    def _event(self, obj: dict, type_: str, reason: str, message: str, component: str) -> None:
        self.cluster.events.record(obj, type_, reason, message, component=component)

    def _delete(self, res, namespace: str | None, name: str) -> bool:
        try:
            self.store.delete(res, namespace, name)
            return True
        except ApiError:
            return False

    def _create_pod(self, template: dict, owner: dict, prefix: str, extra_labels: dict | None = None,
                    mutate=None) -> dict:
        """Create one pod for `owner` through the API server's create (admission, defaults,
        validation), as upstream's controllers do, with the events of pkg/controller's
        RealPodControl: SuccessfulCreate, or FailedCreate "Error creating: ..." and the ApiError raised."""
        ns = owner["metadata"]["namespace"]
        component = f"{owner['kind'].lower()}-controller"
        for attempt in range(5):
            pod = pod_from_template(template, namespace=ns, name_prefix=prefix, owner=owner, extra_labels=extra_labels)
            if mutate:
                mutate(pod)
            try:
                created = self.cluster.registry.create(PODS, ns, pod, manager="kube-controller-manager")
            except ApiError as err:
                if err.code == 409 and attempt < 4:  # a generated name taken: draw another
                    continue
                self._event(owner, "Warning", "FailedCreate", f"Error creating: {err.message}", component)
                raise
            self._event(owner, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component)
            return created
        raise AssertionError("unreachable")

    @staticmethod
    def _pods_by_owner(pods: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for pod in pods:
            ref = controller_of(pod)
            if ref:
                out.setdefault(ref["uid"], []).append(pod)
        return out

    # -- namespaces ----------------------------------------------------------------------------

    def sync_namespaces(self) -> None:
        """Namespaces Active; a terminating or deleted namespace takes its contents along."""
        namespaces = self.cluster.snapshot(NAMESPACES)
        present = {n["metadata"]["name"] for n in namespaces}
        for ns in namespaces:
            name = ns["metadata"]["name"]
            if is_deleting(ns) or (ns.get("status") or {}).get("phase") == "Terminating":
                self._empty_namespace(name)
                if not [f for f in ns.get("spec", {}).get("finalizers", []) or [] if f != "kubernetes"] \
                        and not [f for f in ns["metadata"].get("finalizers") or []]:
                    self._delete(NAMESPACES, None, name)
                    present.discard(name)
                continue
            if (ns.get("status") or {}).get("phase") != "Active":
                def active(obj: dict) -> None:
                    obj["status"] = {**(obj.get("status") or {}), "phase": "Active"}
                self.store.mutate(NAMESPACES, None, name, active)
        for gone in self._known_namespaces - present:
            self._empty_namespace(gone)  # deleted outright: its contents go too
        self._known_namespaces = present

    def _empty_namespace(self, namespace: str) -> None:
        for res in RESOURCES:
            if not res.namespaced:
                continue
            for obj in self.store.list(res, namespace):
                if not obj["metadata"].get("finalizers"):  # held objects wait for their finalizers
                    self._delete(res, namespace, obj["metadata"]["name"])

    # -- garbage collection --------------------------------------------------------------------

    def collect_garbage(self) -> None:
        """Delete objects whose owners are all gone; finish deletions that wait on dependents."""
        for _ in range(5):  # cascades: Deployment -> ReplicaSet -> Pod
            objects = self.store.all_objects()
            uids = {obj["metadata"].get("uid") for _, obj in objects}
            dependents: dict[str, list[tuple[str, dict]]] = {}
            for key, obj in objects:
                for ref in obj["metadata"].get("ownerReferences") or []:
                    dependents.setdefault(ref.get("uid"), []).append((key, obj))
            changed = False
            for key, obj in objects:
                meta = obj["metadata"]
                refs = meta.get("ownerReferences") or []
                res = by_key(key)
                if refs and not any(ref.get("uid") in uids for ref in refs):
                    changed |= self._delete(res, meta.get("namespace"), meta["name"])
                    continue
                if is_deleting(obj):
                    changed |= self._finish_deletion(res, obj, dependents.get(meta.get("uid"), []))
            if not changed:
                return

    def _finish_deletion(self, res, obj: dict, dependents: list[tuple[str, dict]]) -> bool:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if res.kind == "Pod" and meta.get("deletionTimestamp"):
            return False  # the kubelet stops its containers first
        if "foregroundDeletion" in finalizers:
            if dependents:
                for key, dep in dependents:
                    self._delete(by_key(key), dep["metadata"].get("namespace"), dep["metadata"]["name"])
                return True
            finalizers.remove("foregroundDeletion")
        if "orphan" in finalizers:
            for key, dep in dependents:
                def drop(o: dict, uid=meta.get("uid")) -> None:
                    o["metadata"]["ownerReferences"] = [r for r in o["metadata"].get("ownerReferences") or []
                                                        if r.get("uid") != uid]
                self.store.mutate(by_key(key), dep["metadata"].get("namespace"), dep["metadata"]["name"], drop)
            finalizers.remove("orphan")
        for ours in ("kubernetes.io/pvc-protection", "kubernetes.io/pv-protection"):
            if ours in finalizers:
                finalizers.remove(ours)
        if finalizers:
            if finalizers != (meta.get("finalizers") or []):
                def keep(o: dict) -> None:
                    o["metadata"]["finalizers"] = finalizers
                self.store.mutate(res, meta.get("namespace"), meta["name"], keep)
            return False
        return self._delete(res, meta.get("namespace"), meta["name"])

    # -- deployments ---------------------------------------------------------------------------

    def sync_deployments(self) -> None:
        """Roll every Deployment towards its template and write its status."""
        all_rs = self.cluster.snapshot(REPLICASETS)
        pods_by_owner = self._pods_by_owner(self.cluster.snapshot(PODS))
        deployments = self.cluster.snapshot(DEPLOYMENTS)
        live = set()
        for d in deployments:
            live.add(d["metadata"]["uid"])
            if is_deleting(d):
                continue
            try:
                self._sync_deployment(d, [rs for rs in all_rs if controller_of(rs) and
                                          controller_of(rs)["uid"] == d["metadata"]["uid"]], pods_by_owner)
            except ApiError as err:
                if err.code not in (404, 409):
                    raise
        for uid in [u for u in self._progress if u not in live]:
            del self._progress[uid]

    def _rs_pods(self, rs: dict, pods_by_owner: dict) -> list[dict]:
        return [p for p in pods_by_owner.get(rs["metadata"]["uid"], []) if pod_is_active(p)]

    def _scale_rs(self, d: dict, rs: dict, replicas: int) -> None:
        old = rs["spec"].get("replicas", 1)
        if old == replicas:
            return

        def scale(obj: dict) -> None:
            obj["spec"]["replicas"] = replicas
            ann = obj["metadata"].setdefault("annotations", {})
            ann["deployment.kubernetes.io/desired-replicas"] = str(d["spec"].get("replicas", 1))
        self.store.mutate(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"], scale)
        rs["spec"]["replicas"] = replicas
        direction = "up" if replicas > old else "down"
        self._event(d, "Normal", "ScalingReplicaSet",
                    f"Scaled {direction} replica set {rs['metadata']['name']} from {old} to {replicas}",
                    "deployment-controller")

    def _create_rs(self, d: dict, pod_hash: str, replicas: int, revision: int, max_surge: int) -> dict:
        meta, spec = d["metadata"], d["spec"]
        template = copy.deepcopy(spec.get("template") or {})
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), "pod-template-hash": pod_hash}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), "pod-template-hash": pod_hash}
        desired = spec.get("replicas", 1)
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{meta['name']}-{pod_hash}", "namespace": meta["namespace"],
                         "labels": dict(tmeta["labels"]), "ownerReferences": [owner_reference(d)],
                         "annotations": {"deployment.kubernetes.io/desired-replicas": str(desired),
                                         "deployment.kubernetes.io/max-replicas": str(desired + max_surge),
                                         "deployment.kubernetes.io/revision": str(revision)}},
            "spec": {"replicas": replicas, "selector": selector, "template": template,
                     "minReadySeconds": spec.get("minReadySeconds", 0)},
        }
        created = self.store.create(REPLICASETS, rs)
        self._event(d, "Normal", "ScalingReplicaSet",
                    f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}", "deployment-controller")
        return created

    def _sync_deployment(self, d: dict, owned: list[dict], pods_by_owner: dict) -> None:
        meta, spec = d["metadata"], d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec.get("template") or {})
        new = next((rs for rs in owned if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == pod_hash),
                   None)
        olds = sorted([rs for rs in owned if rs is not new], key=lambda r: r["metadata"].get("creationTimestamp", ""))
        strategy = (spec.get("strategy") or {}).get("type") or "RollingUpdate"
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        if strategy == "Recreate":
            max_surge, max_unavailable = 0, 0  # MaxUnavailable is 0 for anything but RollingUpdate
        else:
            max_surge = _int_or_percent(rolling.get("maxSurge"), replicas, True, "25%")
            max_unavailable = _int_or_percent(rolling.get("maxUnavailable"), replicas, False, "25%")
            if max_surge == 0 and max_unavailable == 0:
                max_unavailable = 1
        revisions = [int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0") or 0)
                     for rs in owned]
        max_revision = max(revisions, default=0)

        def available(rs: dict) -> int:
            return sum(1 for p in self._rs_pods(rs, pods_by_owner) if pod_is_ready(p))

        if not spec.get("paused"):
            if strategy == "Recreate":
                for old in olds:
                    self._scale_rs(d, old, 0)
                if not any(self._rs_pods(old, pods_by_owner) for old in olds):
                    if new is None:
                        new = self._create_rs(d, pod_hash, replicas, max_revision + 1, 0)
                    else:
                        self._scale_rs(d, new, replicas)
            else:
                total = sum(rs["spec"].get("replicas", 1) for rs in olds)
                if new is None:
                    want = replicas if not olds else min(replicas, max(0, replicas + max_surge - total))
                    new = self._create_rs(d, pod_hash, want, max_revision + 1, max_surge)
                else:
                    current = new["spec"].get("replicas", 1)
                    if current > replicas:
                        self._scale_rs(d, new, replicas)
                    elif current < replicas and total + current < replicas + max_surge:
                        self._scale_rs(d, new, min(replicas, current + replicas + max_surge - total - current))
                self._scale_down_olds(d, new, olds, replicas, max_unavailable, available)
            if new is not None:
                rev = int((new["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0") or 0)
                if rev < max_revision:  # an old template came back: it becomes the newest revision
                    def bump(obj: dict) -> None:
                        obj["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = \
                            str(max_revision + 1)
                    self.store.mutate(REPLICASETS, meta["namespace"], new["metadata"]["name"], bump)
            self._cleanup_history(d, new, olds, pods_by_owner)
        self._deployment_status(d, new, olds, replicas, max_unavailable, pods_by_owner)

    def _scale_down_olds(self, d, new, olds, replicas, max_unavailable, available) -> None:
        live_olds = [o for o in olds if o["spec"].get("replicas", 1) > 0]
        if not live_olds:
            return
        all_count = sum(rs["spec"].get("replicas", 1) for rs in olds + [new])
        min_available = replicas - max_unavailable
        new_unavailable = new["spec"].get("replicas", 1) - available(new)
        budget = all_count - min_available - new_unavailable
        if budget <= 0:
            return
        for old in live_olds:  # unhealthy old pods go first, they serve nothing
            unhealthy = old["spec"].get("replicas", 1) - available(old)
            if unhealthy > 0 and budget > 0:
                down = min(unhealthy, budget)
                self._scale_rs(d, old, old["spec"].get("replicas", 1) - down)
                budget -= down
        for old in live_olds:
            if budget <= 0:
                break
            down = min(old["spec"].get("replicas", 1), budget)
            if down > 0:
                self._scale_rs(d, old, old["spec"].get("replicas", 1) - down)
                budget -= down

    def _cleanup_history(self, d, new, olds, pods_by_owner) -> None:
        limit = int(d["spec"].get("revisionHistoryLimit", 10))
        idle = [o for o in olds if o["spec"].get("replicas", 1) == 0 and not self._rs_pods(o, pods_by_owner)]
        idle.sort(key=lambda o: int((o["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision",
                                                                                   "0") or 0))
        for old in idle[:max(0, len(idle) - limit)]:
            self._delete(REPLICASETS, old["metadata"]["namespace"], old["metadata"]["name"])

    def _deployment_status(self, d, new, olds, replicas, max_unavailable, pods_by_owner) -> None:
        meta, spec = d["metadata"], d.get("spec") or {}
        all_pods = [p for rs in olds + ([new] if new else []) for p in self._rs_pods(rs, pods_by_owner)]
        new_pods = self._rs_pods(new, pods_by_owner) if new else []
        ready = sum(1 for p in all_pods if pod_is_ready(p))
        total, updated, available = len(all_pods), len(new_pods), ready
        now = time.monotonic()
        signature = (new["metadata"]["name"] if new else None, updated, ready, total, meta.get("generation"))
        last = self._progress.get(meta["uid"])
        if last is None or last[0] != signature:
            self._progress[meta["uid"]] = (signature, now)
            since = now
        else:
            since = last[1]
        deadline = self.options.scaled(float(spec.get("progressDeadlineSeconds", 600)), low=2.0)
        complete = updated == replicas and available >= replicas and total == replicas
        rs_name = new["metadata"]["name"] if new else meta["name"]
        status: dict = {"observedGeneration": meta.get("generation", 1)}
        for key, value in (("replicas", total), ("updatedReplicas", updated), ("readyReplicas", ready),
                           ("availableReplicas", available), ("unavailableReplicas", max(0, replicas - available))):
            if value:
                status[key] = value
        conds = (d.get("status") or {}).get("conditions")
        if available >= replicas - max_unavailable:
            conds = merge_condition(conds, "Available", "True", "MinimumReplicasAvailable",
                                    "Deployment has minimum availability.", update_time=True)
        else:
            conds = merge_condition(conds, "Available", "False", "MinimumReplicasUnavailable",
                                    "Deployment does not have minimum availability.", update_time=True)
        if spec.get("paused"):
            conds = merge_condition(conds, "Progressing", "Unknown", "DeploymentPaused",
                                    "Deployment is paused", update_time=True)
        elif complete:
            conds = merge_condition(conds, "Progressing", "True", "NewReplicaSetAvailable",
                                    f'ReplicaSet "{rs_name}" has successfully progressed.', update_time=True)
        elif now - since > deadline:
            conds = merge_condition(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                                    f'ReplicaSet "{rs_name}" has timed out progressing.', update_time=True)
        else:
            conds = merge_condition(conds, "Progressing", "True", "ReplicaSetUpdated",
                                    f'ReplicaSet "{rs_name}" is progressing.', update_time=True)
        # A ReplicaSet's ReplicaFailure shows on its Deployment (deployment/progress.go getReplicaFailures).
        failure = next((c for rs in ([new] if new else []) + olds for c in (rs.get("status") or {}).get("conditions")
                        or [] if c.get("type") == "ReplicaFailure"), None)
        if failure:
            conds = merge_condition(conds, "ReplicaFailure", failure["status"], failure.get("reason"),
                                    failure.get("message"), update_time=True)
        else:
            conds = [c for c in conds if c["type"] != "ReplicaFailure"]
        conds.sort(key=lambda c: {"Available": 0, "Progressing": 1}.get(c["type"], 2))
        status["conditions"] = conds
        revision = (new["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision") if new else None

        def write(obj: dict) -> None:
            obj["status"] = status
            if revision:
                obj["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = revision
        if d.get("status") != status or (revision and (meta.get("annotations") or {}).get(
                "deployment.kubernetes.io/revision") != revision):
            self.store.mutate(DEPLOYMENTS, meta["namespace"], meta["name"], write)

    # -- replica sets --------------------------------------------------------------------------

    def sync_replicasets(self) -> None:
        """Create or delete pods until each ReplicaSet has its replicas; write its status."""
        pods_by_owner = self._pods_by_owner(self.cluster.snapshot(PODS))
        for rs in self.cluster.snapshot(REPLICASETS):
            if is_deleting(rs):
                continue
            meta, spec = rs["metadata"], rs.get("spec") or {}
            want = int(spec.get("replicas", 1))
            pods = [p for p in pods_by_owner.get(meta["uid"], []) if pod_is_active(p)]
            failure = None
            if len(pods) < want:
                for _ in range(want - len(pods)):
                    try:
                        pods.append(self._create_pod(spec.get("template") or {}, rs, f"{meta['name']}-"))
                    except ApiError as err:
                        failure = err.message  # retried on the next pass
                        break
            elif len(pods) > want:
                per_node = Counter(p["spec"].get("nodeName") for p in pods)

                def rank(p: dict) -> tuple:
                    """Delete the least useful first, as pkg/controller/controller_utils.go
                    ActivePodsWithRanks orders them: unscheduled, not running, not ready, the lower
                    controller.kubernetes.io/pod-deletion-cost, doubled up on a node, the newest."""
                    return (bool(p["spec"].get("nodeName")), pod_phase(p) == "Running", pod_is_ready(p),
                            deletion_cost(p), -per_node[p["spec"].get("nodeName")],
                            [-ord(ch) for ch in p["metadata"].get("creationTimestamp", "")])
                for pod in sorted(pods, key=rank)[:len(pods) - want]:
                    if self._delete(PODS, meta["namespace"], pod["metadata"]["name"]):
                        pods.remove(pod)
                        self._event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                                    "replicaset-controller")
            ready = sum(1 for p in pods if pod_is_ready(p))
            status = {"replicas": len(pods), "observedGeneration": meta.get("generation", 1)}
            labelled = sum(1 for p in pods if selector_matches(spec.get("selector"), p["metadata"].get("labels")))
            for key, value in (("fullyLabeledReplicas", labelled), ("readyReplicas", ready),
                               ("availableReplicas", ready)):
                if value:
                    status[key] = value
            # A failed create shows as ReplicaFailure until creates succeed again (replica_set.go calculateStatus).
            conds = [c for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") != "ReplicaFailure"]
            if failure:
                conds = merge_condition((rs.get("status") or {}).get("conditions"), "ReplicaFailure", "True",
                                        "FailedCreate", failure)
            if conds:
                status["conditions"] = conds
            if rs.get("status") != status:
                def write(obj: dict) -> None:
                    obj["status"] = status
                self.store.mutate(REPLICASETS, meta["namespace"], meta["name"], write)

    # -- daemon sets ---------------------------------------------------------------------------

    def sync_daemonsets(self) -> None:
        """One pod per eligible node for each DaemonSet, rolled on template change; write status."""
        nodes = self.cluster.snapshot(NODES)
        pods_by_owner = self._pods_by_owner(self.cluster.snapshot(PODS))
        for ds in self.cluster.snapshot(DAEMONSETS):
            if not is_deleting(ds):
                self._sync_daemonset(ds, nodes, pods_by_owner.get(ds["metadata"]["uid"], []))

    @staticmethod
    def _target_node(pod: dict) -> str | None:
        if pod["spec"].get("nodeName"):
            return pod["spec"]["nodeName"]
        terms = ((((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
                  .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
        for term in terms:
            for field in term.get("matchFields") or []:
                if field.get("key") == "metadata.name" and field.get("values"):
                    return field["values"][0]
        return None

    def _sync_daemonset(self, ds: dict, nodes: list[dict], pods: list[dict]) -> None:
        meta, spec = ds["metadata"], ds.get("spec") or {}
        template = spec.get("template") or {}
        tspec = template.get("spec") or {}
        tolerations = list(tspec.get("tolerations") or []) + DAEMONSET_TOLERATIONS
        eligible = {n["metadata"]["name"] for n in nodes
                    if node_matches_pod_selectors(tspec, n) and untolerated_taint(tolerations, n) is None}
        pod_hash = template_hash(template)
        ns = meta["namespace"]
        by_node: dict[str, list[dict]] = {}
        for pod in pods:
            if pod_phase(pod) == "Failed":  # the DaemonSet controller replaces failed pods
                self._delete(PODS, ns, pod["metadata"]["name"])
                continue
            if not pod_is_active(pod):
                continue
            target = self._target_node(pod)
            if target not in eligible:
                if self._delete(PODS, ns, pod["metadata"]["name"]):
                    self._event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                                "daemonset-controller")
                continue
            by_node.setdefault(target, []).append(pod)
        for node_name, node_pods in by_node.items():
            for extra in node_pods[1:]:
                self._delete(PODS, ns, extra["metadata"]["name"])
            del node_pods[1:]
        for node_name in sorted(eligible - set(by_node)):
            def pin(pod: dict, node_name=node_name) -> None:
                pod["spec"]["tolerations"] = pod["spec"]["tolerations"] + [
                    t for t in DAEMONSET_TOLERATIONS if t not in pod["spec"]["tolerations"]]
                affinity = pod["spec"].setdefault("affinity", {})
                affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}}
            try:
                by_node[node_name] = [self._create_pod(template, ds, f"{meta['name']}-",
                                                       {"controller-revision-hash": pod_hash,
                                                        "pod-template-generation": str(meta.get("generation", 1))},
                                                       mutate=pin)]
            except ApiError:
                break  # retried on the next pass
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "OnDelete":
            max_unavailable = max(1, _int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                                     len(eligible), True, "1"))
            unavailable = sum(1 for n in eligible if not any(pod_is_ready(p) for p in by_node.get(n, [])))
            outdated = [p for ps in by_node.values() for p in ps
                        if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != pod_hash]
            # Unready first, then by node name (the real controller's order is arbitrary; this one is fixed).
            outdated.sort(key=lambda p: (pod_is_ready(p), self._target_node(p) or ""))
            for pod in outdated:
                if pod_is_ready(pod):
                    if unavailable >= max_unavailable:
                        break
                    unavailable += 1
                if self._delete(PODS, ns, pod["metadata"]["name"]):
                    by_node[self._target_node(pod)] = []
                    self._event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                                "daemonset-controller")
        current = [ps[0] for ps in by_node.values() if ps]
        ready = sum(1 for p in current if pod_is_ready(p))
        updated = sum(1 for p in current if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == pod_hash)
        status = {"currentNumberScheduled": len(current), "desiredNumberScheduled": len(eligible),
                  "numberMisscheduled": 0, "numberReady": ready, "observedGeneration": meta.get("generation", 1)}
        for key, value in (("numberAvailable", ready), ("numberUnavailable", len(eligible) - ready),
                           ("updatedNumberScheduled", updated)):
            if value:
                status[key] = value
        if ds.get("status") != status:
            def write(obj: dict) -> None:
                obj["status"] = status
            self.store.mutate(DAEMONSETS, ns, meta["name"], write)

    # -- jobs ----------------------------------------------------------------------------------

    def sync_jobs(self) -> None:
        """Run Job pods to completion or to the backoff limit; write status and conditions."""
        pods_by_owner = self._pods_by_owner(self.cluster.snapshot(PODS))
        live = set()
        for job in self.cluster.snapshot(JOBS):
            live.add(job["metadata"]["uid"])
            if not is_deleting(job):
                self._sync_job(job, pods_by_owner.get(job["metadata"]["uid"], []))
        for table in (self._job_seen, self._job_lost, self._job_failure_at):
            for uid in [u for u in table if u not in live]:
                del table[uid]
        seen = set().union(*self._job_seen.values()) if self._job_seen else set()
        for uid in [u for u in self._job_pods_gone if u not in seen]:
            del self._job_pods_gone[uid]

    def _remember_job_pod(self, event) -> None:
        # Upstream keeps a Job's pods with the batch.kubernetes.io/job-tracking finalizer until it
        # has counted them; here a deleted pod's last state stands in for that (conditions included).
        if event.resource_key == PODS.key and event.type == "DELETED" and \
                any(o.get("kind") == "Job" for o in event.object["metadata"].get("ownerReferences") or []):
            self._job_pods_gone[event.object["metadata"]["uid"]] = event.object

    def _sync_job(self, job: dict, pods: list[dict]) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        status = copy.deepcopy(job.get("status") or {})
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in status.get("conditions") or [])
        active = [p for p in pods if pod_is_active(p)]
        existing = {p["metadata"]["uid"] for p in pods}
        policy = spec.get("podFailurePolicy")
        lost = [self._job_pods_gone.pop(u, {}) for u in self._job_seen.get(uid, set()) if u not in existing]
        self._job_lost[uid] = self._job_lost.get(uid, 0) + \
            sum(1 for p in lost if pod_failure_action(policy, p) != "Ignore")
        # Terminating pods stay seen: when they go, they count as lost (a drained pod is one).
        self._job_seen[uid] = {p["metadata"]["uid"] for p in pods if not pod_is_terminal(p)}
        succeeded = sum(1 for p in pods if pod_phase(p) == "Succeeded")
        failures = [p for p in pods if pod_phase(p) == "Failed"]
        fail_job = next((p for p in failures + lost if pod_failure_action(policy, p) == "FailJob"), None)
        failed = sum(1 for p in failures if pod_failure_action(policy, p) != "Ignore") + self._job_lost[uid]
        if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            failed += sum(cs.get("restartCount", 0) for p in pods
                          for cs in (p.get("status") or {}).get("containerStatuses") or [])
        now = time.monotonic()
        completions = spec.get("completions")
        completions = 1 if completions is None else int(completions)
        parallelism = int(spec.get("parallelism", 1))
        backoff_limit = int(spec.get("backoffLimit", 6))
        status.setdefault("startTime", now_iso())
        if finished:
            self._finish_ttl(job, status)
            return
        conds = status.get("conditions")
        if succeeded >= completions:
            conds = merge_condition(conds, "Complete", "True", probe_time=True)
            status["completionTime"] = now_iso()
            self._event(job, "Normal", "Completed", "Job completed", "job-controller")
        elif fail_job is not None:
            conds, active = self._fail_job(job, conds, active, "PodFailurePolicy",
                                           f"Pod {ns}/{fail_job['metadata'].get('name')} failed a FailJob rule "
                                           "of the Job's podFailurePolicy")
        elif failed > backoff_limit:
            conds, active = self._fail_job(job, conds, active, "BackoffLimitExceeded",
                                           "Job has reached the specified backoff limit")
        elif spec.get("activeDeadlineSeconds") is not None and self._job_age(status) > \
                self.options.scaled(float(spec["activeDeadlineSeconds"]), 0.5):
            conds, active = self._fail_job(job, conds, active, "DeadlineExceeded",
                                           "Job was active longer than specified deadline")
        elif not spec.get("suspend"):
            want = min(parallelism, completions - succeeded) - len(active)
            counted = self._job_failure_at.get(uid)
            if counted is None or counted[0] != failed:
                self._job_failure_at[uid] = (failed, now)
                counted = self._job_failure_at[uid]
            delay = self.options.scaled(min(10.0 * 2 ** (failed - 1), 360.0), 0.05) if failed else 0.0
            if want > 0 and now - counted[1] >= delay:
                job_labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                              "controller-uid": uid, "job-name": name}
                template = copy.deepcopy(spec.get("template") or {})
                for _ in range(want):
                    try:
                        pod = self._create_pod(template, job, f"{name}-", job_labels)
                    except ApiError:
                        break  # retried on the next pass
                    active.append(pod)
                    self._job_seen[uid].add(pod["metadata"]["uid"])
        if conds:
            status["conditions"] = conds
        for key, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[key] = value
            else:
                status.pop(key, None)
        status["ready"] = sum(1 for p in active if pod_is_ready(p))
        status["terminating"] = 0
        status["uncountedTerminatedPods"] = {}
        if job.get("status") != status:
            def write(obj: dict) -> None:
                obj["status"] = status
            self.store.mutate(JOBS, ns, name, write)

    def _fail_job(self, job: dict, conds: list, active: list, reason: str, message: str) -> tuple[list, list]:
        """Mark a Job Failed for `reason`, stop its running pods; returns (conditions, active pods)."""
        conds = merge_condition(conds, "Failed", "True", reason, message, probe_time=True)
        for pod in active:
            self._delete(PODS, job["metadata"]["namespace"], pod["metadata"]["name"])
        self._event(job, "Warning", reason, message, "job-controller")
        return conds, []

    @staticmethod
    def _job_age(status: dict) -> float:
        from datetime import datetime, timezone
        try:
            start = datetime.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except (KeyError, ValueError):
            return 0.0
        return (datetime.now(timezone.utc) - start).total_seconds()

    def _finish_ttl(self, job: dict, status: dict) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        done = condition(job, "Complete") or condition(job, "Failed") or {}
        from datetime import datetime, timezone
        try:
            at = datetime.strptime(done.get("lastTransitionTime", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return
        if (datetime.now(timezone.utc) - at).total_seconds() >= self.options.scaled(float(ttl)):
            self._delete(JOBS, job["metadata"]["namespace"], job["metadata"]["name"])

    # -- endpoints -----------------------------------------------------------------------------

    def sync_endpoints(self) -> None:
        """Endpoints for every Service with a selector: ready and not-ready pod addresses."""
        pods = self.cluster.snapshot(PODS)
        services = self.cluster.snapshot(SERVICES)
        wanted: set[tuple[str, str]] = set()
        for svc in services:
            selector = (svc.get("spec") or {}).get("selector")
            if not selector:
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            wanted.add((ns, name))
            # A Terminating pod (deletionTimestamp) leaves at once, ready or not: k8s.io/endpointslice
            # util/controller_utils.go ShouldPodBeInEndpoints (an EndpointSlice keeps it with
            # ready=false, terminating=true); the ALB controller then deregisters its target.
            members = [p for p in pods if p["metadata"]["namespace"] == ns and p["spec"].get("nodeName")
                       and pod_is_active(p) and all((p["metadata"].get("labels") or {}).get(k) == v
                                                    for k, v in selector.items())]
            ready, not_ready, ports = [], [], []
            for port in svc["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                resolved = None
                for pod in members:
                    resolved = _resolve_target_port(pod, target)
                    if resolved is not None:
                        break
                if resolved is not None:
                    entry = {"port": resolved, "protocol": port.get("protocol", "TCP")}
                    if port.get("name"):
                        entry["name"] = port["name"]
                    ports.append(entry)
            for pod in members:
                address = {"ip": "127.0.0.1", "nodeName": pod["spec"]["nodeName"],
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                                         "uid": pod["metadata"]["uid"]}}
                (ready if pod_is_ready(pod) else not_ready).append(address)
            subset: dict = {}
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": name, "namespace": ns, "labels": dict(svc["metadata"].get("labels") or {})},
                         "subsets": [{**subset, "ports": ports}] if subset and ports else []}
            existing = self.store.get(ENDPOINTS, ns, name)
            if existing is None:
                try:
                    self.store.create(ENDPOINTS, endpoints)
                except ApiError:
                    pass
            elif existing.get("subsets") != endpoints["subsets"] or \
                    existing["metadata"].get("labels") != endpoints["metadata"]["labels"]:
                def write(obj: dict) -> None:
                    obj["subsets"] = endpoints["subsets"]
                    obj["metadata"]["labels"] = endpoints["metadata"]["labels"]
                self.store.mutate(ENDPOINTS, ns, name, write)
        for ns, name in self._managed_endpoints - wanted:
            self._delete(ENDPOINTS, ns, name)
        self._managed_endpoints = wanted


DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def deletion_cost(pod: dict) -> int:
    """The pod's deletion cost annotation (an int32; unset or unparsable is 0, as
    pkg/controller/controller_utils.go getDeletionCostFromPodAnnotations treats it)."""
    try:
        return int(((pod["metadata"].get("annotations") or {}).get(DELETION_COST)) or 0)
    except ValueError:
        return 0


def pod_failure_action(policy: dict | None, pod: dict) -> str | None:
    """The action of the first podFailurePolicy rule a failed pod matches, as
    pkg/controller/job/pod_failure_policy.go does: onExitCodes against each terminated container
    (not restartable init containers) by `In`/`NotIn`, onPodConditions by type and status (default True)."""
    status = pod.get("status") or {}
    for rule in (policy or {}).get("rules") or []:
        codes = rule.get("onExitCodes")
        if codes:
            values = set(codes.get("values") or [])
            statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
            for cs in statuses:
                if codes.get("containerName") and cs.get("name") != codes["containerName"]:
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code is None or code == 0:
                    continue
                if (code in values) == (codes.get("operator", "In") == "In"):
                    return rule.get("action")
        for want in rule.get("onPodConditions") or []:
            if any(c.get("type") == want.get("type") and c.get("status") == want.get("status", "True")
                   for c in status.get("conditions") or []):
                return rule.get("action")
    return None


def _resolve_target_port(pod: dict, target) -> int | None:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


