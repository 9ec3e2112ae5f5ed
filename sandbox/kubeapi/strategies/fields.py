"""Field errors as kube-apiserver words them (k8s.io/apimachinery/pkg/util/validation/field/errors.go).

A cause is `{"field", "reason", "message"}`; the message starts with the error type's words
("Required value", "Invalid value: <value>", "Unsupported value", "Duplicate value", "Not found",
"Forbidden") and goes on with the detail, so a client that matches upstream wording matches ours.
Values print as Go's `%#v` does for the types that appear in the messages we produce (strings,
numbers, string maps and slices, label selectors), which is how upstream prints them.
"""

from __future__ import annotations

import json
from typing import Any

IMMUTABLE = "field is immutable"  # apimachinery/pkg/api/validation: FieldImmutableErrorMsg


def go_value(value: Any) -> str:
    """`value` as Go's fmt prints it in field errors (simple types plainly, strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return _go_string_map(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _go_string_map(value: dict | None) -> str:
    if value is None:
        return "map[string]string(nil)"
    return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items())) + "}"


def go_label_selector(selector: Any) -> str:
    """A metav1.LabelSelector as `%#v` prints it (the value in the famous selector-is-immutable message)."""
    if not isinstance(selector, dict):
        return "(*v1.LabelSelector)(nil)"
    expressions = selector.get("matchExpressions")
    if expressions:
        parts = []
        for e in expressions:
            values = e.get("values")
            values_text = "[]string(nil)" if values is None else "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"
            parts.append(f'v1.LabelSelectorRequirement{{Key:{json.dumps(e.get("key", ""))}, '
                         f'Operator:{json.dumps(e.get("operator", ""))}, Values:{values_text}}}')
        expressions_text = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    else:
        expressions_text = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{_go_string_map(selector.get('matchLabels'))}, MatchExpressions:{expressions_text}}}"


def cause(field: str, reason: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field}


def required(field: str, detail: str = "") -> dict:
    return cause(field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str, *, shown: str | None = None) -> dict:
    """`shown`: the value already printed (for values Go prints specially, such as selectors)."""
    return cause(field, "FieldValueInvalid", f"Invalid value: {shown if shown is not None else go_value(value)}: {detail}")


def not_supported(field: str, value: Any, supported: list[str]) -> dict:
    listed = ", ".join(json.dumps(s) for s in supported)
    return cause(field, "FieldValueNotSupported", f"Unsupported value: {go_value(value)}: supported values: {listed}")


def duplicate(field: str, value: Any) -> dict:
    return cause(field, "FieldValueDuplicate", f"Duplicate value: {go_value(value)}")


def not_found(field: str, value: Any) -> dict:
    return cause(field, "FieldValueNotFound", f"Not found: {go_value(value)}")


def forbidden(field: str, detail: str) -> dict:
    return cause(field, "FieldValueForbidden", f"Forbidden: {detail}")


def immutable(field: str, new: Any, old: Any, *, shown: str | None = None) -> list[dict]:
    """apimachinery ValidateImmutableField: one cause when `new` differs from `old`."""
    if new == old:
        return []
    return [invalid(field, new, IMMUTABLE, shown=shown)]


def non_negative(field: str, value: Any) -> list[dict]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return [invalid(field, value, "must be greater than or equal to 0")]
    return []


def as_dict(value: Any) -> dict:
    """The value if it is an object, else {} (the schema layer reports wrong types)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def int_or_percent_causes(value: Any, field: str, *, at_most_100: bool = False) -> list[dict]:
    """An IntOrString count (pkg/apis/apps/validation ValidatePositiveIntOrPercent; with
    `at_most_100`, IsNotMoreThan100Percent too): an integer >= 0 or "N%"."""
    if value is None:
        return []
    if isinstance(value, str):
        if not value.endswith("%") or not value[:-1].isdigit():
            return [invalid(field, value, "a valid percent string must be a numeric string followed by an ending '%' "
                                          "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")]
        if at_most_100 and int(value[:-1]) > 100:
            return [invalid(field, value, "must not be greater than 100%")]
        return []
    return non_negative(field, value)
