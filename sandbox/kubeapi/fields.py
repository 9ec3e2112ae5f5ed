"""Field selectors: which field labels each kind supports, as kube-apiserver converts them.

Upstream every kind supports `metadata.name` and `metadata.namespace`
(apimachinery runtime.DefaultMetaV1FieldSelectorConversion); a few kinds add their own through
`AddFieldLabelConversionFunc` (kubernetes/kubernetes pkg/apis/core/v1/conversion.go,
pkg/apis/apps/v1/conversion.go, pkg/apis/batch/v1/conversion.go). Any other label is refused
with 400 BadRequest `field label not supported: <label>` before anything is listed or watched.
"""

from __future__ import annotations

from .registry import bad_request
from .resources import Resource

_META = ("metadata.name", "metadata.namespace")
SUPPORTED: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"),
    "Node": ("spec.unschedulable",),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
              "reportingComponent", "source", "type"),
    "Namespace": ("status.phase",),
    "Secret": ("type",),
    "ReplicaSet": ("status.replicas",),
    "Job": ("status.successful",),
}


def check_field_selector(res: Resource, selector: str | None) -> None:
    """400 for a term this kind cannot be selected by (or an operator other than =, ==, !=)."""
    if not selector:
        return
    allowed = set(_META) | set(SUPPORTED.get(res.kind, ()))
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        for op in ("!=", "==", "="):
            if op in term:
                label = term.split(op, 1)[0].strip()
                break
        else:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        if label not in allowed:
            raise bad_request(f"field label not supported: {label}")
