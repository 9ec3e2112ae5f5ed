"""networking.k8s.io/v1: Ingress, NetworkPolicy.

Validation after pkg/apis/networking/validation/validation.go (ValidateIngressSpec,
validateHTTPIngressRuleValue, validateIngressBackend): every path has a pathType (there is no
default in v1), Exact and Prefix paths are absolute, a backend names a service and exactly one
of a port name or number. NetworkPolicy after ValidateNetworkPolicySpec, ValidateNetworkPolicyPort,
ValidateNetworkPolicyPeer and ValidateIPBlock there, its defaults after pkg/apis/networking/v1/
defaults.go (a port's protocol is TCP; policyTypes is Ingress, plus Egress when egress rules exist).
"""

from __future__ import annotations

import ipaddress
import re

from ..validation import DNS1123_SUBDOMAIN, SUBDOMAIN_MSG
from .base import Strategy, register, spec_of
from .fields import as_dict, as_list, forbidden, invalid, not_supported, required
from .pods import PORT_RANGE_MSG, port_name_causes
from .selectors import selector_causes

PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]


def _backend_causes(backend: dict, field: str) -> list[dict]:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid(field, "", "cannot set both resource and service backends")]
    if service is None and resource is None:
        return [invalid(field, "", "resource or service backend is required")]
    if resource is not None:
        return []
    service = as_dict(service)
    causes = [] if service.get("name") else [required(f"{field}.service.name")]
    port = as_dict(service.get("port"))
    name, number = port.get("name"), port.get("number")
    if name and number:
        causes.append(invalid(f"{field}.service.port", port, "cannot set both port name & port number"))
    elif name:
        causes += port_name_causes(f"{field}.service.port.name", name)
    elif number:
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(invalid(f"{field}.service.port.number", number, PORT_RANGE_MSG))
    else:
        causes.append(required(f"{field}.service.port", "port name or number is required"))
    return causes


@register
class IngressStrategy(Strategy):
    kind = "Ingress"

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return []
        causes: list[dict] = []
        rules = as_list(spec.get("rules"))
        if not rules and spec.get("defaultBackend") is None:
            causes.append(invalid("spec", spec, "either `defaultBackend` or `rules` must be specified"))
        if isinstance(spec.get("defaultBackend"), dict):
            causes += _backend_causes(spec["defaultBackend"], "spec.defaultBackend")
        class_name = spec.get("ingressClassName")
        if isinstance(class_name, str) and not re.fullmatch(DNS1123_SUBDOMAIN, class_name):
            causes.append(invalid("spec.ingressClassName", class_name, SUBDOMAIN_MSG))
        for rindex, rule in enumerate(rules):
            rule = as_dict(rule)
            http = rule.get("http")
            if http is None:
                continue
            paths = as_list(as_dict(http).get("paths"))
            if not paths:
                causes.append(required(f"spec.rules[{rindex}].http.paths"))
            for pindex, path in enumerate(paths):
                path = as_dict(path)
                pfield = f"spec.rules[{rindex}].http.paths[{pindex}]"
                path_type = path.get("pathType")
                if path_type is None:
                    causes.append(required(f"{pfield}.pathType", "pathType must be specified"))
                elif path_type not in PATH_TYPES:
                    causes.append(not_supported(f"{pfield}.pathType", path_type, PATH_TYPES))
                elif path_type in ("Exact", "Prefix"):
                    value = path.get("path") or ""
                    if not value.startswith("/"):
                        causes.append(invalid(f"{pfield}.path", value, "must be an absolute path"))
                causes += _backend_causes(as_dict(path.get("backend")), f"{pfield}.backend")
        return causes


PROTOCOLS = ["TCP", "UDP", "SCTP"]
POLICY_TYPES = ["Ingress", "Egress"]
CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"  # IsValidCIDRForLegacyField


def _port_number_causes(field: str, value) -> list[dict]:
    return [] if isinstance(value, int) and 1 <= value <= 65535 else [invalid(field, value, PORT_RANGE_MSG)]


def _policy_port_causes(port: dict, field: str) -> list[dict]:
    causes = []
    if port.get("protocol") is not None and port["protocol"] not in PROTOCOLS:
        causes.append(not_supported(f"{field}.protocol", port["protocol"], PROTOCOLS))
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            causes.append(invalid(f"{field}.endPort", end, "may not be specified when `port` is not specified"))
    elif isinstance(number, int):
        causes += _port_number_causes(f"{field}.port", number)
        if end is not None:
            if isinstance(end, int) and end < number:
                causes.append(invalid(f"{field}.endPort", end, "must be greater than or equal to `port`"))
            causes += _port_number_causes(f"{field}.endPort", end)
    else:
        if end is not None:
            causes.append(invalid(f"{field}.endPort", end, "may not be specified when `port` is non-numeric"))
        causes += port_name_causes(f"{field}.port", number)
    return causes


def _cidr(value) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)  # ParseCIDRSloppy: host bits allowed
    except (TypeError, ValueError):
        return None


def _ip_block_causes(block: dict, field: str) -> list[dict]:
    cidr = block.get("cidr")
    if not cidr:
        return [required(f"{field}.cidr")]
    network = _cidr(cidr)
    if network is None:
        return [invalid(f"{field}.cidr", cidr, CIDR_MSG)]
    causes = []
    for index, text in enumerate(as_list(block.get("except"))):
        excepted = _cidr(text)
        if excepted is None:
            causes.append(invalid(f"{field}.except[{index}]", text, CIDR_MSG))
        elif excepted.version != network.version or not excepted.subnet_of(network) or excepted == network:
            causes.append(invalid(f"{field}.except[{index}]", text, "must be a strict subset of `cidr`"))
    return causes


def _peer_causes(peer: dict, field: str) -> list[dict]:
    causes, peers = [], 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            peers += 1
            causes += selector_causes(peer[key], f"{field}.{key}", empty_message=None)
    if peer.get("ipBlock") is not None:
        peers += 1
        causes += _ip_block_causes(as_dict(peer["ipBlock"]), f"{field}.ipBlock")
    if peers == 0:
        causes.append(required(field, "must specify a peer"))
    elif peers > 1 and peer.get("ipBlock") is not None:
        causes.append(forbidden(field, "may not specify both ipBlock and another peer"))
    return causes


def policy_peers(policy: dict, direction: str) -> list[dict]:
    """The rules of one direction ("ingress" or "egress") of a NetworkPolicy."""
    return [as_dict(rule) for rule in as_list(as_dict(policy.get("spec")).get(direction))]


@register
class NetworkPolicyStrategy(Strategy):
    kind = "NetworkPolicy"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is None:
            return
        for direction in ("ingress", "egress"):
            for rule in policy_peers(obj, direction):
                for port in as_list(rule.get("ports")):
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return []
        causes = selector_causes(spec.get("podSelector") or {}, "spec.podSelector", empty_message=None)
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for index, rule in enumerate(policy_peers(obj, direction)):
                rfield = f"spec.{direction}[{index}]"
                for pindex, port in enumerate(as_list(rule.get("ports"))):
                    causes += _policy_port_causes(as_dict(port), f"{rfield}.ports[{pindex}]")
                for pindex, peer in enumerate(as_list(rule.get(peers_key))):
                    causes += _peer_causes(as_dict(peer), f"{rfield}.{peers_key}[{pindex}]")
        types = as_list(spec.get("policyTypes"))
        if len(types) > len(POLICY_TYPES):
            return causes + [invalid("spec.policyTypes", types, "may not specify more than two policyTypes")]
        for index, kind in enumerate(types):
            if kind not in POLICY_TYPES:
                causes.append(not_supported(f"spec.policyTypes[{index}]", kind, POLICY_TYPES))
        return causes
