"""Validation of written objects, as the API server does it before anything is stored.

Names follow the DNS rules Kubernetes applies per kind; labels follow the label syntax; the whole
object is checked against the kind's OpenAPI schema strictly (an unknown field is an error, as
with `kubectl --validate=strict` and server-side apply). Failures become one 422 Invalid Status
whose `details.causes` name every offending field, in the real server's wording.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any

from .resources import Resource
from .schema import definitions, root_schema
from .store import ApiError

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + r")*"
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  f"validation is '{DNS1123_SUBDOMAIN}')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              f"validation is '{DNS1123_LABEL}')")
_DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                f"regex used for validation is '{DNS1035_LABEL}')")

# Which name rule each kind follows (everything else: DNS-1123 subdomain).
_NAME_RULES = {"Namespace": "label", "Service": "dns1035", "Role": "path", "RoleBinding": "path"}


def _cause(field: str, reason: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field}


def _invalid(field: str, value: Any, detail: str) -> dict:
    return _cause(field, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {detail}")


def dns_label_causes(field: str, value: str) -> list[dict]:
    """IsDNS1123Label: names of namespaces, containers, volumes."""
    causes = [_invalid(field, value, "must be no more than 63 characters")] if len(value) > 63 else []
    if not re.fullmatch(DNS1123_LABEL, value):
        causes.append(_invalid(field, value, LABEL_MSG))
    return causes


def name_causes(res: Resource, name: str | None, field: str = "metadata.name") -> list[dict]:
    """Why `name` is not a valid name for this kind (empty list when it is)."""
    if not name:
        return [_cause(field, "FieldValueRequired", "Required value: name or generateName is required")]
    rule = _NAME_RULES.get(res.kind, "subdomain")
    if rule == "path":
        bad = [s for s in (".", "..") if name == s] or [c for c in ("/", "%") if c in name]
        return [_invalid(field, name, f"may not contain {bad[0]!r}")] if bad else []
    if rule == "label":
        return dns_label_causes(field, name)
    if rule == "dns1035":
        causes = [_invalid(field, name, "must be no more than 63 characters")] if len(name) > 63 else []
        if not re.fullmatch(DNS1035_LABEL, name):
            causes.append(_invalid(field, name, _DNS1035_MSG))
        return causes
    causes = [_invalid(field, name, "must be no more than 253 characters")] if len(name) > 253 else []
    if not re.fullmatch(DNS1123_SUBDOMAIN, name):
        causes.append(_invalid(field, name, SUBDOMAIN_MSG))
    return causes


def _qualified_name_causes(field: str, key: str) -> list[dict]:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.fullmatch(DNS1123_SUBDOMAIN, prefix)):
        return [_invalid(field, key, "prefix part " + SUBDOMAIN_MSG)]
    if not name or len(name) > 63 or not re.fullmatch(QUALIFIED_NAME, name):
        return [_invalid(field, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                         "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                         f"'123-abc', regex used for validation is '{QUALIFIED_NAME}') and be no more than 63 characters")]
    return []


def label_causes(labels: dict | None, field: str) -> list[dict]:
    """Label keys must be qualified names, values at most 63 characters of the label alphabet."""
    causes: list[dict] = []
    for key, value in (labels or {}).items():
        causes += _qualified_name_causes(field, key)
        if not isinstance(value, str):
            continue  # the schema check reports the type
        if len(value) > 63 or not re.fullmatch(LABEL_VALUE, value):
            causes.append(_invalid(f"{field}", value, "a valid label must be an empty string or consist of "
                                   "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                                   "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
                                   f"for validation is '{LABEL_VALUE}') and be no more than 63 characters"))
    return causes


# ---------------------------------------------------------------------------------------------
# Schema validation

_validator_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _registry():
    from referencing import Registry, Resource as RefResource

    return RefResource.from_contents(definitions()) @ Registry()


@functools.lru_cache(maxsize=None)
def _validator(res: Resource):
    import jsonschema

    schema = root_schema(res)
    if schema is None:
        return None
    with _validator_lock:
        return jsonschema.Draft202012Validator(schema, registry=_registry())


def warm_up(resources) -> None:
    """Load schemas and build validators ahead of the first request (the first build costs ~100 ms)."""
    for res in resources:
        validator = _validator(res)
        if validator is not None:
            validator.is_valid({"apiVersion": res.api_version, "kind": res.kind, "metadata": {"name": "warm-up"}})


def _field_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


_JSON_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object",
                    type(None): "null"}


def _schema_error_causes(error) -> list[dict]:
    field = _field_path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema.get("properties") or {}).keys())
        unknown = [k for k in error.instance if k not in known]
        base = "" if field == "<root>" else field + "."
        return [_cause(base + k, "FieldValueInvalid", f'unknown field "{base + k}"') for k in unknown]
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        base = "" if field == "<root>" else field + "."
        return [_cause(base + (missing[0] if missing else "?"), "FieldValueRequired", "Required value")]
    if kind == "type":
        expected = error.validator_value
        expected = [t for t in expected if t != "null"] if isinstance(expected, list) else [expected]
        return [_invalid(field, error.instance, f"{field} in body must be of type {' or '.join(expected)}: "
                         f"{json.dumps(_JSON_TYPE_NAMES.get(type(error.instance), 'unknown'))}")]
    if kind == "enum":
        supported = ", ".join(json.dumps(v) for v in error.validator_value if v is not None)
        return [_cause(field, "FieldValueNotSupported",
                       f"Unsupported value: {json.dumps(error.instance)}: supported values: {supported}")]
    return [_invalid(field, error.instance, error.message)]


def schema_causes(res: Resource, obj: dict) -> list[dict]:
    """Every way `obj` breaks its kind's schema, as Status causes (empty when valid)."""
    if res.kind == "NodePool":
        return _nodepool_causes(obj)
    validator = _validator(res)
    if validator is None:
        return []
    causes: list[dict] = []
    for error in validator.iter_errors(obj):
        causes += _schema_error_causes(error)
    return causes


def _nodepool_causes(obj: dict) -> list[dict]:
    # No OpenAPI schema ships for Karpenter's CRD: check the shape the playbook and the cluster rely on.
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [_cause("spec", "FieldValueRequired", "Required value")]
    template_spec = ((spec.get("template") or {}).get("spec")) if isinstance(spec.get("template"), dict) else None
    if template_spec is None:
        return [_cause("spec.template.spec", "FieldValueRequired", "Required value")]
    requirements = template_spec.get("requirements", [])
    if not isinstance(requirements, list):
        return [_invalid("spec.template.spec.requirements", requirements, "must be of type array")]
    causes = []
    for index, req in enumerate(requirements):
        field = f"spec.template.spec.requirements[{index}]"
        if not isinstance(req, dict) or "key" not in req or "operator" not in req:
            causes.append(_cause(field, "FieldValueRequired", "Required value: key and operator"))
        elif req["operator"] not in ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"):
            causes.append(_cause(field + ".operator", "FieldValueNotSupported",
                                 f'Unsupported value: {json.dumps(req["operator"])}: supported values: "In", "NotIn", '
                                 '"Exists", "DoesNotExist", "Gt", "Lt"'))
    return causes


def invalid(res: Resource, name: str | None, causes: list[dict]) -> ApiError:
    """The 422 Invalid Status for these causes, worded like the real API server's."""
    what = f"{res.kind}.{res.group}" if res.group else res.kind
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(422, "Invalid", f'{what} "{name or ""}" is invalid: {summary}',
                    {"name": name or "", "group": res.group, "kind": res.kind, "causes": causes})


def object_causes(res: Resource, obj: dict, *, check_schema: bool = True) -> list[dict]:
    """The checks every kind shares: names, labels, the schema. Per-kind rules live in strategies/."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    causes = name_causes(res, meta.get("name"))
    if res.namespaced and meta.get("namespace"):
        causes += name_causes(Resource("", "v1", "Namespace", "namespaces", False), meta["namespace"],
                              "metadata.namespace")
    causes += label_causes(meta.get("labels") if isinstance(meta.get("labels"), dict) else None, "metadata.labels")
    if check_schema:
        causes += schema_causes(res, obj)
    return causes


def validate(res: Resource, obj: dict, *, check_schema: bool = True) -> None:
    """Raise a 422 ApiError unless `obj` passes the checks every kind shares."""
    causes = object_causes(res, obj, check_schema=check_schema)
    if causes:
        raise invalid(res, (obj.get("metadata") or {}).get("name"), causes)
