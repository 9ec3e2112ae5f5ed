"""networking.k8s.io/v1: Ingress.

Validation after pkg/apis/networking/validation/validation.go (ValidateIngressSpec,
validateHTTPIngressRuleValue, validateIngressBackend): every path has a pathType (there is no
default in v1), Exact and Prefix paths are absolute, a backend names a service and exactly one
of a port name or number.
"""

from __future__ import annotations

import re

from ..validation import DNS1123_SUBDOMAIN, SUBDOMAIN_MSG
from .base import Strategy, register, spec_of
from .fields import as_dict, as_list, invalid, not_supported, required
from .pods import PORT_RANGE_MSG, port_name_causes

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
