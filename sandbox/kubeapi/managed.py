"""Field ownership (`metadata.managedFields`) and server-side apply, after structured-merge-diff.

A field set is a set of paths; a path is a tuple of elements in the FieldsV1 spelling:
`f:<field>` (struct or map key), `k:{"name":"x"}` (item of a keyed list, by its key fields) and
`v:<json>` (item of a set list). Leaves, atomic values and keyed list items are members; plain
maps are not (their fields are). That is how the real server records ownership, so a reader of
`managedFields` sees what they would see on EKS.

Apply (`server_side_apply`): the applied configuration is merged into the live object by schema
(maps by key, `x-kubernetes-list-type: map` lists by their keys, sets by value, everything else
replaced); fields the manager applied last time and no longer applies are removed unless another
manager owns them too; a field that another manager owns with a different value is a conflict
(409) unless `force`, which moves ownership. Other writes (`track_update`) give the writing
manager the fields it changed, as an `Update` entry, and take them from everyone else.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from .resources import Resource
from .schema import field_node, item_node, root_schema, shape
from .store import ApiError, now_iso

Path = tuple[str, ...]

BEFORE_FIRST_APPLY = "before-first-apply"
# Fields the server owns, not any manager.
_SERVER_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"}
# Key fields with a default, so `{containerPort: 80}` and `{containerPort: 80, protocol: TCP}` are one item.
_KEY_DEFAULTS = {"protocol": "TCP"}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def item_key(item: dict, keys: tuple[str, ...]) -> str:
    """The `k:{...}` element naming a keyed list item."""
    found = {k: item[k] if k in item else _KEY_DEFAULTS[k] for k in keys if k in item or k in _KEY_DEFAULTS}
    return "k:" + _json(found)


def _matches_key(item: Any, key: dict) -> bool:
    return isinstance(item, dict) and all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in key.items())


# ---------------------------------------------------------------------------------------------
# Field sets

def _walk(value: Any, node: dict | None, prefix: Path, out: set[Path]) -> None:
    kind = shape(node)
    if isinstance(value, dict) and kind.kind in ("struct", "any"):
        if not value and prefix:
            out.add(prefix)
        for key, child in value.items():
            if child is not None:
                _walk(child, field_node(node, key), prefix + ("f:" + key,), out)
    elif isinstance(value, list) and kind.kind == "list-map" and all(isinstance(i, dict) for i in value):
        if not value:
            out.add(prefix)
        inode = item_node(node)
        for item in value:
            path = prefix + (item_key(item, kind.keys),)
            out.add(path)
            for key, child in item.items():
                if child is not None:
                    _walk(child, field_node(inode, key), path + ("f:" + key,), out)
    elif isinstance(value, list) and kind.kind == "set":
        if not value:
            out.add(prefix)
        for item in value:
            out.add(prefix + ("v:" + _json(item),))
    elif prefix:
        out.add(prefix)


def field_set(res: Resource, obj: dict, *, status: bool = False) -> set[Path]:
    """The fields of `obj` a manager can own: the main resource's (spec, data, metadata...) or the status."""
    node = root_schema(res)
    out: set[Path] = set()
    for key, value in obj.items():
        if value is None or key in ("apiVersion", "kind"):
            continue
        if (key == "status") != status:
            continue
        if key == "metadata" and isinstance(value, dict):
            meta_node = field_node(node, "metadata")
            for mkey, mvalue in value.items():
                if mkey not in _SERVER_META and mvalue is not None:
                    _walk(mvalue, field_node(meta_node, mkey), ("f:metadata", "f:" + mkey), out)
            continue
        _walk(value, field_node(node, key), ("f:" + key,), out)
    return out


def get_path(obj: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at `path` in `obj`."""
    cur = obj
    for element in path:
        tag, rest = element[:2], element[2:]
        if tag == "f:":
            if not isinstance(cur, dict) or rest not in cur:
                return False, None
            cur = cur[rest]
        elif tag == "k:":
            key = json.loads(rest)
            if not isinstance(cur, list):
                return False, None
            found = [i for i in cur if _matches_key(i, key)]
            if not found:
                return False, None
            cur = found[0]
        elif tag == "v:":
            wanted = json.loads(rest)
            if not isinstance(cur, list) or wanted not in cur:
                return False, None
            cur = wanted
        else:
            return False, None
    return True, cur


def remove_path(obj: Any, path: Path) -> None:
    """Delete the field or list item at `path` (no-op if absent)."""
    found, parent = get_path(obj, path[:-1])
    if not found:
        return
    tag, rest = path[-1][:2], path[-1][2:]
    if tag == "f:" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif tag == "k:" and isinstance(parent, list):
        key = json.loads(rest)
        parent[:] = [i for i in parent if not _matches_key(i, key)]
    elif tag == "v:" and isinstance(parent, list):
        wanted = json.loads(rest)
        parent[:] = [i for i in parent if i != wanted]


def path_string(path: Path) -> str:
    """`.spec.template.spec.containers[name="app"].image`, as apply conflicts name fields."""
    out = ""
    for element in path:
        tag, rest = element[:2], element[2:]
        if tag == "f:":
            out += "." + rest
        elif tag == "k:":
            out += "[" + ",".join(f"{k}={_json(v)}" for k, v in json.loads(rest).items()) + "]"
        else:
            out += f"[={rest}]"
    return out


def encode_fields(paths: set[Path]) -> dict:
    """A field set as FieldsV1 JSON (a trie; "." marks a member that also has members below it)."""
    trie: dict = {}
    for path in paths:
        node = trie
        for element in path:
            node = node.setdefault(element, {})
    def mark(node: dict, prefix: Path) -> dict:
        out = {}
        if node and prefix in paths:
            out["."] = {}
        for key in sorted(node):
            out[key] = mark(node[key], prefix + (key,))
        return out
    return mark(trie, ())


def decode_fields(fields: dict | None) -> set[Path]:
    """FieldsV1 JSON back to a field set."""
    out: set[Path] = set()
    def walk(node: dict, prefix: Path) -> None:
        if prefix and (not node or "." in node):
            out.add(prefix)
        for key, child in node.items():
            if key != "." and isinstance(child, dict):
                walk(child, prefix + (key,))
    walk(fields or {}, ())
    return out


# ---------------------------------------------------------------------------------------------
# managedFields entries

@dataclass
class Entry:
    manager: str
    operation: str  # Apply | Update
    api_version: str
    time: str
    subresource: str = ""
    fields: set[Path] = field(default_factory=set)

    def same_owner(self, manager: str, operation: str, subresource: str) -> bool:
        return (self.manager, self.operation, self.subresource) == (manager, operation, subresource)

    def to_json(self) -> dict:
        out = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
               "time": self.time, "fieldsType": "FieldsV1", "fieldsV1": encode_fields(self.fields)}
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def read_entries(obj: dict | None) -> list[Entry]:
    entries = []
    for raw in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if isinstance(raw, dict) and raw.get("manager") is not None:
            entries.append(Entry(raw["manager"], raw.get("operation", "Update"), raw.get("apiVersion", ""),
                                 raw.get("time", ""), raw.get("subresource", ""), decode_fields(raw.get("fieldsV1"))))
    return entries


def _content(obj: dict | None) -> dict:
    """The object without its bookkeeping, to decide whether a write changed anything."""
    if obj is None:
        return {}
    out = dict(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items()
                       if k not in ("managedFields", "resourceVersion")}
    return out


def _write_entries(obj: dict, entries: list[Entry], acting: Entry | None, old_obj: dict | None,
                   old_fields: set[Path] | None) -> dict:
    """Store entries into obj; the acting manager's time moves only when something it did changed."""
    if acting is not None and (old_fields != acting.fields or _content(obj) != _content(old_obj)):
        acting.time = now_iso()
    kept = [e for e in entries if e.fields]
    if kept:
        obj.setdefault("metadata", {})["managedFields"] = [e.to_json() for e in kept]
    else:
        obj.get("metadata", {}).pop("managedFields", None)
    return obj


def keep_time_of_a_no_op(new: dict, old: dict) -> None:
    """An apply is merged before the server defaults the result: when the defaulted result equals
    the stored object and nobody's fields moved, the apply changed nothing, and its time stays."""
    if _content(new) != _content(old):
        return

    def untimed(obj: dict) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "time"} for e in obj["metadata"].get("managedFields") or []]

    if untimed(new) == untimed(old):
        new["metadata"]["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields"))


def default_manager(user_agent: str | None) -> str:
    """What the real server names a manager that did not say: the user agent up to its first '/'."""
    return (user_agent or "unknown").split("/", 1)[0] or "unknown"


def track_update(res: Resource, old: dict | None, new: dict, manager: str, *, subresource: str = "") -> dict:
    """Record a create/update/patch by `manager` in `new`'s managedFields; returns `new`."""
    status = subresource == "status"
    entries = read_entries(old)
    new_fields = field_set(res, new, status=status)
    if old is None:
        changed, removed = new_fields, set()
    else:
        old_fields = field_set(res, old, status=status)
        removed = old_fields - new_fields
        changed = set()
        for path in new_fields:
            if path not in old_fields:
                changed.add(path)
            elif not path[-1].startswith("k:") and get_path(old, path)[1] != get_path(new, path)[1]:
                changed.add(path)
    if not changed and not removed:
        new.setdefault("metadata", {})["managedFields"] = (old or {}).get("metadata", {}).get("managedFields")
        if new["metadata"]["managedFields"] is None:
            new["metadata"].pop("managedFields")
        return new
    mine = next((e for e in entries if e.same_owner(manager, "Update", subresource)), None)
    previous = set(mine.fields) if mine else None
    if mine is None:
        mine = Entry(manager, "Update", res.api_version, "", subresource)
        entries.append(mine)
    for entry in entries:
        if entry is not mine and entry.subresource == subresource:
            entry.fields -= changed | removed
    mine.fields = (mine.fields - removed) | changed
    mine.api_version = res.api_version
    return _write_entries(new, entries, mine, old, previous)


# ---------------------------------------------------------------------------------------------
# Server-side apply

def _merge(live: Any, config: Any, node: dict | None) -> Any:
    kind = shape(node)
    if isinstance(config, dict) and isinstance(live, dict) and kind.kind in ("struct", "any"):
        out = dict(live)
        for key, value in config.items():
            if value is None:
                continue
            out[key] = _merge(live[key], value, field_node(node, key)) if key in live else copy.deepcopy(value)
        return out
    if isinstance(config, list) and isinstance(live, list) and kind.kind == "list-map":
        out = list(live)
        inode = item_node(node)
        index = {item_key(item, kind.keys): i for i, item in enumerate(out) if isinstance(item, dict)}
        for item in config:
            if not isinstance(item, dict):
                continue
            key = item_key(item, kind.keys)
            if key in index:
                out[index[key]] = _merge(out[index[key]], item, inode)
            else:
                index[key] = len(out)
                out.append(copy.deepcopy(item))
        return out
    if isinstance(config, list) and isinstance(live, list) and kind.kind == "set":
        return list(live) + [copy.deepcopy(v) for v in config if v not in live]
    return copy.deepcopy(config)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def conflict_error(res: Resource, name: str, conflicts: dict[str, list[Path]]) -> ApiError:
    """409 Conflict worded like the real server's apply conflicts."""
    total = sum(len(p) for p in conflicts.values())
    lines, causes = [], []
    for manager, paths in conflicts.items():
        what = f'conflict with "{manager}" using {res.api_version}'
        for path in sorted(paths):
            causes.append({"reason": "FieldManagerConflict", "message": what, "field": path_string(path)})
        if total == 1:
            lines.append(f"{what}: {path_string(paths[0])}")
        else:
            lines.append(f'conflicts with "{manager}" using {res.api_version}:\n'
                         + "\n".join(f"- {path_string(p)}" for p in sorted(paths)))
    noun = "conflict" if total == 1 else "conflicts"
    return ApiError(409, "Conflict", f"Apply failed with {total} {noun}: " + "\n".join(lines),
                    {"name": name, "group": res.group, "kind": res.plural, "causes": causes})


def server_side_apply(res: Resource, live: dict, config: dict, manager: str, *, force: bool,
                      subresource: str = "", existed: bool = True) -> dict:
    """The object after `manager` applies `config` to `live` (nothing is stored here).

    + live: the stored object, or a skeleton (apiVersion, kind, metadata name/namespace) when creating
    + config: the applied configuration (the request body)
    + force: take ownership of conflicting fields instead of failing with 409
    + subresource: "status" when applying to .../status (only the status is applied then)
    """
    status = subresource == "status"
    config = _drop_nulls(config)
    config = {k: v for k, v in config.items() if (k == "status") == status or k in ("apiVersion", "kind", "metadata")}
    if status:
        config["metadata"] = {k: v for k, v in (config.get("metadata") or {}).items() if k in ("name", "namespace")}
    entries = read_entries(live) if existed else []
    if existed and not entries:
        # As the real server does: the first apply to an object nobody manages (made by a controller, or
        # before field management) gives its existing fields to "before-first-apply", so fields this
        # manager later stops applying are kept if they were there before it came.
        entries.append(Entry(BEFORE_FIRST_APPLY, "Update", res.api_version, now_iso(), subresource,
                             field_set(res, live, status=status)))
    applied = field_set(res, config, status=status)
    mine = next((e for e in entries if e.same_owner(manager, "Apply", subresource)), None)
    previous = set(mine.fields) if mine else None

    conflicts: dict[str, list[Path]] = {}
    for entry in entries:
        if entry is mine or entry.manager == manager or entry.subresource != subresource:
            continue
        for path in applied & entry.fields:
            if path[-1].startswith("k:"):
                continue  # the item exists for both; its fields are compared one by one
            live_found, live_value = get_path(live, path)
            if live_found and live_value != get_path(config, path)[1]:
                conflicts.setdefault(entry.manager, []).append(path)
    if conflicts:
        if not force:
            raise conflict_error(res, (live.get("metadata") or {}).get("name", ""), conflicts)
        for entry in entries:
            if entry.manager in conflicts:
                entry.fields -= set(conflicts[entry.manager])

    merged = _merge(copy.deepcopy(live), config, root_schema(res))
    others = set().union(*(e.fields for e in entries if e is not mine)) if entries else set()
    # Outermost first: removing a list item takes its fields along, and its key still finds it.
    for path in sorted((previous or set()) - applied - others, key=len):
        if any(len(p) > len(path) and p[:len(path)] == path for p in others | applied):
            continue  # someone still owns fields inside it
        if len(path) > 1 and path[-2].startswith("k:") and path[-1][2:] in json.loads(path[-2][2:]):
            continue  # a key field stays as long as its item does
        remove_path(merged, path)
        # Maps left empty by the removal go too, unless someone owns them.
        parent = path[:-1]
        while len(parent) > 1:
            found, value = get_path(merged, parent)
            if not found or value or parent in others or parent in applied:
                break
            remove_path(merged, parent)
            parent = parent[:-1]

    if mine is None:
        mine = Entry(manager, "Apply", res.api_version, "", subresource)
        entries.append(mine)
    mine.fields = applied
    mine.api_version = res.api_version
    return _write_entries(merged, entries, mine, live if existed else None, previous)
