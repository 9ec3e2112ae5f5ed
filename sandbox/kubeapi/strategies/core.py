"""core/v1 kinds other than pods: Namespace, Service, PersistentVolumeClaim, PersistentVolume, Secret, ConfigMap.

Defaults after pkg/apis/core/v1/defaults.go (SetDefaults_Service, _PersistentVolume(Claim),
_Secret, _Namespace), Secret `stringData` folded into `data` as the v1 -> internal conversion
does (pkg/apis/core/v1/conversion.go), validation after pkg/apis/core/validation/validation.go
(ValidateService(Update), ValidatePersistentVolumeClaim(Update), ValidatePersistentVolume(Update),
ValidateSecret(Update), ValidateConfigMap(Update)), allocation after pkg/registry/core/service.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re

from . import quantity
from .base import Context, Strategy, register, spec_of
from ..validation import label_causes
from .fields import as_dict, as_list, cause, forbidden, immutable, invalid, not_supported, required
from .pods import PORT_RANGE_MSG, PROTOCOLS, default_claim_spec, canonical_resource_list, port_name_causes, \
    port_num_or_name_causes, unique_name_causes

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
SESSION_AFFINITIES = ["ClientIP", "None"]
ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
CONFIG_KEY = r"[-._a-zA-Z0-9]+"
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                  f"'KEY_NAME',  or 'key-name', regex used for validation is '{CONFIG_KEY}')")
MAX_SECRET_BYTES = 1024 * 1024
PV_SOURCES = ("gcePersistentDisk", "awsElasticBlockStore", "hostPath", "glusterfs", "nfs", "rbd", "iscsi", "cinder",
              "cephfs", "fc", "flocker", "flexVolume", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
              "photonPersistentDisk", "portworxVolume", "scaleIO", "local", "storageos", "csi")


class DecodeError(ValueError):
    """The body cannot be turned into an object of its kind (upstream: 400 "cannot be handled as")."""


@register
class NamespaceStrategy(Strategy):
    """pkg/registry/core/namespace/strategy.go: the name label, and Active until deleted."""

    kind = "Namespace"

    def default(self, obj: dict) -> None:
        meta = obj.setdefault("metadata", {})
        if meta.get("name"):
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]

    def prepare_for_create(self, obj: dict, ctx: Context) -> None:
        obj["status"] = {"phase": "Active"}

    def prepare_for_update(self, obj: dict, old: dict, ctx: Context) -> None:
        obj["status"] = copy.deepcopy(old.get("status")) or {"phase": "Active"}


# -- Service ----------------------------------------------------------------------------------

def _headless(spec: dict) -> bool:
    return spec.get("clusterIP") == "None"


@register
class ServiceStrategy(Strategy):
    kind = "Service"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is None:
            return
        spec.setdefault("sessionAffinity", "None")
        if spec["sessionAffinity"] == "None":
            spec.pop("sessionAffinityConfig", None)
        elif spec["sessionAffinity"] == "ClientIP":
            client_ip = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
            client_ip.setdefault("timeoutSeconds", 10800)
        spec.setdefault("type", "ClusterIP")
        for port in as_list(spec.get("ports")):
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if port.get("targetPort") in (None, 0, "") and "port" in port:
                    port["targetPort"] = port["port"]
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer", "ClusterIP"):
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)

    @staticmethod
    def _allocate(spec: dict, ctx: Context) -> None:
        # The REST storage allocates on a single-stack IPv4 cluster, as an EKS IPv4 cluster is.
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            spec["clusterIP"] = (spec.get("clusterIPs") or [None])[0] or ctx.allocate_cluster_ip()
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    def prepare_for_create(self, obj: dict, ctx: Context) -> None:
        spec = spec_of(obj)
        if spec is not None:
            self._allocate(spec, ctx)

    def prepare_for_update(self, obj: dict, old: dict, ctx: Context) -> None:
        spec, old_spec = spec_of(obj), spec_of(old) or {}
        if spec is None:
            return
        # patchAllocatedValues: what the server allocated stays when a client leaves it out.
        if spec.get("type") != "ExternalName" and old_spec.get("type") != "ExternalName":
            if spec.get("clusterIP") and spec["clusterIP"] != old_spec.get("clusterIP") \
                    and spec.get("clusterIPs") == old_spec.get("clusterIPs"):
                # normalizeClusterIPs: a changed singular field speaks for the plural one too.
                spec["clusterIPs"] = [spec["clusterIP"]]
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP")
            if not spec.get("clusterIPs") and spec.get("clusterIP") == (old_spec.get("clusterIPs") or [None])[0]:
                spec["clusterIPs"] = old_spec.get("clusterIPs")
            for key in ("ipFamilies", "ipFamilyPolicy"):
                if key not in spec and key in old_spec:
                    spec[key] = copy.deepcopy(old_spec[key])
        self._allocate(spec, ctx)

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return [required("spec")]
        causes: list[dict] = []
        service_type = spec.get("type")
        if service_type not in SERVICE_TYPES:
            causes.append(not_supported("spec.type", service_type, SERVICE_TYPES))
        if spec.get("sessionAffinity") not in SESSION_AFFINITIES:
            causes.append(not_supported("spec.sessionAffinity", spec.get("sessionAffinity"), SESSION_AFFINITIES))
        ports = as_list(spec.get("ports"))
        if not ports and service_type != "ExternalName" and not _headless(spec):
            causes.append(required("spec.ports"))
        if service_type == "ExternalName" and not spec.get("externalName"):
            causes.append(required("spec.externalName"))
        names: set[str] = set()
        for index, port in enumerate(ports):
            if not isinstance(port, dict):
                continue
            pfield = f"spec.ports[{index}]"
            if len(ports) > 1 or port.get("name"):
                causes += unique_name_causes(f"{pfield}.name", port.get("name"), names, rule=port_name_causes)
            number = port.get("port")
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
                causes.append(invalid(f"{pfield}.port", number, PORT_RANGE_MSG))
            if port.get("protocol") not in PROTOCOLS:
                causes.append(not_supported(f"{pfield}.protocol", port.get("protocol"), PROTOCOLS))
            causes += port_num_or_name_causes(f"{pfield}.targetPort", port.get("targetPort"))
            node_port = port.get("nodePort")
            if node_port and service_type not in ("NodePort", "LoadBalancer"):
                causes.append(forbidden(f"{pfield}.nodePort", "may not be used when `type` is 'ClusterIP'"))
        selector = spec.get("selector")
        causes += label_causes(selector if isinstance(selector, dict) else None, "spec.selector")
        cluster_ips = as_list(spec.get("clusterIPs"))
        if spec.get("clusterIP") and cluster_ips and cluster_ips[0] != spec["clusterIP"]:
            causes.append(invalid("spec.clusterIPs", cluster_ips, "must be consistent with spec.clusterIP"))
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        causes = self.validate(obj)
        spec, old_spec = spec_of(obj) or {}, spec_of(old) or {}
        if "ExternalName" in (spec.get("type"), old_spec.get("type")):
            return causes
        if _headless(spec) and _headless(old_spec):
            return causes
        new_ips, old_ips = as_list(spec.get("clusterIPs")), as_list(old_spec.get("clusterIPs"))
        # validateUpgradeDowngradeClusterIPs: the primary address never changes once set.
        for index, address in enumerate(old_ips[:len(new_ips)]):
            if new_ips[index] != address:
                causes.append(invalid(f"spec.clusterIPs[{index}]", new_ips, "may not change once set"))
        return causes


# -- volumes ----------------------------------------------------------------------------------

def _access_mode_causes(modes: list, field: str) -> list[dict]:
    if not modes:
        return [required(field, "at least 1 access mode is required")]
    return [not_supported(field, mode, ACCESS_MODES) for mode in modes if mode not in ACCESS_MODES]


def _storage_causes(resources: dict, field: str) -> list[dict]:
    storage = resources.get("storage")
    if storage is None:
        return [required(f"{field}[storage]")]
    try:
        value = quantity.parse(storage)
    except quantity.QuantityError:
        return []
    if value.value <= 0:
        return [invalid(f"{field}[storage]", str(value), "must be greater than zero")]
    return []


@register
class PersistentVolumeClaimStrategy(Strategy):
    kind = "PersistentVolumeClaim"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is not None:
            default_claim_spec(spec)

    def prepare_for_create(self, obj: dict, ctx: Context) -> None:
        obj["status"] = {"phase": "Pending"}

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return [required("spec")]
        causes = _access_mode_causes(as_list(spec.get("accessModes")), "spec.accessModes")
        causes += _storage_causes(as_dict(as_dict(spec.get("resources")).get("requests")), "spec.resources")
        if spec.get("volumeMode") not in ("Block", "Filesystem"):
            causes.append(not_supported("spec.volumeMode", spec.get("volumeMode"), ["Block", "Filesystem"]))
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        causes = self.validate(obj)
        spec, old_spec = copy.deepcopy(spec_of(obj) or {}), copy.deepcopy(spec_of(old) or {})
        bound = as_dict(old.get("status")).get("phase") == "Bound"
        if not old_spec.get("volumeName"):
            old_spec["volumeName"] = spec.get("volumeName")  # binding sets it once
        if bound:
            # Only a bound claim may ask for more storage, never less than it has.
            new_storage = as_dict(as_dict(spec.get("resources")).get("requests")).get("storage")
            capacity = as_dict(as_dict(old.get("status")).get("capacity")).get("storage")
            try:
                if new_storage is not None and capacity is not None and \
                        quantity.parse(new_storage).value < quantity.parse(capacity).value:
                    causes.append(forbidden("spec.resources.requests.storage", "field can not be less than status.capacity"))
            except quantity.QuantityError:
                pass
            old_spec.setdefault("resources", {})["requests"] = as_dict(spec.get("resources")).get("requests")
            old_spec.pop("volumeAttributesClassName", None)
            spec.pop("volumeAttributesClassName", None)
        if spec != old_spec:
            causes.append(forbidden("spec", "spec is immutable after creation except resources.requests and "
                                            "volumeAttributesClassName for bound claims"))
        return causes


@register
class PersistentVolumeStrategy(Strategy):
    kind = "PersistentVolume"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is None:
            return
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
        canonical_resource_list(spec.get("capacity"))

    def prepare_for_create(self, obj: dict, ctx: Context) -> None:
        obj["status"] = {"phase": "Pending"}

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return [required("spec")]
        causes = _access_mode_causes(as_list(spec.get("accessModes")), "spec.accessModes")
        causes += _storage_causes(as_dict(spec.get("capacity")), "spec.capacity")
        sources = [s for s in PV_SOURCES if spec.get(s) is not None]
        if not sources:
            causes.append(required("spec", "must specify a volume type"))
        causes += [forbidden(f"spec.{extra}", "may not specify more than 1 volume type") for extra in sources[1:]]
        if spec.get("persistentVolumeReclaimPolicy") not in RECLAIM_POLICIES:
            causes.append(not_supported("spec.persistentVolumeReclaimPolicy", spec.get("persistentVolumeReclaimPolicy"),
                                        RECLAIM_POLICIES))
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        causes = self.validate(obj)
        spec, old_spec = spec_of(obj) or {}, spec_of(old) or {}
        if {s: spec.get(s) for s in PV_SOURCES} != {s: old_spec.get(s) for s in PV_SOURCES}:
            causes.append(forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation"))
        causes += immutable("volumeMode", spec.get("volumeMode"), old_spec.get("volumeMode"))
        if old_spec.get("nodeAffinity") is not None:
            causes += immutable("nodeAffinity", spec.get("nodeAffinity"), old_spec.get("nodeAffinity"),
                                shown="core.VolumeNodeAffinity{...}")
        return causes


# -- Secret and ConfigMap ---------------------------------------------------------------------

def _key_causes(keys, field: str) -> list[dict]:
    causes = []
    for key in keys:
        key_field = f"{field}[{key}]"
        if len(key) > 253:
            causes.append(invalid(key_field, key, "must be no more than 253 characters"))
        if not re.fullmatch(CONFIG_KEY, key):
            causes.append(invalid(key_field, key, CONFIG_KEY_MSG))
        elif key in (".", "..") or key.startswith(".."):
            causes.append(invalid(key_field, key, "must not be '.'" if key == "." else "must not start with '..'"))
    return causes


def _decode_base64(values: dict) -> int:
    """Check every value decodes (a 400 as the JSON decoder fails upstream); returns the decoded size."""
    size = 0
    for value in values.values():
        if not isinstance(value, str):
            continue
        try:
            size += len(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise DecodeError(f"illegal base64 data at input byte {_corrupt_offset(value)}") from None
    return size


def _corrupt_offset(value: str) -> int:
    """Where Go's base64 decoder stops (CorruptInputError), near enough: the first foreign character."""
    for index, char in enumerate(value):
        if not (char.isascii() and (char.isalnum() or char in "+/=")):
            return index
    padding = value.find("=")
    if 0 <= padding < len(value) - 2 or (padding >= 0 and value[padding:].strip("=")):
        return padding
    return len(value) - len(value) % 4


def _immutable_data_causes(obj: dict, old: dict, data_keys: tuple[str, ...]) -> list[dict]:
    if old.get("immutable") is not True:
        return []
    causes = []
    if obj.get("immutable") is not True:
        causes.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    for key in data_keys:
        if (obj.get(key) or {}) != (old.get(key) or {}):
            causes.append(forbidden(key, "field is immutable when `immutable` is set"))
    return causes


@register
class SecretStrategy(Strategy):
    kind = "Secret"

    def default(self, obj: dict) -> None:
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
            for key, value in string_data.items():
                if isinstance(value, str):
                    data[key] = base64.b64encode(value.encode()).decode()
            obj["data"] = data

    def validate(self, obj: dict) -> list[dict]:
        data = as_dict(obj.get("data"))
        causes = _key_causes(data, "data")
        size = _decode_base64(data)
        if size > MAX_SECRET_BYTES:
            causes.append(cause("data", "FieldValueTooLong", f"Too long: must have at most {MAX_SECRET_BYTES} bytes"))
        secret_type = obj.get("type")
        required_keys = {"kubernetes.io/tls": ("tls.crt", "tls.key"),
                         "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
                         "kubernetes.io/dockercfg": (".dockercfg",),
                         "kubernetes.io/ssh-auth": ("ssh-privatekey",)}.get(secret_type, ())
        causes += [required(f"data[{key}]") for key in required_keys if key not in data]
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        causes = self.validate(obj)
        causes += immutable("type", obj.get("type"), old.get("type"))
        return causes + _immutable_data_causes(obj, old, ("data",))


@register
class ConfigMapStrategy(Strategy):
    kind = "ConfigMap"

    def validate(self, obj: dict) -> list[dict]:
        data, binary = as_dict(obj.get("data")), as_dict(obj.get("binaryData"))
        causes = _key_causes(data, "data") + _key_causes(binary, "binaryData")
        causes += [invalid(f"data[{key}]", key, "duplicate of key present in binaryData") for key in data if key in binary]
        size = sum(len(k) + len(v.encode()) for k, v in data.items() if isinstance(v, str))
        size += _decode_base64(binary) + sum(len(k) for k in binary)
        if size > MAX_SECRET_BYTES:
            causes.append(cause("", "FieldValueTooLong", f"Too long: must have at most {MAX_SECRET_BYTES} bytes"))
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        return self.validate(obj) + _immutable_data_causes(obj, old, ("data", "binaryData"))
