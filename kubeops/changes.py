"""Deciding whether an object would change, and showing how: the planning half of apply.

The server decides, not us: when the live object may differ we ask for a server-side apply
with dryRun=All and compare its answer with the live object, so defaults, quantity formats and
list merging are the server's own (the "dry run says changed but apply changes nothing" class of
bugs other tools have). A cheap first test avoids even that request on a no-op rerun: the live
object already holds every field we apply, and carries the hash of exactly this manifest.

Secret values never reach a diff or a log: they are replaced by a short digest, so a changed
secret still shows as a change.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from .client import Kube, KubeApiError
from .kinds import Ref

APPLIED_HASH = "qwen3-speech.io/applied-hash"

# Fields the server owns; never part of a comparison or a diff.
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation",
                   "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration",
                      "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
                      "volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner",
                      "deprecated.daemonset.template.generation", APPLIED_HASH)


@dataclass
class Plan:
    """What applying one manifest would do."""

    ref: Ref
    manifest: dict
    action: str  # "create", "update" or "unchanged"
    live: dict | None = None
    predicted: dict | None = None
    diff: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.action != "unchanged"


def manifest_hash(manifest: dict) -> str:
    body = copy.deepcopy(manifest)
    (body.get("metadata") or {}).get("annotations", {}).pop(APPLIED_HASH, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def with_applied_hash(manifest: dict) -> dict:
    """The manifest as it is sent: annotated with its own hash, the marker of a finished apply."""
    stamped = copy.deepcopy(manifest)
    stamped.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_HASH] = manifest_hash(manifest)
    return stamped


# Kinds whose live objects are read with one list per namespace when one apply has several of
# them (files/deployer-rbac.yaml grants list on each): the namespace step's three ServiceAccounts
# and four NetworkPolicies cost one GET each on every run. Never a Secret: a list would read every
# Secret of the namespace.
LISTED_KINDS = {"ConfigMap", "Service", "ServiceAccount", "PersistentVolumeClaim", "Deployment",
                "NetworkPolicy", "Ingress"}


def live_objects(kube: Kube, refs: list[Ref]) -> dict[Ref, dict | None]:
    """The live object of each ref (None when absent): one GET each, or one list for several
    objects of a LISTED_KINDS kind in one namespace."""
    groups: dict[tuple[str, str, str | None], list[Ref]] = {}
    for ref in refs:
        groups.setdefault((ref.api_version, ref.kind, ref.namespace), []).append(ref)
    live: dict[Ref, dict | None] = {}
    for (api_version, kind, namespace), members in groups.items():
        if len(members) < 2 or kind not in LISTED_KINDS or not namespace:
            live.update((ref, kube.get(ref)) for ref in members)
            continue
        by_name = {}
        for item in kube.list(api_version, kind, namespace):
            # A list's items carry no apiVersion and kind (the list says them once): put them back,
            # so an item compares and is judged ready like the object a GET returns.
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            by_name[item["metadata"]["name"]] = item
        live.update((ref, by_name.get(ref.name)) for ref in members)
    return live


def plan_all(kube: Kube, manifests: list[dict], *, field_manager: str) -> list[Plan]:
    """Plan a server-side apply of each manifest (already stamped with its hash), reading the live
    objects together (live_objects)."""
    live = live_objects(kube, [Ref.of(m) for m in manifests])
    return [plan_apply(kube, m, field_manager=field_manager, live=live[Ref.of(m)], live_known=True) for m in manifests]


def plan_apply(kube: Kube, manifest: dict, *, field_manager: str, live: dict | None = None,
               live_known: bool = False) -> Plan:
    """Plan a server-side apply of `manifest` (already stamped with its hash)."""
    ref = Ref.of(manifest)
    if not live_known:
        live = kube.get(ref)
    if live is None:
        try:
            predicted = kube.apply(manifest, field_manager=field_manager, dry_run=True)
        except KubeApiError as err:
            # The namespace is made by an earlier step of this same run: the server cannot dry-run
            # into it yet, so show the manifest as it will be sent.
            if err.status == 404 and ref.namespace:
                predicted = manifest
            else:
                raise
        return Plan(ref, manifest, "create", None, predicted, render_diff(None, predicted, ref))
    wanted_hash = manifest["metadata"]["annotations"][APPLIED_HASH]
    have_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)
    if have_hash == wanted_hash and contains(live, manifest):
        return Plan(ref, manifest, "unchanged", live, live)
    predicted = kube.apply(manifest, field_manager=field_manager, dry_run=True)
    if comparable(predicted) == comparable(live):
        # Only our hash annotation or field ownership would move: nothing an operator would see.
        if have_hash == wanted_hash:
            return Plan(ref, manifest, "unchanged", live, predicted)
        return Plan(ref, manifest, "update", live, predicted, [])
    return Plan(ref, manifest, "update", live, predicted, render_diff(live, predicted, ref))


def contains(live: Any, wanted: Any) -> bool:
    """True when every field of `wanted` is in `live` with the same value (lists by position or name)."""
    if isinstance(wanted, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and contains(live[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(live, list):
            return False
        if wanted and all(isinstance(w, dict) and "name" in w for w in wanted):
            # Lists merged by name (containers, env, volumes): other managers may own more items.
            # An item we stopped applying changes the manifest's hash, so it is caught there.
            by_name = {item.get("name"): item for item in live if isinstance(item, dict)}
            return all(w["name"] in by_name and contains(by_name[w["name"]], w) for w in wanted)
        return len(live) == len(wanted) and all(contains(lv, w) for lv, w in zip(live, wanted))
    if isinstance(wanted, (int, float)) and isinstance(live, str) or isinstance(wanted, str) and isinstance(live, (int, float)):
        return str(wanted) == str(live)
    return live == wanted


def comparable(obj: dict | None) -> dict | None:
    """The object without what the server owns (managedFields, resourceVersion, status, ...)."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if "annotations" in meta and not annotations:
        meta.pop("annotations")
    return mask_secrets(out)


def mask_secrets(obj: dict) -> dict:
    """Secret data as digests: a diff can say a value changed without saying what it is."""
    if obj.get("kind") != "Secret":
        return obj
    out = copy.deepcopy(obj)
    for section in ("data", "stringData"):
        for key, value in (out.get(section) or {}).items():
            out[section][key] = "<secret sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:8] + ">"
    return out


def render_diff(live: dict | None, predicted: dict | None, ref: Ref) -> list[str]:
    """A unified YAML diff of only what the server says would change."""
    before = _yaml_lines(comparable(live))
    after = _yaml_lines(comparable(predicted))
    label = str(ref)
    return list(difflib.unified_diff(before, after, fromfile=f"live: {label}" if live else "(absent)",
                                     tofile=f"wanted: {label}", lineterm="", n=3))


class _DiffDumper(yaml.SafeDumper):
    """Multi-line strings (config files, scripts in ConfigMaps) as literal blocks, line by line,
    so their diff shows the lines that change instead of one escaped string."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_DiffDumper.add_representer(str, _represent_str)


def _yaml_lines(obj: dict | None) -> list[str]:
    if obj is None:
        return []
    return yaml.dump(obj, Dumper=_DiffDumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1000).splitlines()
