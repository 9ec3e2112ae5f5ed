"""Pods and pod templates: the defaults and validation every workload kind shares.

Defaults after pkg/apis/core/v1/defaults.go (SetDefaults_PodSpec, _Container, _Probe,
_HTTPGetAction, _Volume and the volume sources' defaultMode, _ResourceList, _Pod) and the
declarative `+default` tags of k8s.io/api/core/v1 (port protocol TCP, grpc service "").
Validation after pkg/apis/core/v1/validation and pkg/apis/core/validation/validation.go
(ValidatePodSpec, validateContainers, validateProbe, ValidateResourceRequirements,
validateVolumeMounts, ValidatePodUpdate), with upstream's messages and field paths.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..validation import dns_label_causes, label_causes
from . import quantity
from .base import Strategy, register
from .fields import (as_dict, as_list, duplicate, forbidden, invalid, non_negative, not_found, not_supported,
                     required)

PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
RESTART_POLICIES = ["Always", "OnFailure", "Never"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
TERMINATION_MESSAGE_POLICIES = ["File", "FallbackToLogsOnError"]
TOLERATION_OPERATORS = ["Equal", "Exists"]
TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
VOLUME_SOURCES = ("hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs",
                  "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
                  "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
                  "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral",
                  "image")
STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
CONTAINER_LISTS = ("initContainers", "containers")
DEFAULT_MODE = 0o644  # v1.SecretVolumeSourceDefaultMode and the other volume sources' default mode


# -- defaults ---------------------------------------------------------------------------------

def image_tag(image: str) -> str:
    """The tag of an image reference ("latest" when none; "" when pinned by digest only), as
    pkg/util/parsers.ParseImageName reads it for the imagePullPolicy default."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "" if digest else "latest"


def canonical_resource_list(resources: Any) -> None:
    """Resource lists hold canonical quantities rounded up to milli units (SetDefaults_ResourceList)."""
    if isinstance(resources, dict):
        for key, value in resources.items():
            resources[key] = str(quantity.parse(value).round_up_to_milli())


def canonical_quantity(holder: Any, key: str) -> None:
    if isinstance(holder, dict) and holder.get(key) is not None:
        holder[key] = str(quantity.parse(holder[key]))


def _default_handler(handler: Any) -> None:
    get = as_dict(handler).get("httpGet")
    if isinstance(get, dict):
        get.setdefault("path", "/")
        get.setdefault("scheme", "HTTP")


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        if not probe.get(key):
            probe[key] = value
    _default_handler(probe)
    if isinstance(probe.get("grpc"), dict):
        probe["grpc"].setdefault("service", "")


def default_container(container: Any) -> None:
    if not isinstance(container, dict):
        return
    if not container.get("imagePullPolicy"):
        # An image that does not parse (none at all) has no tag: IfNotPresent, as upstream ignores the parse error.
        image = container.get("image")
        latest = isinstance(image, str) and bool(image) and image_tag(image) == "latest"
        container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in as_list(container.get("ports")):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in as_list(container.get("env")):
        field_ref = as_dict(as_dict(as_dict(env).get("valueFrom")).get("fieldRef"))
        if field_ref:
            field_ref.setdefault("apiVersion", "v1")
    resources = as_dict(container.get("resources"))
    canonical_resource_list(resources.get("limits"))
    canonical_resource_list(resources.get("requests"))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(probe))
    for hook in ("postStart", "preStop"):
        _default_handler(as_dict(container.get("lifecycle")).get(hook))


def _default_volume(volume: Any) -> None:
    if not isinstance(volume, dict):
        return
    if not any(source in volume for source in VOLUME_SOURCES):
        volume["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(volume.get(source), dict):
            volume[source].setdefault("defaultMode", DEFAULT_MODE)
    for projection in as_list(as_dict(volume.get("projected")).get("sources")):
        token = as_dict(projection).get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)
    if isinstance(volume.get("hostPath"), dict):
        volume["hostPath"].setdefault("type", "")
    canonical_quantity(volume.get("emptyDir"), "sizeLimit")
    claim_spec = as_dict(as_dict(as_dict(volume.get("ephemeral")).get("volumeClaimTemplate")).get("spec"))
    if claim_spec:
        default_claim_spec(claim_spec)


def default_claim_spec(spec: dict) -> None:
    """SetDefaults_PersistentVolumeClaimSpec (shared by PVCs and ephemeral volumes)."""
    spec.setdefault("volumeMode", "Filesystem")
    resources = as_dict(spec.get("resources"))
    canonical_resource_list(resources.get("requests"))
    canonical_resource_list(resources.get("limits"))


def default_pod_spec(spec: Any) -> None:
    """SetDefaults_PodSpec and what it reaches: the defaults of pods and of pod templates."""
    if not isinstance(spec, dict):
        return
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    for volume in as_list(spec.get("volumes")):
        _default_volume(volume)
    for list_name in CONTAINER_LISTS + ("ephemeralContainers",):
        for container in as_list(spec.get(list_name)):
            default_container(container)
    canonical_resource_list(spec.get("overhead"))


def default_pod_template(template: Any) -> None:
    if isinstance(template, dict):
        default_pod_spec(template.get("spec"))


# -- validation -------------------------------------------------------------------------------

def port_name_causes(field: str, name: str) -> list[dict]:
    """IsValidPortName (an IANA_SVC_NAME)."""
    causes = []
    if len(name) > 15:
        causes.append(invalid(field, name, "must be no more than 15 characters"))
    if not re.fullmatch(r"[-a-z0-9]+", name):
        causes.append(invalid(field, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"))
    if "--" in name:
        causes.append(invalid(field, name, "must not contain consecutive hyphens"))
    if not re.search(r"[a-z]", name):
        causes.append(invalid(field, name, "must contain at least one letter (a-z)"))
    if name.startswith("-") or name.endswith("-"):
        causes.append(invalid(field, name, "must not begin or end with a hyphen"))
    return causes


def unique_name_causes(field: str, name: Any, seen: set[str], rule=dns_label_causes) -> list[dict]:
    """A list item's name: present, well formed by `rule`, and not one an earlier item has (`seen` grows)."""
    if not name:
        return [required(field)]
    if not isinstance(name, str):
        return []  # the schema reports the type
    causes = rule(field, name) + ([duplicate(field, name)] if name in seen else [])
    seen.add(name)
    return causes


def port_num_or_name_causes(field: str, port: Any) -> list[dict]:
    if isinstance(port, bool):
        return []
    if isinstance(port, int):
        return [] if 1 <= port <= 65535 else [invalid(field, port, PORT_RANGE_MSG)]
    if isinstance(port, str):
        return port_name_causes(field, port) if port else [required(field)]
    return []


def _handler_causes(handler: dict, field: str) -> list[dict]:
    kinds = [k for k in ("exec", "httpGet", "tcpSocket", "grpc") if handler.get(k) is not None]
    if not kinds:
        return [required(field, "must specify a handler type")]
    causes = [forbidden(f"{field}.{extra}", "may not specify more than 1 handler type") for extra in kinds[1:]]
    for kind in ("httpGet", "tcpSocket"):
        if isinstance(handler.get(kind), dict):
            causes += port_num_or_name_causes(f"{field}.{kind}.port", handler[kind].get("port"))
    grpc = handler.get("grpc")
    if isinstance(grpc, dict) and not isinstance(grpc.get("port"), bool) and isinstance(grpc.get("port"), int) \
            and not 1 <= grpc["port"] <= 65535:
        causes.append(invalid(f"{field}.grpc.port", grpc["port"], PORT_RANGE_MSG))
    return causes


def _probe_causes(probe: Any, field: str, *, success_must_be_one: bool) -> list[dict]:
    if not isinstance(probe, dict):
        return []
    causes = _handler_causes(probe, field)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        causes += non_negative(f"{field}.{key}", probe.get(key))
    if success_must_be_one and probe.get("successThreshold") not in (None, 1):
        causes.append(invalid(f"{field}.successThreshold", probe["successThreshold"], "must be 1"))
    return causes


def _is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _overcommit_allowed(name: str) -> bool:
    # pkg/apis/core/v1/helper IsOvercommitAllowed: native resources except hugepages.
    return _is_native(name) and not name.startswith("hugepages-")


def _integer_resource(name: str) -> bool:
    # IsIntegerResourceName: extended resources (and a few native counters) take whole numbers only.
    return not _is_native(name) or name in ("pods", "storage.k8s.io/volumes")


def _resource_name_causes(field: str, name: str) -> list[dict]:
    if "/" not in name:
        if name not in STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            return [invalid(field, name, "must be a standard resource for containers")]
        return []
    prefix, _, rest = name.partition("/")
    if not _is_native(name) and (not rest or name.startswith("requests.")
                                 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", prefix)
                                 or not re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", rest)):
        return [invalid(field, name, "doesn't follow extended resource name standard")]
    return []


def _quantities(values: Any) -> dict[str, quantity.Quantity]:
    out = {}
    for key, value in as_dict(values).items():
        try:
            out[key] = quantity.parse(value)
        except quantity.QuantityError:
            continue  # defaulting refused it already with 400
    return out


def resource_requirement_causes(resources: Any, field: str) -> list[dict]:
    """ValidateResourceRequirements for one container."""
    resources = as_dict(resources)
    limits, requests = _quantities(resources.get("limits")), _quantities(resources.get("requests"))
    causes: list[dict] = []
    for section, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            key_field = f"{field}.{section}[{name}]"
            causes += _resource_name_causes(key_field, name)
            if value.value < 0:
                causes.append(invalid(key_field, str(value), "must be greater than or equal to 0"))
            if _integer_resource(name) and not value.is_integer():
                causes.append(invalid(key_field, str(value), "must be an integer"))
    for name, value in requests.items():
        if name in limits:
            if value.value != limits[name].value and not _overcommit_allowed(name):
                causes.append(invalid(f"{field}.requests", str(value), f"must be equal to {name} limit"))
            elif value.value > limits[name].value:
                causes.append(invalid(f"{field}.requests", str(value), f"must be less than or equal to {name} limit"))
        elif not _overcommit_allowed(name):
            causes.append(required(f"{field}.limits", "Limit must be set for non overcommitable resources"))
    return causes


def _volume_causes(volumes: list, field: str) -> tuple[list[dict], set[str]]:
    causes: list[dict] = []
    names: set[str] = set()
    for index, volume in enumerate(volumes):
        if not isinstance(volume, dict):
            continue
        vfield = f"{field}[{index}]"
        causes += unique_name_causes(f"{vfield}.name", volume.get("name"), names)
        sources = [s for s in VOLUME_SOURCES if volume.get(s) is not None]
        causes += [forbidden(f"{vfield}.{extra}", "may not specify more than 1 volume type") for extra in sources[1:]]
        for source, key in (("persistentVolumeClaim", "claimName"), ("secret", "secretName"), ("configMap", "name")):
            if isinstance(volume.get(source), dict) and not volume[source].get(key):
                causes.append(required(f"{vfield}.{source}.{key}"))
    return causes, names


def _container_causes(container: dict, field: str, volumes: set[str], *, is_init: bool) -> list[dict]:
    causes: list[dict] = []
    if not container.get("image"):
        causes.append(required(f"{field}.image"))
    port_names: set[str] = set()
    for index, port in enumerate(as_list(container.get("ports"))):
        if not isinstance(port, dict):
            continue
        pfield = f"{field}.ports[{index}]"
        if port.get("name"):
            causes += unique_name_causes(f"{pfield}.name", port["name"], port_names, rule=port_name_causes)
        number = port.get("containerPort")
        if number in (None, 0):
            causes.append(required(f"{pfield}.containerPort"))
        elif isinstance(number, int) and not 1 <= number <= 65535:
            causes.append(invalid(f"{pfield}.containerPort", number, PORT_RANGE_MSG))
        host_port = port.get("hostPort")
        if isinstance(host_port, int) and host_port and not 1 <= host_port <= 65535:
            causes.append(invalid(f"{pfield}.hostPort", host_port, PORT_RANGE_MSG))
        if port.get("protocol") not in PROTOCOLS:
            causes.append(not_supported(f"{pfield}.protocol", port.get("protocol"), PROTOCOLS))
    for index, env in enumerate(as_list(container.get("env"))):
        if isinstance(env, dict) and not env.get("name"):
            causes.append(required(f"{field}.env[{index}].name"))
    mount_paths: set[str] = set()
    for index, mount in enumerate(as_list(container.get("volumeMounts"))):
        if not isinstance(mount, dict):
            continue
        mfield = f"{field}.volumeMounts[{index}]"
        if not mount.get("name"):
            causes.append(required(f"{mfield}.name"))
        elif mount["name"] not in volumes:
            causes.append(not_found(f"{mfield}.name", mount["name"]))
        path = mount.get("mountPath")
        if not path:
            causes.append(required(f"{mfield}.mountPath"))
        elif path in mount_paths:
            causes.append(invalid(f"{mfield}.mountPath", path, "must be unique"))
        else:
            mount_paths.add(path)
    if not is_init:
        causes += _probe_causes(container.get("livenessProbe"), f"{field}.livenessProbe", success_must_be_one=True)
        causes += _probe_causes(container.get("readinessProbe"), f"{field}.readinessProbe", success_must_be_one=False)
        causes += _probe_causes(container.get("startupProbe"), f"{field}.startupProbe", success_must_be_one=True)
    causes += resource_requirement_causes(container.get("resources"), f"{field}.resources")
    if container.get("imagePullPolicy") not in PULL_POLICIES:
        causes.append(not_supported(f"{field}.imagePullPolicy", container.get("imagePullPolicy"), PULL_POLICIES))
    if container.get("terminationMessagePolicy") not in TERMINATION_MESSAGE_POLICIES:
        causes.append(not_supported(f"{field}.terminationMessagePolicy", container.get("terminationMessagePolicy"),
                                    TERMINATION_MESSAGE_POLICIES))
    return causes


def _toleration_causes(tolerations: list, field: str) -> list[dict]:
    causes: list[dict] = []
    for index, toleration in enumerate(tolerations):
        if not isinstance(toleration, dict):
            continue
        tfield = f"{field}[{index}]"
        operator = toleration.get("operator") or "Equal"
        if operator not in TOLERATION_OPERATORS:
            causes.append(not_supported(f"{tfield}.operator", operator, TOLERATION_OPERATORS))
        elif operator == "Exists" and toleration.get("value"):
            causes.append(invalid(f"{tfield}.operator", toleration.get("value"),
                                  "value must be empty when `operator` is 'Exists'"))
        if not toleration.get("key") and operator != "Exists":
            causes.append(invalid(f"{tfield}.operator", operator,
                                  "operator must be Exists when `key` is empty, which means \"match all values and all keys\""))
        effect = toleration.get("effect")
        if effect and effect not in TAINT_EFFECTS:
            causes.append(not_supported(f"{tfield}.effect", effect, TAINT_EFFECTS))
    return causes


SPREAD_ACTIONS = ["DoNotSchedule", "ScheduleAnyway"]


def _spread_causes(constraints: list, field: str) -> list[dict]:
    """pkg/apis/core/validation ValidateTopologySpreadConstraints: maxSkew and minDomains positive,
    minDomains only with DoNotSchedule, a topology key, a known action, each {key, action} once."""
    causes: list[dict] = []
    seen: set[tuple] = set()
    for index, constraint in enumerate(constraints):
        if not isinstance(constraint, dict):
            continue
        cfield = f"{field}[{index}]"
        skew = constraint.get("maxSkew")
        if isinstance(skew, int) and skew <= 0:
            causes.append(invalid(f"{cfield}.maxSkew", skew, "must be greater than zero"))
        key, action = constraint.get("topologyKey"), constraint.get("whenUnsatisfiable")
        if not key:
            causes.append(required(f"{cfield}.topologyKey", "can not be empty"))
        if action not in SPREAD_ACTIONS:
            causes.append(not_supported(f"{cfield}.whenUnsatisfiable", action, SPREAD_ACTIONS))
        domains = constraint.get("minDomains")
        if domains is not None:
            if isinstance(domains, int) and domains <= 0:
                causes.append(invalid(f"{cfield}.minDomains", domains, "must be greater than zero"))
            elif action != "DoNotSchedule":
                causes.append(invalid(f"{cfield}.minDomains", domains,
                                      f"can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"))
        if (key, action) in seen:
            causes.append(duplicate(f"{cfield}.{{topologyKey, whenUnsatisfiable}}", f"{{{key}, {action}}}"))
        seen.add((key, action))
    return causes


def pod_spec_causes(spec: Any, field: str) -> list[dict]:
    """ValidatePodSpec (the defaulted spec of a pod or a pod template)."""
    if not isinstance(spec, dict):
        return []
    causes, volumes = _volume_causes(as_list(spec.get("volumes")), f"{field}.volumes")
    containers = as_list(spec.get("containers"))
    if not containers:
        causes.append(required(f"{field}.containers"))
    names: set[str] = set()
    for list_name in CONTAINER_LISTS:
        for index, container in enumerate(as_list(spec.get(list_name))):
            if not isinstance(container, dict):
                continue
            cfield = f"{field}.{list_name}[{index}]"
            causes += unique_name_causes(f"{cfield}.name", container.get("name"), names)
            causes += _container_causes(container, cfield, volumes, is_init=list_name == "initContainers")
    if spec.get("restartPolicy") not in RESTART_POLICIES:
        causes.append(not_supported(f"{field}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES))
    if spec.get("dnsPolicy") not in DNS_POLICIES:
        causes.append(not_supported(f"{field}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES))
    causes += non_negative(f"{field}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline <= 0:
        causes.append(invalid(f"{field}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive"))
    causes += _toleration_causes(as_list(spec.get("tolerations")), f"{field}.tolerations")
    causes += _spread_causes(as_list(spec.get("topologySpreadConstraints")), f"{field}.topologySpreadConstraints")
    return causes


def pod_template_causes(template: Any, field: str) -> list[dict]:
    """ValidatePodTemplateSpec: the template's labels and its pod spec."""
    if not isinstance(template, dict):
        return [required(field)]
    labels = as_dict(template.get("metadata")).get("labels")
    return (label_causes(labels if isinstance(labels, dict) else None, f"{field}.metadata.labels")
            + pod_spec_causes(template.get("spec"), f"{field}.spec"))


# -- the Pod kind -----------------------------------------------------------------------------

def qos_class(spec: dict) -> str:
    """pkg/apis/core/v1/helper/qos GetPodQOS: BestEffort without any request or limit, Guaranteed
    when every container limits cpu and memory with requests equal to the limits, else Burstable."""
    containers = as_list(spec.get("containers")) + as_list(spec.get("initContainers"))
    requests_any, limits_all = False, True
    for c in containers:
        res = as_dict(as_dict(c).get("resources"))
        req, lim = as_dict(res.get("requests")), as_dict(res.get("limits"))
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                limits_all = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if limits_all else "Burstable"


_POD_UPDATE_MSG = ("pod updates may not change fields other than `spec.containers[*].image`,"
                   "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                   "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                   "previously negative)")


@register
class PodStrategy(Strategy):
    """pkg/registry/core/pod/strategy.go."""

    kind = "Pod"

    def default(self, obj: dict) -> None:
        spec = obj.get("spec")
        default_pod_spec(spec)
        if not isinstance(spec, dict):
            return
        # SetDefaults_Pod: a limit without a request requests the limit (pods only, not templates).
        for list_name in CONTAINER_LISTS:
            for container in as_list(spec.get(list_name)):
                resources = as_dict(as_dict(container).get("resources"))
                if isinstance(resources.get("limits"), dict):
                    requests = resources.setdefault("requests", {})
                    if isinstance(requests, dict):
                        for key, value in resources["limits"].items():
                            requests.setdefault(key, value)
        spec.setdefault("enableServiceLinks", True)

    def prepare_for_create(self, obj: dict, ctx) -> None:
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(as_dict(obj.get("spec")))}

    def validate(self, obj: dict) -> list[dict]:
        return pod_spec_causes(obj.get("spec"), "spec")

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        causes = self.validate(obj)
        new_spec, old_spec = as_dict(obj.get("spec")), as_dict(old.get("spec"))
        # ValidatePodUpdate: copy what may change from the new spec into the old one; anything else differing is refused.
        allowed = copy.deepcopy(old_spec)
        for list_name in CONTAINER_LISTS:
            old_list, new_list = as_list(allowed.get(list_name)), as_list(new_spec.get(list_name))
            if len(old_list) == len(new_list):
                for old_c, new_c in zip(old_list, new_list):
                    if isinstance(old_c, dict) and isinstance(new_c, dict) and "image" in new_c:
                        old_c["image"] = new_c["image"]
        if "activeDeadlineSeconds" in new_spec:
            allowed["activeDeadlineSeconds"] = new_spec["activeDeadlineSeconds"]
        old_tolerations = as_list(old_spec.get("tolerations"))
        new_tolerations = as_list(new_spec.get("tolerations"))
        if all(t in new_tolerations for t in old_tolerations) and "tolerations" in new_spec:
            allowed["tolerations"] = new_spec["tolerations"]
        if allowed != new_spec:
            causes.append(forbidden("spec", _POD_UPDATE_MSG))
        return causes
