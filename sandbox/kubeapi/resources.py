"""The kinds the sandbox API server serves, as discovery describes them.

One table, used by the HTTP router (paths), discovery documents and the store (keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = field(default=())
    # The add-on whose CRDs serve this kind when it is not on every EKS cluster (e.g.
    # "prometheus-operator"): served only by an API server started with that add-on.
    addon: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Store key: plural.group, as Kubernetes names resources (pods, deployments.apps)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), subresources=("status",)),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Resource("", "v1", "Secret", "secrets", True),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Resource("", "v1", "Service", "services", True, ("svc",), subresources=("status", "proxy")),
    Resource("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    Resource("", "v1", "Pod", "pods", True, ("po",), subresources=("status", "log", "proxy", "portforward")),
    Resource("", "v1", "Node", "nodes", False, ("no",), subresources=("status", "proxy")),
    Resource("", "v1", "Event", "events", True, ("ev",)),
    Resource("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), subresources=("status",)),
    Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), subresources=("status",)),
    Resource("apps", "v1", "Deployment", "deployments", True, ("deploy",), subresources=("status", "scale")),
    Resource("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), subresources=("status", "scale")),
    Resource("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), subresources=("status",)),
    Resource("batch", "v1", "Job", "jobs", True, subresources=("status",)),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Resource("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",)),
    Resource("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False),
    Resource("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), subresources=("status",)),
    Resource("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    Resource("karpenter.sh", "v1", "NodePool", "nodepools", False, subresources=("status",)),
    # The device-plugin owners of sandbox/cluster/device_plugin.py: the GPU Operator's ClusterPolicy,
    # and Karpenter's EC2NodeClass (a Bottlerocket node's sharing lives in its user data).
    Resource("nvidia.com", "v1", "ClusterPolicy", "clusterpolicies", False, subresources=("status",)),
    Resource("karpenter.k8s.aws", "v1", "EC2NodeClass", "ec2nodeclasses", False, subresources=("status",)),
    # The Prometheus Operator's CRDs (prometheus-operator example/prometheus-operator-crd): not on EKS
    # by default, so only with the sandbox's prometheus_operator option; only stored, nothing scrapes.
    Resource("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", True, ("smon",),
             addon="prometheus-operator"),
    Resource("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True, ("pmon",), addon="prometheus-operator"),
    # Kinds every EKS cluster serves that the sandbox only stores (no controller acts on them), so that
    # discovery, `kubectl get`, `api-resources` and apply of such objects answer as on EKS.
    Resource("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), subresources=("status", "scale")),
    Resource("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    Resource("batch", "v1", "CronJob", "cronjobs", True, ("cj",), subresources=("status",)),
    Resource("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",),
             subresources=("status",)),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), subresources=("status",)),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    Resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
             ("crd", "crds"), subresources=("status",)),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    Resource("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",)),
    Resource("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), subresources=("status",)),
    Resource("", "v1", "LimitRange", "limitranges", True, ("limits",)),
    # Answered, never stored (sandbox/kubeapi/rbac.py): what `kubectl auth can-i` and `whoami` send.
    Resource("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
             verbs=("create",)),
    Resource("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
             verbs=("create",)),
    Resource("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, verbs=("create",)),
)

BY_KEY = {r.key: r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def served(res: Resource, addons: frozenset[str]) -> bool:
    """Whether an API server with these add-ons installed serves `res`."""
    return not res.addon or res.addon in addons


def by_kind(api_version: str, kind: str) -> Resource:
    return BY_KIND[(api_version, kind)]


def by_key(key: str) -> Resource:
    return BY_KEY[key]
