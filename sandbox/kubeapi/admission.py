"""Admission: the chain of plugins every EKS API server runs on a create, one function each,
as kubernetes/kubernetes plugin/pkg/admission/ (namespace/lifecycle, serviceaccount,
storage/storageclass/setdefault). Each takes the resource, the object (mutating it if it is a
mutating plugin) and the registry, and raises ApiError to refuse. Also the ServiceAccount side's
controllers (pkg/controller/serviceaccount, the root-CA publisher) that fill a new namespace.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from .resources import Resource, by_key, by_kind
from .store import ApiError, WatchEvent

if TYPE_CHECKING:
    from .registry import Registry

NAMESPACES, SERVICE_ACCOUNTS, CONFIG_MAPS = by_key("namespaces"), by_key("serviceaccounts"), by_key("configmaps")
STORAGE_CLASSES = by_kind("storage.k8s.io/v1", "StorageClass")
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
# Kinds NamespaceLifecycle lets into a Terminating namespace (upstream: events; the controllers'
# pods are refused like anyone's).
_ALLOWED_WHILE_TERMINATING = {"Event"}


def _what(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _name(obj: dict) -> str | None:
    """The name a refusal gives: the generateName prefix before a name is generated
    (apiserver/pkg/admission/errors.go extractResourceName)."""
    meta = obj["metadata"]
    return meta.get("name") or meta.get("generateName")


def forbidden(res: Resource, name: str | None, reason: str, causes: list[dict] | None = None) -> ApiError:
    """403 as apimachinery's errors.NewForbidden words it."""
    what = _what(res)
    message = f'{what} "{name}" is forbidden: {reason}' if name else f"{what} is forbidden: {reason}"
    details = {"name": name or "", "group": res.group, "kind": res.plural}
    if causes:
        details["causes"] = causes
    return ApiError(403, "Forbidden", message, details)


def namespace_lifecycle(res: Resource, obj: dict, registry: Registry) -> None:
    """No create in a namespace that does not exist (404) or is being terminated (403)."""
    if not res.namespaced:
        return
    namespace = obj["metadata"]["namespace"]
    ns = registry.store.get(NAMESPACES, None, namespace)
    if ns is None:
        raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
    if ns["metadata"].get("deletionTimestamp") and res.kind not in _ALLOWED_WHILE_TERMINATING:
        raise forbidden(res, _name(obj),
                        f"unable to create new content in namespace {namespace} because it is being terminated",
                        [{"reason": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated",
                          "field": "metadata.namespace"}])


def service_account(res: Resource, obj: dict, registry: Registry) -> None:
    """A pod runs as an existing ServiceAccount ("default" unless named) and gets its token
    projected, unless the pod or the ServiceAccount turns automounting off."""
    if res.kind != "Pod":
        return
    spec = obj.setdefault("spec", {})
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
    spec["serviceAccount"] = spec["serviceAccountName"]  # the deprecated alias, kept equal as upstream
    namespace, name = obj["metadata"]["namespace"], spec["serviceAccountName"]
    account = registry.store.get(SERVICE_ACCOUNTS, namespace, name)
    if account is None:
        raise forbidden(res, _name(obj), f"error looking up service account {namespace}/{name}: "
                        f'serviceaccount "{name}" not found')
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = account.get("automountServiceAccountToken", True)
    if automount is False:
        return
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    if any(m.get("mountPath") == TOKEN_MOUNT_PATH for c in containers for m in c.get("volumeMounts") or []):
        return
    volume = f"kube-api-access-{secrets.token_hex(3)[:5]}"
    spec.setdefault("volumes", []).append({"name": volume, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
    for container in containers:
        container.setdefault("volumeMounts", []).append({"name": volume, "readOnly": True,
                                                         "mountPath": TOKEN_MOUNT_PATH})


def default_storage_class(res: Resource, obj: dict, registry: Registry) -> None:
    """A PVC that names no class (the key absent, not "") gets the default one; with several
    defaults the newest wins (upstream since 1.26)."""
    if res.kind != "PersistentVolumeClaim" or "storageClassName" in (obj.get("spec") or {}):
        return
    defaults = [sc for sc in registry.store.list(STORAGE_CLASSES)
                if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if defaults:
        newest = max(defaults, key=lambda sc: (sc["metadata"].get("creationTimestamp", ""), sc["metadata"]["name"]))
        obj.setdefault("spec", {})["storageClassName"] = newest["metadata"]["name"]


# Run in this order on every create through the API, the controllers' pods included.
CREATE_CHAIN = (namespace_lifecycle, service_account, default_storage_class)


def admit_create(res: Resource, obj: dict, registry: Registry) -> None:
    for plugin in CREATE_CHAIN:
        plugin(res, obj, registry)


def namespace_defaults_controller(registry: Registry, root_ca_pem: bytes):
    """A store listener: each new namespace gets its "default" ServiceAccount (the ServiceAccount
    controller) and the kube-root-ca.crt ConfigMap with the cluster CA (the root-CA publisher)."""
    def on_event(event: WatchEvent) -> None:
        if event.resource_key != NAMESPACES.key or event.type != "ADDED":
            return
        namespace = event.object["metadata"]["name"]
        for res, obj in ((SERVICE_ACCOUNTS, {"metadata": {"name": "default", "namespace": namespace}}),
                         (CONFIG_MAPS, {"metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                                                     "annotations": {"kubernetes.io/description": (
                                                         "Contains a CA bundle that can be used to verify the "
                                                         "kube-apiserver when using internal endpoints such as the "
                                                         "internal service IP or kubernetes.default.svc. No other "
                                                         "usage is guaranteed across distributions of Kubernetes "
                                                         "clusters.")}},
                                        "data": {"ca.crt": root_ca_pem.decode()}})):
            if registry.store.get(res, namespace, obj["metadata"]["name"]) is None:
                registry.store.create(res, obj)
    return on_event
