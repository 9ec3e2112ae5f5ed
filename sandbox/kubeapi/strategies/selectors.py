"""Label selectors of workloads: their validation and whether they select a pod template.

After k8s.io/apimachinery/pkg/apis/meta/v1/validation ValidateLabelSelector and the template
checks of pkg/apis/apps/validation (ValidatePodTemplateSpecForReplicaSet) and batch/validation.
"""

from __future__ import annotations

from typing import Any

from ..store import selector_matches
from ..validation import label_causes
from .fields import as_dict, as_list, forbidden, go_label_selector, go_value, invalid, not_supported, required

SELECTOR_OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"]


def selector_causes(selector: Any, field: str, *, empty_message: str | None) -> list[dict]:
    """A workload's selector: required, well formed and (when `empty_message`) not empty."""
    if selector is None:
        return [required(field)]
    selector = as_dict(selector)
    causes = label_causes(as_dict(selector.get("matchLabels")) or None, f"{field}.matchLabels")
    for index, expression in enumerate(as_list(selector.get("matchExpressions"))):
        efield = f"{field}.matchExpressions[{index}]"
        expression = as_dict(expression)
        operator = expression.get("operator")
        if operator not in SELECTOR_OPERATORS:
            causes.append(not_supported(f"{efield}.operator", operator, SELECTOR_OPERATORS))
        elif operator in ("In", "NotIn") and not expression.get("values"):
            causes.append(required(f"{efield}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist") and expression.get("values"):
            causes.append(forbidden(f"{efield}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
    if empty_message and not selector.get("matchLabels") and not selector.get("matchExpressions"):
        causes.append(invalid(field, selector, empty_message, shown=go_label_selector(selector)))
    return causes


def template_match_causes(selector: Any, template: Any, field: str) -> list[dict]:
    """`selector` does not match template `labels` (field: the template's path)."""
    selector = as_dict(selector)
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return []
    labels = as_dict(as_dict(as_dict(template).get("metadata")).get("labels"))
    if selector_matches(selector, labels):
        return []
    return [invalid(f"{field}.metadata.labels", labels, "`selector` does not match template `labels`",
                    shown=go_value(labels))]


def selector_immutable(new: Any, old: Any, field: str = "spec.selector") -> list[dict]:
    if new == old:
        return []
    return [invalid(field, new, "field is immutable", shown=go_label_selector(new))]
