"""Discovery documents (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`).

Built once from the kind table; the shapes are the real server's, so kubectl-style discovery
and the Python client's DynamicClient find every kind, its verbs and its subresources.
"""

from __future__ import annotations

import functools

from .resources import RESOURCES, Resource, served
from .schema import KUBERNETES_MINOR

GIT_VERSION = f"v1.{KUBERNETES_MINOR}.4-eks-0a8bbe5"

VERSION_INFO = {
    "major": "1",
    "minor": f"{KUBERNETES_MINOR}+",  # EKS reports e.g. "31+"
    "gitVersion": GIT_VERSION,
    "gitCommit": "0a8bbe5b9b7dc5a5c4b3c3a0d2a1f9e8e7d6c5b4",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T19:44:23Z",
    "goVersion": "go1.22.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Subresources: (kind, group, version, verbs) of what the subresource serves.
_SUBRESOURCE_SHAPES = {
    "status": (None, None, None, ("get", "patch", "update")),
    "scale": ("Scale", "autoscaling", "v1", ("get", "patch", "update")),
    "log": ("Pod", None, None, ("get",)),
    "proxy": (None, None, None, ("create", "delete", "get", "patch", "update")),
    "portforward": ("PodPortForwardOptions", None, None, ("create", "get")),
}
_PROXY_KINDS = {"Pod": "PodProxyOptions", "Service": "ServiceProxyOptions", "Node": "NodeProxyOptions"}


def group_versions(addons: frozenset[str] = frozenset()) -> dict[str, list[Resource]]:
    """'v1' / 'apps/v1' -> resources served there (add-on kinds only when their add-on is installed)."""
    out: dict[str, list[Resource]] = {}
    for res in (r for r in RESOURCES if served(r, addons)):
        out.setdefault(res.api_version, []).append(res)
    return out


def _singular(res: Resource) -> str:
    return res.kind.lower()


def _resource_entries(res: Resource) -> list[dict]:
    verbs = list(res.verbs)
    if res.kind == "Namespace":
        verbs = [v for v in verbs if v != "deletecollection"]
    entry = {"name": res.plural, "singularName": _singular(res), "namespaced": res.namespaced, "kind": res.kind,
             "verbs": verbs, "storageVersionHash": ""}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "CronJob", "Pod", "Service",
                    "HorizontalPodAutoscaler"):
        entry["categories"] = ["all"]
    entries = [entry]
    for sub in res.subresources:
        kind, group, version, sub_verbs = _SUBRESOURCE_SHAPES[sub]
        if sub == "proxy":
            kind = _PROXY_KINDS.get(res.kind, res.kind)
        sub_entry = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                     "kind": kind or res.kind, "verbs": list(sub_verbs)}
        if group:
            sub_entry["group"], sub_entry["version"] = group, version
        entries.append(sub_entry)
    return entries


@functools.lru_cache(maxsize=None)
def resource_list(api_version: str, addons: frozenset[str] = frozenset()) -> dict | None:
    """APIResourceList of one group version; None when the sandbox serves no such group version."""
    resources = group_versions(addons).get(api_version)
    if resources is None:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version,
            "resources": [e for res in resources for e in _resource_entries(res)]}


def api_versions(server_address: str) -> dict:
    """`/api`: the core group's versions."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


@functools.lru_cache(maxsize=None)
def api_group_list(addons: frozenset[str] = frozenset()) -> dict:
    """`/apis`: every named group, one version each (their preferred one)."""
    groups: dict[str, list[str]] = {}
    for res in (r for r in RESOURCES if served(r, addons)):
        if res.group and res.version not in groups.setdefault(res.group, []):
            groups[res.group].append(res.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": name,
         "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
         "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]}}
        for name, versions in groups.items()]}


def api_group(name: str, addons: frozenset[str] = frozenset()) -> dict | None:
    """`/apis/<group>`: one APIGroup."""
    group = next((g for g in api_group_list(addons)["groups"] if g["name"] == name), None)
    return {"kind": "APIGroup", "apiVersion": "v1", **group} if group else None

