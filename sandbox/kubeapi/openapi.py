"""`/openapi/v2` and `/openapi/v3`: the API's own description, as kube-apiserver publishes it.

kubectl reads these before it writes: `apply`, `create` and `diff` look in the v3 document of a
group version for the PATCH operation of the kind and its `fieldValidation` query parameter
(kubectl: pkg/cmd/util ... resource/query_param_verifier_v3.go); when it is there, kubectl leaves
validation to the server (which the sandbox does strictly), otherwise it fails with "failed to
download openapi". `kubectl explain` renders the v3 schemas (found by their
`x-kubernetes-group-version-kind`), and client-side apply takes strategic-merge keys from them.

The schemas are not written here: they are the upstream ones that `kubernetes-validate` ships
(schema.py loads them), turned back from its JSON Schema dialect into OpenAPI: nullable type lists
become one type, `$defs` references become `#/components/schemas/` (v3) or `#/definitions/` (v2),
and the strictness it adds (`additionalProperties: false`, `enum` on apiVersion and kind) is dropped.

The v2 document is served as JSON. Real servers also speak protobuf there (client-go's
`OpenAPISchema()` asks only for `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`);
the sandbox answers that Accept with 406, which kubectl 1.31 only needs on paths that v3 covers.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from .discovery import GIT_VERSION, group_versions
from .resources import RESOURCES, Resource
from .schema import definitions

V3_PREFIX = "/openapi/v3"
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"


# ---------------------------------------------------------------------------------------------
# Schemas: kubernetes-validate's JSON Schema back to OpenAPI

def _convert(node: Any, ref_prefix: str, *, v3: bool) -> Any:
    if isinstance(node, list):
        return [_convert(n, ref_prefix, v3=v3) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "additionalProperties" and value is False:
            continue
        if key == "type" and isinstance(value, list):
            kept = [t for t in value if t != "null"]
            value = kept[0] if len(kept) == 1 else kept
        if key == "$ref" and isinstance(value, str):
            value = ref_prefix + value.rsplit("/", 1)[-1]
        if key == "properties" and isinstance(value, dict):
            props = {}
            for name, prop in value.items():
                prop = _convert(prop, ref_prefix, v3=v3)
                if name in ("apiVersion", "kind") and isinstance(prop, dict):
                    prop.pop("enum", None)
                props[name] = prop
            out[key] = props
            continue
        out[key] = _convert(value, ref_prefix, v3=v3)
    if "$ref" in out and len(out) > 1 and v3:
        # OpenAPI 3.0 ignores siblings of $ref; upstream wraps the reference to keep the description.
        ref = out.pop("$ref")
        out = {"allOf": [{"$ref": ref}], **out}
    return out


def _scalar_fixups(name: str, schema: dict, *, v3: bool) -> dict:
    # Quantity and IntOrString: string-or-number in v3 (oneOf), "string" with a format in v2, as upstream.
    if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
        return ({"oneOf": [{"type": "integer"}, {"type": "string"}], "format": "int-or-string"} if v3
                else {"type": "string", "format": "int-or-string"}) | _description(schema)
    if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
        return ({"oneOf": [{"type": "string"}, {"type": "number"}]} if v3 else {"type": "string"}) | _description(schema)
    return schema


def _description(schema: dict) -> dict:
    return {"description": schema["description"]} if "description" in schema else {}


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _closure(names: set[str]) -> set[str]:
    defs = definitions()["$defs"]
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(found - seen)
    return seen


def definition_name(res: Resource) -> str | None:
    """The upstream definition name of a kind (io.k8s.api.apps.v1.Deployment), None for custom resources."""
    for name, schema in definitions()["$defs"].items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (res.group, res.version, res.kind):
                return name
    return None


@functools.lru_cache(maxsize=None)
def _definition_names() -> dict[str, str | None]:
    return {res.key: definition_name(res) for res in RESOURCES}


def _custom_resource_schema(res: Resource) -> dict:
    # What a CRD without a structural schema publishes: anything goes, but the kind is known.
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [{"group": res.group, "kind": res.kind, "version": res.version}],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"$ref": f"#/definitions/{_META}.ObjectMeta"}}}


def _custom_name(res: Resource) -> str:
    return ".".join(reversed(res.group.split("."))) + f".{res.version}.{res.kind}"


def _schemas(resources: list[Resource], ref_prefix: str, *, v3: bool) -> dict[str, dict]:
    defs = definitions()["$defs"]
    wanted = {f"{_META}.{n}" for n in ("Status", "DeleteOptions", "Patch", "WatchEvent", "APIResourceList")}
    for res in resources:
        name = _definition_names().get(res.key)
        if name:
            wanted |= {name, name + "List"}
            if "scale" in res.subresources:
                wanted.add("io.k8s.api.autoscaling.v1.Scale")
        else:
            wanted.add(f"{_META}.ObjectMeta")
    out = {name: _scalar_fixups(name, _convert(defs[name], ref_prefix, v3=v3), v3=v3)
           for name in sorted(_closure(wanted))}
    for res in resources:
        if not _definition_names().get(res.key):
            custom = _custom_resource_schema(res)
            custom["properties"]["metadata"]["$ref"] = f"{ref_prefix}{_META}.ObjectMeta"
            out[_custom_name(res)] = custom
    return out


# ---------------------------------------------------------------------------------------------
# Paths

def _query(name: str, description: str, type_: str = "string", *, v3: bool) -> dict:
    if v3:
        return {"name": name, "in": "query", "description": description, "schema": {"type": type_, "uniqueItems": True}}
    return {"name": name, "in": "query", "description": description, "type": type_, "uniqueItems": True}


def _path_param(name: str, description: str, *, v3: bool) -> dict:
    if v3:
        return {"name": name, "in": "path", "description": description, "required": True,
                "schema": {"type": "string", "uniqueItems": True}}
    return {"name": name, "in": "path", "description": description, "required": True, "type": "string",
            "uniqueItems": True}


_WRITE_PARAMS = (
    ("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All"),
    ("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
    ("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing "
                        "unknown or duplicate fields. Valid values are: Ignore, Warn, Strict (the default)."),
)
_LIST_PARAMS = (
    ("labelSelector", "string"), ("fieldSelector", "string"), ("limit", "integer"), ("continue", "string"),
    ("resourceVersion", "string"), ("timeoutSeconds", "integer"), ("watch", "boolean"),
    ("allowWatchBookmarks", "boolean"),
)


def _operation(res: Resource, action: str, verb: str, schema_ref: str, *, v3: bool, body_ref: str | None = None,
               params: list[dict] | None = None, subresource: str = "") -> dict:
    kind_word = res.kind + ("" if not subresource else subresource.capitalize())
    scope = "Namespaced" if res.namespaced else ""
    group_word = "".join(p.capitalize() for p in (res.group.split(".")[0] if res.group else "core").split("-"))
    op: dict[str, Any] = {
        "description": f"{verb} the specified {res.kind}" + (f" {subresource}" if subresource else ""),
        "operationId": f"{verb}{group_word}{res.version.capitalize()}{scope}{kind_word}",
        "tags": [f"{res.group.split('.')[0] if res.group else 'core'}_{res.version}"],
        "parameters": params or [],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": res.group, "kind": res.kind, "version": res.version},
    }
    if v3:
        content = {t: {"schema": {"$ref": schema_ref}} for t in ("application/json", "application/yaml")}
        op["responses"] = {"200": {"description": "OK", "content": content}, "401": {"description": "Unauthorized"}}
        if body_ref:
            types = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
                     "application/strategic-merge-patch+json") if action == "patch" else ("*/*",)
            op["requestBody"] = {"content": {t: {"schema": {"$ref": body_ref}} for t in types}, "required": True}
    else:
        op["responses"] = {"200": {"description": "OK", "schema": {"$ref": schema_ref}},
                           "401": {"description": "Unauthorized"}}
        op["consumes"] = ["*/*"]
        op["produces"] = ["application/json", "application/yaml"]
        op["schemes"] = ["https"]
        if body_ref:
            op["parameters"] = [{"name": "body", "in": "body", "required": True, "schema": {"$ref": body_ref}},
                                *op["parameters"]]
    return op


def _paths(res: Resource, ref_prefix: str, *, v3: bool) -> dict[str, dict]:
    name = _definition_names().get(res.key) or _custom_name(res)
    obj_ref, list_ref = ref_prefix + name, ref_prefix + (name + "List" if _definition_names().get(res.key)
                                                         else f"{_META}.Status")
    status_ref, patch_ref = f"{ref_prefix}{_META}.Status", f"{ref_prefix}{_META}.Patch"
    delete_ref = f"{ref_prefix}{_META}.DeleteOptions"
    write = [_query(n, d, v3=v3) for n, d in _WRITE_PARAMS]
    patch_params = [*write, _query("force", "Force is going to \"force\" Apply requests.", "boolean", v3=v3)]
    listing = [_query(n, n, t, v3=v3) for n, t in _LIST_PARAMS]
    base = res.base_path()
    collection = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{base}/{res.plural}"
    common = [_path_param("namespace", "object name and auth scope, such as for teams and projects", v3=v3)] \
        if res.namespaced else []
    named = [_path_param("name", f"name of the {res.kind}", v3=v3), *common]
    verbs = set(res.verbs)
    paths: dict[str, dict] = {collection: {"parameters": common}}
    if "list" in verbs:
        paths[collection]["get"] = _operation(res, "list", "list", list_ref, v3=v3, params=listing)
    if "create" in verbs:
        paths[collection]["post"] = _operation(res, "post", "create", obj_ref, v3=v3, body_ref=obj_ref, params=write)
    if "deletecollection" in verbs and res.kind != "Namespace":
        paths[collection]["delete"] = _operation(res, "deletecollection", "deletecollection", status_ref, v3=v3,
                                                 body_ref=delete_ref, params=listing)
    item = f"{collection}/{{name}}"
    paths[item] = {"parameters": named}
    for verb, action, method, body, params in (("get", "get", "read", None, []),
                                               ("update", "put", "replace", obj_ref, write),
                                               ("patch", "patch", "patch", patch_ref, patch_params),
                                               ("delete", "delete", "delete", delete_ref, [])):
        if verb in verbs:
            http = {"get": "get", "update": "put", "patch": "patch", "delete": "delete"}[verb]
            paths[item][http] = _operation(res, action, method, status_ref if verb == "delete" else obj_ref, v3=v3,
                                           body_ref=body, params=params)
    for sub in res.subresources:
        if sub not in ("status", "scale"):
            continue
        ref = f"{ref_prefix}io.k8s.api.autoscaling.v1.Scale" if sub == "scale" else obj_ref
        paths[f"{item}/{sub}"] = {
            "parameters": named,
            "get": _operation(res, "get", "read", ref, v3=v3, subresource=sub),
            "put": _operation(res, "put", "replace", ref, v3=v3, body_ref=ref, params=write, subresource=sub),
            "patch": _operation(res, "patch", "patch", ref, v3=v3, body_ref=patch_ref, params=patch_params,
                                subresource=sub),
        }
    if res.namespaced and "list" in verbs:
        paths[f"{base}/{res.plural}"] = {"get": _operation(res, "list", "list", list_ref, v3=v3, params=listing)}
    return paths


# ---------------------------------------------------------------------------------------------
# Documents

def _info() -> dict:
    return {"title": "Kubernetes", "version": GIT_VERSION}


def v3_path_key(api_version: str) -> str:
    """'v1' -> 'api/v1', 'apps/v1' -> 'apis/apps/v1': the keys of the /openapi/v3 index."""
    return f"api/{api_version}" if "/" not in api_version else f"apis/{api_version}"


@functools.lru_cache(maxsize=None)
def v3_document(api_version: str, addons: frozenset[str] = frozenset()) -> bytes | None:
    """The OpenAPI 3.0 document of one group version, as JSON bytes (None if the sandbox does not serve it)."""
    resources = group_versions(addons).get(api_version)
    if resources is None:
        return None
    prefix = "#/components/schemas/"
    paths: dict[str, dict] = {}
    for res in resources:
        paths.update(_paths(res, prefix, v3=True))
    document = {
        "openapi": "3.0.0", "info": _info(), "paths": paths,
        "components": {"schemas": _schemas(resources, prefix, v3=True),
                       "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token "
                                                           "authentication", "name": "authorization", "in": "header"}}},
    }
    return json.dumps(document, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=None)
def v3_index(addons: frozenset[str] = frozenset()) -> dict:
    """`/openapi/v3`: where each group version's document is, with a content hash (clients cache by it)."""
    paths = {}
    for api_version in group_versions(addons):
        digest = hashlib.sha512(v3_document(api_version, addons) or b"").hexdigest()[:128].upper()
        paths[v3_path_key(api_version)] = {"serverRelativeURL": f"{V3_PREFIX}/{v3_path_key(api_version)}?hash={digest}"}
    return {"paths": paths}


def v3_for_path(path: str, addons: frozenset[str] = frozenset()) -> bytes | None:
    """The document behind `/openapi/v3/<api/v1 | apis/group/version>`, None if unknown."""
    key = path[len(V3_PREFIX):].strip("/")
    for api_version in group_versions(addons):
        if v3_path_key(api_version) == key:
            return v3_document(api_version, addons)
    return None


@functools.lru_cache(maxsize=1)
def v2_document() -> bytes:
    """The Swagger 2.0 document of the whole API, as JSON bytes."""
    prefix = "#/definitions/"
    resources = list(RESOURCES)
    paths: dict[str, dict] = {}
    for res in resources:
        paths.update(_paths(res, prefix, v3=False))
    document = {"swagger": "2.0", "info": _info(), "paths": paths, "definitions": _schemas(resources, prefix, v3=False),
                "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
                "security": [{"BearerToken": []}]}
    return json.dumps(document, separators=(",", ":")).encode()


__all__ = ["PROTOBUF_V2", "V3_PREFIX", "definition_name", "v2_document", "v3_document", "v3_for_path", "v3_index"]
