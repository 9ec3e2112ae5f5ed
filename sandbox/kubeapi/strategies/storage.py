"""storage.k8s.io/v1: StorageClass.

Defaults after pkg/apis/storage/v1/defaults.go (reclaimPolicy Delete, volumeBindingMode
Immediate), validation after pkg/apis/storage/validation/validation.go (ValidateStorageClass,
ValidateStorageClassUpdate: parameters, provisioner, reclaimPolicy and volumeBindingMode are
fixed at creation).
"""

from __future__ import annotations

import re

from .base import Strategy, register
from .fields import forbidden, immutable, invalid, not_supported, required

RECLAIM_POLICIES = ["Delete", "Retain"]
BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]


@register
class StorageClassStrategy(Strategy):
    kind = "StorageClass"

    def default(self, obj: dict) -> None:
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")

    def validate(self, obj: dict) -> list[dict]:
        provisioner = obj.get("provisioner")
        causes = []
        if not provisioner:
            causes.append(required("provisioner"))
        elif isinstance(provisioner, str) and (len(provisioner) > 63 or not re.fullmatch(
                r"([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?", provisioner.lower())):
            causes.append(invalid("provisioner", provisioner, "a valid provisioner name must be a lowercase RFC 1123 "
                                  "subdomain of no more than 63 characters"))
        if obj.get("reclaimPolicy") not in RECLAIM_POLICIES:
            causes.append(not_supported("reclaimPolicy", obj.get("reclaimPolicy"), RECLAIM_POLICIES))
        if obj.get("volumeBindingMode") not in BINDING_MODES:
            causes.append(not_supported("volumeBindingMode", obj.get("volumeBindingMode"), BINDING_MODES))
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        causes = self.validate(obj)
        if (obj.get("parameters") or {}) != (old.get("parameters") or {}):
            causes.append(forbidden("parameters", "updates to parameters are forbidden."))
        if obj.get("provisioner") != old.get("provisioner"):
            causes.append(forbidden("provisioner", "updates to provisioner are forbidden."))
        if obj.get("reclaimPolicy") != old.get("reclaimPolicy"):
            causes.append(forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
        causes += immutable("volumeBindingMode", obj.get("volumeBindingMode"), old.get("volumeBindingMode"))
        return causes
