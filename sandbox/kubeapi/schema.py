"""The Kubernetes OpenAPI schemas (as JSON Schema, shipped by `kubernetes-validate`) and what they say
about merging.

Two users: validation (is this object well formed, strictly: unknown fields rejected) and the
merge logic of server-side apply and strategic merge patch, which takes list and map semantics
from the same `x-kubernetes-*` annotations the real API server reads (`x-kubernetes-list-type`,
`x-kubernetes-list-map-keys`, `x-kubernetes-map-type`, `x-kubernetes-patch-merge-key`,
`x-kubernetes-patch-strategy`). Everything is loaded once per process and cached.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .resources import Resource

# The schema set matching the Kubernetes version the sandbox reports in /version.
KUBERNETES_MINOR = 31
SCHEMA_SET = f"v1.{KUBERNETES_MINOR}.0-local-strict"

_load_lock = threading.Lock()


def schema_dir() -> Path:
    import kubernetes_validate  # only for where its schema files live

    directory = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / SCHEMA_SET
    if not directory.is_dir():
        raise RuntimeError(f"kubernetes-validate has no schema set {SCHEMA_SET} under {directory.parent}; "
                           "install the version pinned in requirements.txt")
    return directory


@functools.lru_cache(maxsize=1)
def definitions() -> dict[str, Any]:
    """All type definitions (`$defs`) of the schema set: about 1.3 MB of JSON, parsed once."""
    with _load_lock:
        return json.loads((schema_dir() / "_definitions.json").read_text())


def schema_file_name(res: Resource) -> str:
    # kubernetes-validate names files <kind>-<group's first label>-<version>.json, core: <kind>-<version>.json
    group = res.group.split(".")[0] if res.group else ""
    return f"{res.kind.lower()}-{group}-{res.version}.json" if group else f"{res.kind.lower()}-{res.version}.json"


@functools.lru_cache(maxsize=None)
def root_schema(res: Resource) -> dict | None:
    """The top-level schema of a built-in kind; None for custom resources (Karpenter's NodePool)."""
    path = schema_dir() / schema_file_name(res)
    if not path.exists():
        return None
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Walking a schema alongside an object

def resolve(node: dict | None) -> dict | None:
    """Follow `$ref`s (and single-entry allOf/oneOf wrappers around one) to the schema that has content."""
    seen = 0
    while node is not None and seen < 32:
        seen += 1
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            target = definitions()["$defs"].get(name)
            # Annotations on the referring node (x-kubernetes-map-type on a property) win over the target's.
            extra = {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}
            node = {**target, **extra} if target is not None else None
            continue
        for wrapper in ("allOf",):
            if isinstance(node.get(wrapper), list) and len(node[wrapper]) == 1:
                extra = {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}
                node = {**node[wrapper][0], **extra}
                break
        else:
            return node
    return node


@dataclass(frozen=True)
class Shape:
    """How a value merges: `struct` (granular map), `atomic`, `list-map` (by `keys`), `set`, `scalar`,
    or `any` (no schema: maps granular, lists atomic, as for CRDs without annotations)."""

    kind: str
    keys: tuple[str, ...] = ()


ANY = Shape("any")


def shape(node: dict | None) -> Shape:
    """How server-side apply merges values described by this schema node."""
    node = resolve(node)
    if node is None:
        return ANY
    if "oneOf" in node or "anyOf" in node:
        return Shape("scalar")  # Quantity, IntOrString
    types = node.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if "array" in types:
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or [node.get("x-kubernetes-patch-merge-key")]
            return Shape("list-map", tuple(k for k in keys if k))
        if list_type == "set":
            return Shape("set")
        return Shape("atomic")
    if "object" in types or "properties" in node:
        if node.get("x-kubernetes-map-type") == "atomic":
            return Shape("atomic")
        if node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties"):
            return Shape("atomic")
        return Shape("struct")
    if not types - {None} and "properties" not in node and "items" not in node:
        return ANY
    return Shape("scalar")


def field_node(node: dict | None, name: str) -> dict | None:
    """The schema of field `name` of a struct or map node (None if unknown)."""
    node = resolve(node)
    if node is None:
        return None
    props = node.get("properties") or {}
    if name in props:
        return props[name]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def item_node(node: dict | None) -> dict | None:
    """The schema of the items of a list node."""
    node = resolve(node)
    if node is None:
        return None
    items = node.get("items")
    return items if isinstance(items, dict) else None


def patch_strategy(node: dict | None) -> tuple[str | None, set[str]]:
    """Strategic merge patch metadata of a list or map field: (merge key, strategies)."""
    raw = node or {}
    resolved = resolve(node) or {}
    key = raw.get("x-kubernetes-patch-merge-key") or resolved.get("x-kubernetes-patch-merge-key")
    strategy = raw.get("x-kubernetes-patch-strategy") or resolved.get("x-kubernetes-patch-strategy") or ""
    return key, {s for s in strategy.split(",") if s}
