"""Small pieces every controller uses: resource handles, quantities, hashes, conditions, pods."""

from __future__ import annotations

import hashlib
import json
import random
import re
from fractions import Fraction
from typing import Any, Iterable

from sandbox.kubeapi.resources import by_key
from sandbox.kubeapi.store import now_iso

NAMESPACES = by_key("namespaces")
CONFIGMAPS = by_key("configmaps")
SECRETS = by_key("secrets")
SERVICEACCOUNTS = by_key("serviceaccounts")
SERVICES = by_key("services")
ENDPOINTS = by_key("endpoints")
PODS = by_key("pods")
NODES = by_key("nodes")
EVENTS = by_key("events")
PVS = by_key("persistentvolumes")
PVCS = by_key("persistentvolumeclaims")
DEPLOYMENTS = by_key("deployments.apps")
REPLICASETS = by_key("replicasets.apps")
DAEMONSETS = by_key("daemonsets.apps")
JOBS = by_key("jobs.batch")
STORAGECLASSES = by_key("storageclasses.storage.k8s.io")
CSIDRIVERS = by_key("csidrivers.storage.k8s.io")
INGRESSES = by_key("ingresses.networking.k8s.io")
INGRESSCLASSES = by_key("ingressclasses.networking.k8s.io")
NETWORKPOLICIES = by_key("networkpolicies.networking.k8s.io")
NODEPOOLS = by_key("nodepools.karpenter.sh")

# now_iso is re-exported for the other modules of this package.

# ---------------------------------------------------------------------------------------------
# Quantities (resource.Quantity): "500m", "6Gi", "1", "1e3", "0.5"

_SUFFIXES = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity as an exact number; raises ValueError naming the value."""
    if isinstance(value, bool):
        raise ValueError(f"quantity {value!r} is not a number")
    if isinstance(value, (int, float)):
        return Fraction(str(value))
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"quantity {value!r} is not a Kubernetes quantity (e.g. 500m, 1, 6Gi)")
    number, exponent, suffix = match.groups()
    result = Fraction(number) * _SUFFIXES[suffix or ""]
    if exponent:
        result *= Fraction(10) ** int(exponent)
    return result


def quantity_or_zero(value: Any) -> Fraction:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError, ZeroDivisionError):
        return Fraction(0)


# ---------------------------------------------------------------------------------------------
# Names and hashes

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_SAFE_ALPHABET) for _ in range(length))


def template_hash(template: Any) -> str:
    """A short stable hash of a pod template, spelled like pod-template-hash values."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in digest[:10])


def hex_id(length: int) -> str:
    return "".join(random.choice("0123456789abcdef") for _ in range(length))


# ---------------------------------------------------------------------------------------------
# Owner references

def owner_reference(owner: dict, controller: bool = True) -> dict:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def controller_of(obj: dict) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def is_deleting(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


# ---------------------------------------------------------------------------------------------
# Conditions

def condition(obj: dict, kind: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def merge_condition(conditions: list[dict] | None, kind: str, status: str, reason: str | None = None,
                    message: str | None = None, *, update_time: bool = False, probe_time: bool = False) -> list[dict]:
    """Set one condition, keeping lastTransitionTime when the status did not change.

    update_time adds lastUpdateTime (Deployments), moved only when reason or message change, so
    writing the same condition twice changes nothing (and wakes nobody).
    """
    now = now_iso()
    out = [dict(c) for c in conditions or []]
    old = next((c for c in out if c.get("type") == kind), None)
    new: dict[str, Any] = {"type": kind, "status": status}
    if probe_time:
        new["lastProbeTime"] = None
    if update_time:
        same = old is not None and old.get("reason") == reason and old.get("message") == message \
            and old.get("status") == status
        new["lastUpdateTime"] = old.get("lastUpdateTime", now) if same else now
    new["lastTransitionTime"] = old.get("lastTransitionTime", now) if old and old.get("status") == status else now
    if reason is not None:
        new["reason"] = reason
    if message is not None:
        new["message"] = message
    if old is None:
        out.append(new)
    else:
        out[out.index(old)] = new
    return out


# ---------------------------------------------------------------------------------------------
# Pods

def pod_phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def pod_is_terminal(pod: dict) -> bool:
    return pod_phase(pod) in ("Succeeded", "Failed")


def pod_is_active(pod: dict) -> bool:
    """Counts toward a controller's replicas: not finished, not being deleted."""
    return not pod_is_terminal(pod) and not is_deleting(pod)


def pod_is_ready(pod: dict) -> bool:
    cond = condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True") and pod_phase(pod) == "Running"


def container_requests(container: dict) -> dict[str, Fraction]:
    """Requests as the API server defaults them: a limit without a request is the request."""
    resources = container.get("resources") or {}
    out = {name: quantity_or_zero(v) for name, v in (resources.get("limits") or {}).items()}
    out.update({name: quantity_or_zero(v) for name, v in (resources.get("requests") or {}).items()})
    return out


def pod_requests(spec: dict) -> dict[str, Fraction]:
    """Effective pod requests: sum over containers, at least the largest init container."""
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for name, value in container_requests(container).items():
            total[name] = total.get(name, Fraction(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in container_requests(container).items():
            if value > total.get(name, Fraction(0)):
                total[name] = value
    return total


def node_internal_ip(node: dict) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return address.get("address", "")
    return ""


def tolerates(tolerations: Iterable[dict] | None, taint: dict) -> bool:
    for tol in tolerations or []:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        op = tol.get("operator") or "Equal"
        if op == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated_taint(tolerations: Iterable[dict] | None, node: dict,
                      effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> dict | None:
    tolerations = list(tolerations or [])
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in effects and not tolerates(tolerations, taint):
            return taint
    return None


def _node_requirement_matches(expr: dict, labels: dict, fields: dict | None = None) -> bool:
    source = fields if fields is not None else labels
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    have = source.get(key)
    if op == "In":
        return have is not None and have in values
    if op == "NotIn":
        return have is None or have not in values
    if op == "Exists":
        return key in source
    if op == "DoesNotExist":
        return key not in source
    if op in ("Gt", "Lt"):
        try:
            left, right = int(have), int(values[0])
        except (TypeError, ValueError, IndexError):
            return False
        return left > right if op == "Gt" else left < right
    return False


def node_selector_term_matches(term: dict, node: dict) -> bool:
    labels = node["metadata"].get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    if not term.get("matchExpressions") and not term.get("matchFields"):
        return False  # an empty term matches nothing (NodeSelectorTerm semantics)
    return (all(_node_requirement_matches(e, labels) for e in term.get("matchExpressions") or [])
            and all(_node_requirement_matches(e, labels, fields) for e in term.get("matchFields") or []))


def node_matches_pod_selectors(spec: dict, node: dict) -> bool:
    """nodeSelector and required node affinity."""
    labels = node["metadata"].get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms:
        return any(node_selector_term_matches(t, node) for t in terms)
    return True
