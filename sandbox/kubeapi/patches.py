"""The three classic patch formats of the Kubernetes API.

- JSON merge patch (RFC 7386): maps merge, `null` deletes, lists are replaced.
- JSON patch (RFC 6902): add, remove, replace, move, copy, test on JSON pointers.
- Strategic merge patch: a merge patch whose lists merge by the schema's
  `x-kubernetes-patch-merge-key` where `x-kubernetes-patch-strategy` says `merge`, with the
  `$patch: delete|replace|merge`, `$deleteFromPrimitiveList/<field>`, `$retainKeys` and
  `$setElementOrder/<field>` directives.
"""

from __future__ import annotations

import copy
from typing import Any

from .schema import field_node, item_node, patch_strategy
from .store import ApiError


def _invalid_patch(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


# ---------------------------------------------------------------------------------------------
# RFC 7386

def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch to `target` (not modified); returns the result."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---------------------------------------------------------------------------------------------
# RFC 6902

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _invalid_patch(f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise _invalid_patch(f"JSON patch path {path!r}: {part!r} not found in the object")
    return cur


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    return _container(doc, parts, path)


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _container(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), copy.deepcopy(value))
        else:
            raise _invalid_patch(f"JSON patch path {path!r}: index {last!r} out of range (list has {len(parent)})")
    else:
        raise _invalid_patch(f"JSON patch path {path!r}: parent is not an object or list")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _invalid_patch("JSON patch cannot remove the whole object")
    parent = _container(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _invalid_patch(f"JSON patch path {path!r}: nothing to remove there")


def json_patch(target: Any, operations: Any) -> Any:
    """Apply a JSON patch (a list of operations) to a copy of `target`; returns the result."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations, e.g. "
                       '[{"op": "replace", "path": "/spec/replicas", "value": 2}]')
    doc = copy.deepcopy(target)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"JSON patch operation {index} needs 'op' and 'path': {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, op.get("value"))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _invalid_patch(f"JSON patch test at {path!r} failed: value is not {op.get('value')!r}")
        else:
            raise ApiError(400, "BadRequest", f"JSON patch operation {index}: unknown op {kind!r}; "
                           "use add, remove, replace, move, copy or test")
    return doc


# ---------------------------------------------------------------------------------------------
# Strategic merge patch

def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$setElementOrder/") and k not in ("$patch", "$retainKeys")
                and not k.startswith("$deleteFromPrimitiveList/")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(live: list, patch: list, merge_key: str | None, node: dict | None) -> list:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    out = copy.deepcopy(live)
    if merge_key is None:  # a list of scalars with strategy merge: union
        return out + [copy.deepcopy(p) for p in patch if p not in out]
    inode = item_node(node)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            out.append(_strip_directives(item))
            continue
        index = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
        elif index is None:
            out.append(_strip_directives(item))
        else:
            out[index] = strategic_merge(out[index], item, inode)
    return out


def strategic_merge(live: Any, patch: Any, node: dict | None) -> Any:
    """Apply a strategic merge patch to `live` (not modified) following the schema `node`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    out = copy.deepcopy(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(out.get(name), list):
                out[name] = [v for v in out[name] if v not in (value or [])]
            continue
        child = field_node(node, key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out.get(key), value, child)
        elif isinstance(value, list):
            merge_key, strategies = patch_strategy(child)
            if "merge" in strategies and isinstance(out.get(key), list):
                out[key] = _merge_list(out[key], value, merge_key, child)
            else:
                out[key] = _strip_directives(value)
        else:
            out[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out
