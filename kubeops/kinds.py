"""The Kubernetes kinds the playbook manages or reads, and how to address them.

A static table instead of API discovery: discovery costs a round trip per group on every run
(the reason `kubectl` keeps a discovery cache), and this playbook only ever touches these kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    # (apiVersion, kind): (plural, namespaced)
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Node"): ("nodes", False),
    ("v1", "Event"): ("events", True),
    ("v1", "PersistentVolume"): ("persistentvolumes", False),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "ReplicaSet"): ("replicasets", True),
    ("apps/v1", "DaemonSet"): ("daemonsets", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
    ("storage.k8s.io/v1", "CSIDriver"): ("csidrivers", False),
    ("networking.k8s.io/v1", "Ingress"): ("ingresses", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("networking.k8s.io/v1", "IngressClass"): ("ingressclasses", False),
    ("karpenter.sh/v1", "NodePool"): ("nodepools", False),
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): ("ec2nodeclasses", False),
    ("nvidia.com/v1", "ClusterPolicy"): ("clusterpolicies", False),
    ("coordination.k8s.io/v1", "Lease"): ("leases", True),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("servicemonitors", True),
}


@dataclass(frozen=True)
class Ref:
    """Which object: enough to build its URL and to name it in a message."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> "Ref":
        meta = obj.get("metadata") or {}
        return cls(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def path(self) -> str:
        return collection_path(self.api_version, self.kind, self.namespace) + "/" + self.name


def collection_path(api_version: str, kind: str, namespace: str | None = None) -> str:
    try:
        plural, namespaced = KINDS[(api_version, kind)]
    except KeyError:
        known = ", ".join(f"{k} ({v})" for v, k in sorted(KINDS))
        raise ValueError(f"kind {kind!r} of apiVersion {api_version!r} is not one this playbook manages; known: {known}") from None
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespaced and namespace:
        return f"{base}/namespaces/{namespace}/{plural}"
    return f"{base}/{plural}"
