"""Server-side printing: what `kubectl get` shows, as kube-apiserver computes it.

kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the columns
the server sends (priority 0 always, priority 1 with `-o wide`). The columns and the way each cell
is worked out follow kubernetes/kubernetes pkg/printers/internalversion/printers.go (v1.31/1.32):
one entry per kind in PRINTERS, a column list and a function from an object to its cells. The
server always fills the wide cells (the apiserver's TableConvertor prints with Wide: true); kubectl
drops the priority-1 columns unless `-o wide`.

Kinds without an upstream printer get the generic columns the apiserver gives them (Name,
Created At); custom resources get their CRD's printer columns (Karpenter's NodePool).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .resources import Resource

TABLE_GROUP = "meta.k8s.io"
_ROLE_PREFIX = "node-role.kubernetes.io/"
_LOAD_BALANCER_WIDTH = 16
_DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format, "description": self.description,
                "priority": self.priority}


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    cells: Callable[[dict], list[Any]]


# ---------------------------------------------------------------------------------------------
# Helpers, as printers.go and apimachinery have them

def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def since(value: str | None) -> str:
    """translateTimestampSince: '<unknown>' for no time."""
    when = _parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration((datetime.now(timezone.utc) - when).total_seconds())


def _age(obj: dict) -> str:
    return since(obj["metadata"].get("creationTimestamp"))


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _containers(template_spec: dict) -> tuple[str, str]:
    """layoutContainerCells: names and images, comma separated."""
    containers = template_spec.get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def format_labels(labels: dict | None) -> str:
    """labels.FormatLabels: sorted k=v pairs, '<none>' when empty."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def format_label_selector(selector: dict | None) -> str:
    """metav1.FormatLabelSelector: '<none>' for an empty selector, else the selector's string form."""
    if not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions")):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(sorted(parts)) or "<none>"


def access_modes(modes: list[str] | None) -> str:
    """helper.GetAccessModesAsString: short names in a fixed order."""
    short = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP"))
    have = set(modes or [])
    return ",".join(s for mode, s in short if mode in have)


def _has_condition(conditions: list[dict] | None, type_: str) -> bool:
    for condition in conditions or []:
        if condition.get("type") == type_:
            return condition.get("status") == "True"
    return False


def _ingress_address(load_balancer: dict | None, wide: bool = True) -> str:
    found = sorted({i.get("ip") or i.get("hostname") for i in (load_balancer or {}).get("ingress") or []
                    if i.get("ip") or i.get("hostname")})
    text = ",".join(found)
    if not wide and len(text) > _LOAD_BALANCER_WIDTH:
        text = text[:_LOAD_BALANCER_WIDTH - 3] + "..."
    return text


# ---------------------------------------------------------------------------------------------
# Per kind

NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
AGE = Column("Age", description="CreationTimestamp is a timestamp representing the server time when this object "
                                "was created.")
CONTAINERS = Column("Containers", priority=1, description="Names of each container in the template.")
IMAGES = Column("Images", priority=1, description="Images referenced by each container in the template.")
SELECTOR = Column("Selector", priority=1, description="A label query over pods that should match the replica count.")


def _restartable_init(container: dict | None) -> bool:
    return bool(container) and container.get("restartPolicy") == "Always"


def pod_cells(pod: dict) -> list[Any]:
    """printPod: READY, STATUS (the aggregate reason), RESTARTS (with 'N (Xm ago)'), IP, NODE..."""
    spec, status, meta = _spec(pod), _status(pod), pod["metadata"]
    restarts = restartable_restarts = 0
    total = len(spec.get("containers") or [])
    ready = 0
    last_restart = last_restartable_restart = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total += sum(1 for c in init_specs.values() if _restartable_init(c))

    def later(current: datetime | None, value: str | None) -> datetime | None:
        when = _parse_time(value)
        return when if when is not None and (current is None or when > current) else current

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for index, container in enumerate(init_statuses):
        restarts += int(container.get("restartCount") or 0)
        terminated_before = ((container.get("lastState") or {}).get("terminated") or {})
        last_restart = later(last_restart, terminated_before.get("finishedAt"))
        restartable = _restartable_init(init_specs.get(container.get("name")))
        if restartable:
            restartable_restarts += int(container.get("restartCount") or 0)
            last_restartable_restart = later(last_restartable_restart, terminated_before.get("finishedAt"))
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if restartable and container.get("started"):
            ready += 1 if container.get("ready") else 0
            continue
        if terminated is not None:
            if not terminated.get("reason"):
                reason = f"Init:Signal:{terminated['signal']}" if terminated.get("signal") \
                    else f"Init:ExitCode:{terminated.get('exitCode', 0)}"
            else:
                reason = "Init:" + terminated["reason"]
        elif waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    if not initializing or _has_condition(status.get("conditions"), "Initialized"):
        restarts, last_restart = restartable_restarts, last_restartable_restart
        has_running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount") or 0)
            last_restart = later(last_restart, (((container.get("lastState") or {}).get("terminated") or {})
                                                .get("finishedAt")))
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                reason = f"Signal:{terminated['signal']}" if terminated.get("signal") \
                    else f"ExitCode:{terminated.get('exitCode', 0)}"
            elif container.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _has_condition(status.get("conditions"), "Ready") else "NotReady"
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((datetime.now(timezone.utc) - last_restart).total_seconds())} ago)"
    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        gates_text = f"{sum(1 for g in gates if conditions.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    return [meta["name"], f"{ready}/{total}", reason, restarts_text, _age(pod),
            (ips[0].get("ip") if ips else "") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gates_text]


def node_cells(node: dict) -> list[Any]:
    status, info = _status(node), _status(node).get("nodeInfo") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    states = [] if "Ready" not in conditions else ["Ready" if conditions["Ready"] == "True" else "NotReady"]
    states = states or ["Unknown"]
    if _spec(node).get("unschedulable"):
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in (node["metadata"].get("labels") or {}).items():
        if key.startswith(_ROLE_PREFIX) and key[len(_ROLE_PREFIX):]:
            roles.add(key[len(_ROLE_PREFIX):])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)

    def address(type_: str) -> str:
        return next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == type_), "<none>")

    return [node["metadata"]["name"], ",".join(states), ",".join(sorted(roles)) or "<none>", _age(node),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def deployment_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [obj["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _age(obj), names, images,
            format_label_selector(spec.get("selector"))]


def replicaset_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [obj["metadata"]["name"], spec.get("replicas", 0), status.get("replicas", 0),
            status.get("readyReplicas", 0), _age(obj), names, images, format_label_selector(spec.get("selector"))]


def daemonset_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    template_spec = ((spec.get("template") or {}).get("spec")) or {}
    names, images = _containers(template_spec)
    return [obj["metadata"]["name"], status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            format_labels(template_spec.get("nodeSelector")), _age(obj), names, images,
            format_label_selector(spec.get("selector"))]


def statefulset_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [obj["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}", _age(obj),
            names, images]


def job_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    succeeded = status.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    start, end = _parse_time(status.get("startTime")), _parse_time(status.get("completionTime"))
    duration = "" if start is None else human_duration(
        ((end or datetime.now(timezone.utc)) - start).total_seconds())
    conditions = status.get("conditions")
    if _has_condition(conditions, "Complete"):
        state = "Complete"
    elif _has_condition(conditions, "Failed"):
        state = "Failed"
    elif obj["metadata"].get("deletionTimestamp"):
        state = "Terminating"
    elif _has_condition(conditions, "Suspended"):
        state = "Suspended"
    elif _has_condition(conditions, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [obj["metadata"]["name"], state, completions, duration, _age(obj), names, images,
            format_label_selector(spec.get("selector"))]


def cronjob_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    job_spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    names, images = _containers(((job_spec.get("template") or {}).get("spec")) or {})
    last = since(status["lastScheduleTime"]) if status.get("lastScheduleTime") else "<none>"
    return [obj["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            bool(spec.get("suspend", False)), len(status.get("active") or []), last, _age(obj), names, images,
            format_label_selector(job_spec.get("selector"))]


def service_cells(obj: dict) -> list[Any]:
    spec = _spec(obj)
    type_ = spec.get("type", "")
    external_ips = spec.get("externalIPs") or []
    if type_ in ("ClusterIP", "NodePort"):
        external = ",".join(external_ips) or "<none>"
    elif type_ == "LoadBalancer":
        lb = _ingress_address(_status(obj).get("loadBalancer"), wide=True)
        external = ",".join(([*lb.split(",")] if lb else []) + external_ips) or "<pending>"
    elif type_ == "ExternalName":
        external = spec.get("externalName", "")
    else:
        external = "<unknown>"
    ports = ",".join(f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort")
                     else f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    cluster_ips = spec.get("clusterIPs") or []
    return [obj["metadata"]["name"], type_, cluster_ips[0] if cluster_ips else "<none>", external,
            ports or "<none>", _age(obj), format_labels(spec.get("selector"))]


def ingress_cells(obj: dict) -> list[Any]:
    spec = _spec(obj)
    rules = spec.get("rules") or []
    hosts = [r["host"] for r in rules if r.get("host")][:3]
    hosts_text = ",".join(hosts) or "*"
    if len(rules) > 3:
        hosts_text = f"{hosts_text} + {len(rules) - 3} more..."
    # The apiserver prints with Wide: true, so the address is not clipped.
    return [obj["metadata"]["name"], spec.get("ingressClassName") or "<none>", hosts_text,
            _ingress_address(_status(obj).get("loadBalancer"), wide=True), "80, 443" if spec.get("tls") else "80",
            _age(obj)]


def ingressclass_cells(obj: dict) -> list[Any]:
    spec = _spec(obj)
    params = spec.get("parameters")
    text = "<none>"
    if params:
        text = params.get("kind", "") + (f".{params['apiGroup']}" if params.get("apiGroup") else "") + \
            f"/{params.get('name', '')}"
    return [obj["metadata"]["name"], spec.get("controller", ""), text, _age(obj)]


def pvc_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    phase = "Terminating" if obj["metadata"].get("deletionTimestamp") else status.get("phase", "")
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = access_modes(status.get("accessModes"))
        capacity = (status.get("capacity") or {}).get("storage", "")
    storage_class = spec.get("storageClassName")
    if storage_class is None:
        storage_class = (obj["metadata"].get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class", "")
    return [obj["metadata"]["name"], phase, spec.get("volumeName", ""), capacity, modes, storage_class,
            spec.get("volumeAttributesClassName") or "<unset>", _age(obj), spec.get("volumeMode") or "<unset>"]


def pv_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    claim = spec.get("claimRef")
    claim_text = f"{claim.get('namespace', '')}/{claim.get('name', '')}" if claim else ""
    phase = "Terminating" if obj["metadata"].get("deletionTimestamp") else status.get("phase", "")
    storage_class = spec.get("storageClassName")
    if storage_class is None:
        storage_class = (obj["metadata"].get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class", "")
    return [obj["metadata"]["name"], (spec.get("capacity") or {}).get("storage", "0"),
            access_modes(spec.get("accessModes")), spec.get("persistentVolumeReclaimPolicy", ""), phase, claim_text,
            storage_class, spec.get("volumeAttributesClassName") or "<unset>", status.get("reason", ""), _age(obj),
            spec.get("volumeMode") or "<unset>"]


def storageclass_cells(obj: dict) -> list[Any]:
    annotations = obj["metadata"].get("annotations") or {}
    name = obj["metadata"]["name"]
    if any(annotations.get(a) == "true" for a in _DEFAULT_CLASS_ANNOTATIONS):
        name += " (default)"
    return [name, obj.get("provisioner", ""), obj.get("reclaimPolicy") or "Delete",
            obj.get("volumeBindingMode") or "Immediate", bool(obj.get("allowVolumeExpansion", False)), _age(obj)]


def event_cells(obj: dict) -> list[Any]:
    first = since(obj.get("firstTimestamp")) if obj.get("firstTimestamp") else since(obj.get("eventTime"))
    last = since(obj.get("lastTimestamp")) if obj.get("lastTimestamp") else first
    count = obj.get("count") or 0
    series = obj.get("series")
    if series:
        last, count = since(series.get("lastObservedTime")), series.get("count", 0)
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    involved = obj.get("involvedObject") or {}
    target = f"{involved.get('kind', '').lower()}/{involved['name']}" if involved.get("name") \
        else involved.get("kind", "").lower()
    source = obj.get("source") or {}
    component = source.get("component") or obj.get("reportingComponent") or obj.get("reportingController") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return [last, obj.get("type", ""), obj.get("reason", ""), target, involved.get("fieldPath", ""),
            component if not instance else f"{component}, {instance}", (obj.get("message") or "").strip(), first,
            count, obj["metadata"]["name"]]


def endpoints_cells(obj: dict) -> list[Any]:
    listed, count = [], 0
    for subset in obj.get("subsets") or []:
        addresses = subset.get("addresses") or []
        ports = subset.get("ports") or [None]
        for port in ports:
            count += len(addresses)
            for address in addresses:
                if len(listed) < 3:
                    ip = address.get("ip", "")
                    listed.append(ip if port is None else f"{ip}:{port.get('port')}")
    if not obj.get("subsets"):
        text = "<none>"
    else:
        text = ",".join(listed) + (f" + {count - 3} more..." if count > 3 else "")
    return [obj["metadata"]["name"], text, _age(obj)]


def csidriver_cells(obj: dict) -> list[Any]:
    spec = _spec(obj)
    tokens = spec.get("tokenRequests")
    return [obj["metadata"]["name"], spec.get("attachRequired", True), spec.get("podInfoOnMount", False),
            spec.get("storageCapacity", False),
            "<unset>" if tokens is None else ",".join(t.get("audience", "") for t in tokens),
            spec.get("requiresRepublish", False), ",".join(spec.get("volumeLifecycleModes") or []) or "<none>",
            _age(obj)]


def binding_cells(obj: dict) -> list[Any]:
    ref = obj.get("roleRef") or {}
    subjects = obj.get("subjects") or []

    def of(kind: str) -> str:
        if kind == "ServiceAccount":
            return ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in subjects if s.get("kind") == kind)
        return ", ".join(s.get("name", "") for s in subjects if s.get("kind") == kind)

    return [obj["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(obj), of("User"),
            of("Group"), of("ServiceAccount")]


def _created_at(obj: dict) -> list[Any]:
    return [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp", "")]


def _nodepool_cells(obj: dict) -> list[Any]:
    template_spec = ((_spec(obj).get("template") or {}).get("spec")) or {}
    ready = next((c.get("status") for c in _status(obj).get("conditions") or [] if c.get("type") == "Ready"), None)
    nodes = (_status(obj).get("resources") or {}).get("nodes")
    return [obj["metadata"]["name"], (template_spec.get("nodeClassRef") or {}).get("name"), nodes, ready, _age(obj)]


def pdb_cells(obj: dict) -> list[Any]:
    spec = _spec(obj)
    text = (lambda v: "N/A" if v is None else str(v))
    return [obj["metadata"]["name"], text(spec.get("minAvailable")), text(spec.get("maxUnavailable")),
            _status(obj).get("disruptionsAllowed", 0), _age(obj)]


def endpointslice_cells(obj: dict) -> list[Any]:
    def listed(values: list[str]) -> str:
        text = ",".join(values[:3])
        if len(values) > 3:
            return f"{text} + {len(values) - 3} more..."
        return text or "<unset>"

    ports = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "*") for p in obj.get("ports") or []]
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    return [obj["metadata"]["name"], obj.get("addressType", ""), listed(ports), listed(addresses), _age(obj)]


def hpa_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    ref = spec.get("scaleTargetRef") or {}
    # formatHPAMetrics, for Resource metrics (the kind EKS clusters use); the sandbox measures nothing.
    shown = []
    for metric in spec.get("metrics") or []:
        resource = metric.get("resource") or {}
        target = resource.get("target") or {}
        if metric.get("type") == "Resource" and target.get("averageUtilization") is not None:
            shown.append(f"{resource.get('name')}: <unknown>/{target['averageUtilization']}%")
        elif metric.get("type") == "Resource" and target.get("averageValue") is not None:
            shown.append(f"{resource.get('name')}: <unknown>/{target['averageValue']}")
        else:
            shown.append("<unknown>/<unknown>")
    metrics = ", ".join(shown[:2]) + (f" + {len(shown) - 2} more..." if len(shown) > 2 else "") or "<none>"
    return [obj["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", metrics,
            str(spec.get("minReplicas", 1)), spec.get("maxReplicas", 0), status.get("currentReplicas", 0), _age(obj)]


def _c(name: str, type_: str = "string", priority: int = 0) -> Column:
    return Column(name, type_, priority)


_BINDING = (NAME, _c("Role"), AGE, _c("Users", priority=1), _c("Groups", priority=1),
            _c("ServiceAccounts", priority=1))
_CREATED_AT = (NAME, Column("Created At", "date", description="CreationTimestamp is a timestamp representing the "
                                                              "server time when this object was created."))

PRINTERS: dict[str, Printer] = {
    "Pod": Printer((NAME, _c("Ready"), _c("Status"), _c("Restarts"), AGE, _c("IP", priority=1),
                    _c("Node", priority=1), _c("Nominated Node", priority=1), _c("Readiness Gates", priority=1)),
                   pod_cells),
    "Node": Printer((NAME, _c("Status"), _c("Roles"), AGE, _c("Version"), _c("Internal-IP", priority=1),
                     _c("External-IP", priority=1), _c("OS-Image", priority=1), _c("Kernel-Version", priority=1),
                     _c("Container-Runtime", priority=1)), node_cells),
    "Deployment": Printer((NAME, _c("Ready"), _c("Up-to-date", "integer"), _c("Available", "integer"), AGE,
                           CONTAINERS, IMAGES, SELECTOR), deployment_cells),
    "ReplicaSet": Printer((NAME, _c("Desired", "integer"), _c("Current", "integer"), _c("Ready", "integer"), AGE,
                           CONTAINERS, IMAGES, SELECTOR), replicaset_cells),
    "DaemonSet": Printer((NAME, _c("Desired", "integer"), _c("Current", "integer"), _c("Ready", "integer"),
                          _c("Up-to-date", "integer"), _c("Available", "integer"), _c("Node Selector"), AGE,
                          CONTAINERS, IMAGES, SELECTOR), daemonset_cells),
    "StatefulSet": Printer((NAME, _c("Ready"), AGE, CONTAINERS, IMAGES), statefulset_cells),
    "Job": Printer((NAME, _c("Status"), _c("Completions"), _c("Duration"), AGE, CONTAINERS, IMAGES, SELECTOR),
                   job_cells),
    "CronJob": Printer((NAME, _c("Schedule"), _c("Timezone"), _c("Suspend", "boolean"), _c("Active", "integer"),
                        _c("Last Schedule"), AGE, CONTAINERS, IMAGES, SELECTOR), cronjob_cells),
    "Service": Printer((NAME, _c("Type"), _c("Cluster-IP"), _c("External-IP"), _c("Port(s)"), AGE,
                        _c("Selector", priority=1)), service_cells),
    "Ingress": Printer((NAME, _c("Class"), _c("Hosts"), _c("Address"), _c("Ports"), AGE), ingress_cells),
    "IngressClass": Printer((NAME, _c("Controller"), _c("Parameters"), AGE), ingressclass_cells),
    "PersistentVolumeClaim": Printer((NAME, _c("Status"), _c("Volume"), _c("Capacity"), _c("Access Modes"),
                                      _c("StorageClass"), _c("VolumeAttributesClass"), AGE,
                                      _c("VolumeMode", priority=1)), pvc_cells),
    "PersistentVolume": Printer((NAME, _c("Capacity"), _c("Access Modes"), _c("Reclaim Policy"), _c("Status"),
                                 _c("Claim"), _c("StorageClass"), _c("VolumeAttributesClass"), _c("Reason"), AGE,
                                 _c("VolumeMode", priority=1)), pv_cells),
    "StorageClass": Printer((NAME, _c("Provisioner"), _c("ReclaimPolicy"), _c("VolumeBindingMode"),
                             _c("AllowVolumeExpansion"), AGE), storageclass_cells),
    "Event": Printer((_c("Last Seen"), _c("Type"), _c("Reason"), _c("Object"), _c("Subobject", priority=1),
                      _c("Source", priority=1), _c("Message"), _c("First Seen", priority=1),
                      _c("Count", priority=1), Column("Name", priority=1, format="name")), event_cells),
    "Namespace": Printer((NAME, _c("Status"), AGE),
                         lambda o: [o["metadata"]["name"], _status(o).get("phase", ""), _age(o)]),
    "Secret": Printer((NAME, _c("Type"), _c("Data"), AGE),
                      lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), _age(o)]),
    "ConfigMap": Printer((NAME, _c("Data"), AGE),
                         lambda o: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                                    _age(o)]),
    "ServiceAccount": Printer((NAME, _c("Secrets"), AGE),
                              lambda o: [o["metadata"]["name"], len(o.get("secrets") or []), _age(o)]),
    "Endpoints": Printer((NAME, _c("Endpoints"), AGE), endpoints_cells),
    "CSIDriver": Printer((NAME, _c("AttachRequired", "boolean"), _c("PodInfoOnMount", "boolean"),
                          _c("StorageCapacity", "boolean"), _c("TokenRequests"), _c("RequiresRepublish", "boolean"),
                          _c("Modes"), AGE), csidriver_cells),
    "RoleBinding": Printer(_BINDING, binding_cells),
    "ClusterRoleBinding": Printer(_BINDING, binding_cells),
    "Role": Printer(_CREATED_AT, _created_at),
    "ClusterRole": Printer(_CREATED_AT, _created_at),
    "Lease": Printer((NAME, _c("Holder"), AGE),
                     lambda o: [o["metadata"]["name"], _spec(o).get("holderIdentity", ""), _age(o)]),
    "PodDisruptionBudget": Printer((NAME, _c("Min Available"), _c("Max Unavailable"),
                                    _c("Allowed Disruptions", "integer"), AGE), pdb_cells),
    "EndpointSlice": Printer((NAME, _c("AddressType"), _c("Ports"), _c("Endpoints"), AGE), endpointslice_cells),
    "HorizontalPodAutoscaler": Printer((NAME, _c("Reference"), _c("Targets"), _c("MinPods"), _c("MaxPods"),
                                        _c("Replicas"), AGE), hpa_cells),
    "NetworkPolicy": Printer((NAME, _c("Pod-Selector"), AGE), lambda o: [
        o["metadata"]["name"], format_label_selector(_spec(o).get("podSelector")), _age(o)]),
    "PriorityClass": Printer((NAME, _c("Value", "integer"), _c("Global-Default", "boolean"), AGE,
                              _c("PreemptionPolicy", priority=1)), lambda o: [
        o["metadata"]["name"], o.get("value", 0), bool(o.get("globalDefault", False)), _age(o),
        o.get("preemptionPolicy", "")]),
    # Karpenter's CRD printer columns (karpenter.sh_nodepools.yaml additionalPrinterColumns).
    "NodePool": Printer((NAME, _c("NodeClass"), _c("Nodes"), _c("Ready"), AGE), _nodepool_cells),
}
DEFAULT = Printer(_CREATED_AT, _created_at)


def printer_for(res: Resource) -> Printer:
    return PRINTERS.get(res.kind, DEFAULT)


def wants_table(accept: str | None) -> str | None:
    """The Table version an Accept header asks for ('v1' or 'v1beta1'), None for plain JSON.

    kubectl sends `application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;
    g=meta.k8s.io,application/json`: the first acceptable entry wins, as on a real server.
    """
    for entry in (accept or "").split(","):
        media, *raw = [p.strip() for p in entry.split(";")]
        params = dict(p.split("=", 1) for p in raw if "=" in p)
        if params.get("as") == "Table" and params.get("g") == TABLE_GROUP and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
        if media in ("application/json", "*/*", "application/*") and "as" not in params:
            return None
    return None


def _row_object(obj: dict, include: str, version: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": f"{TABLE_GROUP}/{version}", "metadata": obj["metadata"]}


def table(res: Resource, objects: list[dict], *, version: str = "v1", include_object: str | None = None,
          list_metadata: dict | None = None) -> dict:
    """A meta.k8s.io Table of `objects` (a list's items, or one object) with this kind's columns."""
    printer = printer_for(res)
    include = include_object or "PartialObjectMetadata"
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj)}
        row_object = _row_object(obj, include, version)
        if row_object is not None:
            row["object"] = row_object
        if res.kind == "Pod" and (_status(obj).get("phase") in ("Succeeded", "Failed")):
            row["conditions"] = [{"type": "Completed", "status": "True", "reason": _status(obj)["phase"],
                                  "message": "The pod has completed successfully." if _status(obj)["phase"] ==
                                  "Succeeded" else "The pod failed."}]
        rows.append(row)
    return {"kind": "Table", "apiVersion": f"{TABLE_GROUP}/{version}", "metadata": list_metadata or {},
            "columnDefinitions": [c.definition() for c in printer.columns], "rows": rows}


def check_include_object(value: str | None) -> None:
    from .registry import bad_request  # the registry's error helper; imported late to keep this module leaf-like

    if value not in (None, "", "None", "Object", "PartialObjectMetadata"):
        raise bad_request(f'includeObject: Unsupported value: "{value}": supported values: "None", "Object", '
                          '"PartialObjectMetadata"')
