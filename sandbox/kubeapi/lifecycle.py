"""How objects leave the store: finalizers, propagation policies and namespace termination.

As upstream's generic store (k8s.io/apiserver pkg/registry/generic/registry/store.go `Delete`,
`updateForGracefulDeletionAndFinalizers`), the garbage collector (pkg/controller/garbagecollector)
and the namespace controller (pkg/controller/namespace/deletion), but done synchronously inside
the request: a delete that nothing holds back finishes before the answer, one held by finalizers
marks the object (deletionTimestamp) and it goes when a later write clears the last finalizer.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .resources import RESOURCES, Resource, by_key
from .store import ApiError, now_iso

if TYPE_CHECKING:
    from .registry import Registry

NAMESPACES = by_key("namespaces")
FOREGROUND = "foregroundDeletion"  # the GC's finalizer for Foreground propagation
ORPHAN = "orphan"  # the GC's finalizer for Orphan propagation
NAMESPACE_FINALIZER = "kubernetes"  # spec.finalizers of a Namespace, removed by the namespace controller


def is_terminating(obj: dict | None) -> bool:
    return bool(obj and obj["metadata"].get("deletionTimestamp"))


def dry_run_of(options: dict, dry_run: bool) -> bool:
    """dryRun in the query or in the DeleteOptions body (["All"]), as upstream reads both."""
    body = options.get("dryRun")
    if body not in (None, [], ["All"]):
        raise ApiError(400, "BadRequest", f'invalid dryRun value {body!r} in DeleteOptions: the only supported value '
                       'is ["All"]')
    return dry_run or body == ["All"]


def keep_deletion_marks(new: dict, live: dict) -> None:
    """An update cannot unset or move deletionTimestamp, nor add a finalizer once deletion began
    (apimachinery pkg/api/validation/objectmeta.go ValidateObjectMetaUpdate)."""
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        if key in live["metadata"]:
            new["metadata"][key] = live["metadata"][key]
    if is_terminating(live):
        added = set(new["metadata"].get("finalizers") or []) - set(live["metadata"].get("finalizers") or [])
        if added:
            name = live["metadata"]["name"]
            raise ApiError(422, "Invalid", f'{live["kind"]} "{name}" is invalid: metadata.finalizers: Forbidden: no new '
                           f"finalizers can be added if the object is being deleted, found new finalizers "
                           f"{sorted(added)!r}", {"name": name, "kind": live["kind"], "causes": [
                               {"reason": "FieldValueForbidden", "field": "metadata.finalizers",
                                "message": "Forbidden: no new finalizers can be added if the object is being deleted"}]})


def delete(registry: Registry, res: Resource, live: dict, options: dict, dry_run: bool) -> tuple[dict, bool]:
    """Delete `live` as `options` (DeleteOptions) say; returns (the object as now stored or as removed,
    whether it is gone). Called with the store's lock held."""
    meta = live["metadata"]
    policy = options.get("propagationPolicy") or _default_policy(res, options)
    if res.kind == "Namespace":
        return _terminate_namespace(registry, live, dry_run)
    grace = _pod_grace_seconds(res, live, options)
    if grace and is_terminating(live):
        return live, False  # already terminating: a second delete changes nothing (only 0 forces it)
    if grace:
        # Graceful pod deletion (pkg/registry/core/pod/strategy.go CheckGracefulDelete): the pod is
        # marked Terminating and the kubelet (sandbox/cluster/kubelet.py) removes it once stopped.
        marked = copy.deepcopy(live)
        marked["metadata"]["deletionTimestamp"] = _in_seconds(grace)
        marked["metadata"]["deletionGracePeriodSeconds"] = grace
        return (marked if dry_run else registry.store.update(res, marked)), False
    finalizers = list(meta.get("finalizers") or [])
    if policy == "Foreground" and _dependants(registry, live) and FOREGROUND not in finalizers:
        finalizers.append(FOREGROUND)
    if finalizers:
        marked = copy.deepcopy(live)
        marked["metadata"]["finalizers"] = finalizers
        marked["metadata"].setdefault("deletionTimestamp", now_iso())
        marked["metadata"].setdefault("deletionGracePeriodSeconds", 0)
        if dry_run:
            return marked, False
        if policy == "Orphan":
            _orphan_dependants(registry, live)
        stored = registry.store.update(res, marked)
        if FOREGROUND in finalizers and policy == "Foreground":
            # The GC deletes the dependants first, then drops its finalizer from the owner.
            for dep_res, dep in _dependants(registry, live):
                if not is_terminating(dep):
                    delete(registry, dep_res, dep, {"propagationPolicy": "Foreground"}, False)
            stored = _release_foreground(registry, res, stored)
        return stored, stored is None
    if dry_run:
        return registry.store.delete(res, meta.get("namespace"), meta["name"], dry_run=True), True
    if policy == "Orphan":
        _orphan_dependants(registry, live)
    gone = registry.store.delete(res, meta.get("namespace"), meta["name"])
    if policy in ("Background", "Foreground"):
        _collect_dependants(registry, gone)
    after_removal(registry, gone)
    return gone, True


def finish_if_released(registry: Registry, res: Resource, stored: dict) -> dict | None:
    """After a write: an object being deleted whose last finalizer was just cleared goes now.
    Returns the stored object, or None once removed."""
    meta = stored["metadata"]
    if not is_terminating(stored) or meta.get("finalizers"):
        return stored
    if res.kind == "Namespace":
        if (stored.get("spec") or {}).get("finalizers") or _namespace_content(registry, meta["name"]):
            return stored
    gone = registry.store.delete(res, meta.get("namespace"), meta["name"])
    _collect_dependants(registry, gone)
    after_removal(registry, gone)
    return None


def after_removal(registry: Registry, gone: dict) -> None:
    """An owner in Foreground deletion goes when its last blocking dependant went (the GC); a
    Terminating namespace when its last object went (the namespace controller's last step)."""
    namespace = gone["metadata"].get("namespace")
    for ref in gone["metadata"].get("ownerReferences") or []:
        for res in RESOURCES:
            if res.kind == ref.get("kind") and res.api_version == ref.get("apiVersion"):
                owner = registry.store.get(res, namespace if res.namespaced else None, ref.get("name", ""))
                if owner and owner["metadata"]["uid"] == ref.get("uid") and is_terminating(owner):
                    _release_foreground(registry, res, owner)
    if not namespace:
        return
    ns = registry.store.get(NAMESPACES, None, namespace)
    if is_terminating(ns) and not _namespace_content(registry, namespace):
        _remove_namespace(registry, ns)


def _in_seconds(seconds: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_grace_seconds(res: Resource, pod: dict, options: dict) -> int:
    """0 (delete now) unless a pod runs on a node: unscheduled and finished pods go at once, as upstream."""
    if res.kind != "Pod" or not (pod.get("spec") or {}).get("nodeName") \
            or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return max(int(grace), 0)


def _default_policy(res: Resource, options: dict) -> str:
    # orphanDependents (deprecated) still wins when set; upstream's default is Background for the
    # kinds we serve (ReplicationController/extensions used Orphan, not served here).
    if options.get("orphanDependents") is True:
        return "Orphan"
    return "Background"


def _terminate_namespace(registry: Registry, live: dict, dry_run: bool) -> tuple[dict, bool]:
    name = live["metadata"]["name"]
    marked = copy.deepcopy(live)
    marked["metadata"].setdefault("deletionTimestamp", now_iso())
    marked.setdefault("spec", {})["finalizers"] = [NAMESPACE_FINALIZER]
    marked["status"] = {**(marked.get("status") or {}), "phase": "Terminating"}
    if dry_run:
        return marked, False
    if not is_terminating(live):
        marked = registry.store.update(NAMESPACES, marked)
    # The namespace controller: delete everything in it (each object as a client delete would).
    for res, obj in _namespace_content(registry, name):
        if not is_terminating(obj):
            delete(registry, res, obj, {"propagationPolicy": "Background"}, False)
    ns = registry.store.get(NAMESPACES, None, name)
    if ns is not None and not _namespace_content(registry, name):
        return _remove_namespace(registry, ns), True
    return ns or marked, ns is None


def _remove_namespace(registry: Registry, ns: dict) -> dict:
    # spec.finalizers ["kubernetes"] is cleared by the controller; metadata.finalizers still hold it.
    if ns["metadata"].get("finalizers"):
        ns = copy.deepcopy(ns)
        ns["spec"]["finalizers"] = []
        return registry.store.update(NAMESPACES, ns)
    return registry.store.delete(NAMESPACES, None, ns["metadata"]["name"])


def _namespace_content(registry: Registry, namespace: str) -> list[tuple[Resource, dict]]:
    return [(res, obj) for res in RESOURCES if res.namespaced for obj in registry.store.list(res, namespace)]


def _dependants(registry: Registry, owner: dict) -> list[tuple[Resource, dict]]:
    uid, namespace = owner["metadata"]["uid"], owner["metadata"].get("namespace")
    return [(res, obj) for res in RESOURCES for obj in registry.store.list(res, namespace if res.namespaced else None)
            if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])]


def _collect_dependants(registry: Registry, owner: dict) -> None:
    """The garbage collector: a dependant whose owners are all gone is deleted (Background)."""
    for res, dep in _dependants(registry, owner):
        refs = dep["metadata"].get("ownerReferences") or []
        others = [r for r in refs if r.get("uid") != owner["metadata"]["uid"]]
        if not others and not is_terminating(dep):
            delete(registry, res, dep, {"propagationPolicy": "Background"}, False)


def _orphan_dependants(registry: Registry, owner: dict) -> None:
    uid = owner["metadata"]["uid"]
    for res, dep in _dependants(registry, owner):
        def drop(o: dict) -> None:
            kept = [r for r in o["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if kept:
                o["metadata"]["ownerReferences"] = kept
            else:  # an empty list is omitted, as upstream serialises it
                del o["metadata"]["ownerReferences"]
        registry.store.mutate(res, dep["metadata"].get("namespace"), dep["metadata"]["name"], drop)


def _release_foreground(registry: Registry, res: Resource, stored: dict) -> dict | None:
    """Drop foregroundDeletion once no dependant with blockOwnerDeletion is left."""
    if FOREGROUND not in (stored["metadata"].get("finalizers") or []):
        return stored
    uid = stored["metadata"]["uid"]
    if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for _, dep in _dependants(registry, stored)
           for r in dep["metadata"].get("ownerReferences") or []):
        return stored
    new = copy.deepcopy(stored)
    new["metadata"]["finalizers"] = [f for f in new["metadata"]["finalizers"] if f != FOREGROUND]
    return finish_if_released(registry, res, registry.store.update(res, new))
