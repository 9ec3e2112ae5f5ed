"""The NVIDIA device plugin stand-in: config parsing as k8s-device-plugin does it, node resources.

A plugin container (any image containing `k8s-device-plugin`, in any namespace, whatever its
DaemonSet is called) reads its config once at start, from `--config-file` or `CONFIG_FILE`, out
of the files the kubelet materialised for its volumes. A config that does not parse makes the
container exit 1 with the plugin's error line, so the pod crash-loops; a valid one registers
`nvidia.com/gpu` (or `nvidia.com/gpu.shared` with renameByDefault) = physical GPUs x replicas
with the node.

Parsing follows api/config/v1 of the plugin: sigs.k8s.io/yaml is not strict, so unknown fields
are ignored (a misspelt `timeslicing:` silently means no sharing, as on a real node); version
must be v1 when given; timeSlicing needs a non-empty `resources` list; each resource needs a
`name` and `replicas` >= 1; `strategy` other than empty is rejected.

While no plugin is registered on a node the kubelet reports allocatable 0 for a resource it
knew before (capacity stays) and nothing for one never registered, as the real kubelet does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .common import NODES

if TYPE_CHECKING:
    from .cluster import Cluster

PLUGIN_IMAGE_MARKER = "k8s-device-plugin"
GPU_RESOURCE = "nvidia.com/gpu"
# Physical GPUs by instance type (what the node would have; GFD reports it as nvidia.com/gpu.count).
GPUS_PER_INSTANCE = {"g4dn.xlarge": 1, "g4dn.2xlarge": 1, "g4dn.4xlarge": 1, "g4dn.8xlarge": 1,
                     "g4dn.12xlarge": 4, "g4dn.16xlarge": 1, "g4dn.metal": 8, "g5.xlarge": 1, "g5.2xlarge": 1,
                     "g5.12xlarge": 4, "g5.48xlarge": 8, "g6.xlarge": 1}
GPU_PRODUCT = {"g4dn": "Tesla-T4", "g5": "NVIDIA-A10G", "g6": "NVIDIA-L4"}


class PluginConfigError(Exception):
    """The plugin's own error text, as it logs it before exiting."""


@dataclass(frozen=True)
class SharingConfig:
    replicas: int = 1
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    strategy: str = "none"  # none | time-slicing | mps

    def resource_name(self) -> str:
        return GPU_RESOURCE + ".shared" if self.rename_by_default and self.replicas > 1 else GPU_RESOURCE


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def parse_config(text: str) -> SharingConfig:
    """The sharing part of a device plugin config file; raises PluginConfigError like the plugin."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PluginConfigError(f"unmarshal error: error converting YAML to JSON: {str(err).splitlines()[0]}")
    if data is None:
        return SharingConfig()
    if not isinstance(data, dict):
        raise PluginConfigError("unmarshal error: error unmarshaling JSON: json: cannot unmarshal "
                                f"{_json_type(data)} into Go value of type v1.Config")
    version = data.get("version") or "v1"
    if version != "v1":
        raise PluginConfigError(f"unknown version: {version}")
    sharing = data.get("sharing") or {}
    if not isinstance(sharing, dict):
        raise PluginConfigError("unmarshal error: error unmarshaling JSON: json: cannot unmarshal "
                                f"{_json_type(sharing)} into Go struct field Config.sharing of type v1.Sharing")
    chosen, strategy = None, "none"
    for key, name in (("mps", "mps"), ("timeSlicing", "time-slicing")):  # MPS wins when both are set
        if sharing.get(key) is not None:
            chosen, strategy = sharing[key], name
            break
    if chosen is None:
        return SharingConfig()
    if not isinstance(chosen, dict):
        raise PluginConfigError(f"unmarshal error: error unmarshaling JSON: json: cannot unmarshal "
                                f"{_json_type(chosen)} into Go value of type map[string]json.RawMessage")
    if chosen.get("strategy") not in (None, ""):
        raise PluginConfigError(f"unmarshal error: error unmarshaling JSON: while decoding JSON: "
                                f"unknown time-slicing strategy: {chosen['strategy']}")
    resources = chosen.get("resources")
    if not resources:
        raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: no resources specified")
    if not isinstance(resources, list):
        raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: json: cannot "
                                f"unmarshal {_json_type(resources)} into Go value of type []v1.ReplicaResource")
    replicas = 1
    for resource in resources:
        if not isinstance(resource, dict):
            raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: json: cannot "
                                    f"unmarshal {_json_type(resource)} into Go value of type map[string]json.RawMessage")
        if "name" not in resource:
            raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: "
                                    "no resource name specified")
        name = str(resource["name"])
        full = name if name.startswith("nvidia.com/") else "nvidia.com/" + name
        if not _DNS_SUBDOMAIN.match(full.split("/", 1)[1]):
            raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: incorrect "
                                    f"format for resource name '{full}'")
        if "replicas" not in resource:
            raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: "
                                    "no replicas specified")
        value = resource["replicas"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: json: cannot "
                                    f"unmarshal {_json_type(value)} into Go value of type int")
        if value <= 0:
            raise PluginConfigError("unmarshal error: error unmarshaling JSON: while decoding JSON: "
                                    "number of replicas must be >= 0")
        if full == GPU_RESOURCE:
            replicas = value
    fail_gt_one = chosen.get("failRequestsGreaterThanOne")
    return SharingConfig(replicas=replicas, rename_by_default=bool(chosen.get("renameByDefault")),
                         fail_requests_greater_than_one=bool(fail_gt_one) if fail_gt_one is not None else strategy == "mps",
                         strategy=strategy if replicas > 1 else "none")


def _json_type(value) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def config_file_of(container: dict, env: dict[str, str]) -> str | None:
    """The config path the plugin would use: --config-file wins over CONFIG_FILE."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    for i, arg in enumerate(argv):
        if arg in ("--config-file", "-config-file") and i + 1 < len(argv):
            return argv[i + 1]
        for prefix in ("--config-file=", "-config-file="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
    return env.get("CONFIG_FILE") or None


def load_plugin_config(container_path: str | None, local_path: Path | None) -> SharingConfig:
    """Read the config the container sees at `container_path` (materialised at `local_path`)."""
    if not container_path:
        return SharingConfig()
    if local_path is None or not local_path.is_file():
        raise PluginConfigError(f"error opening config file: open {container_path}: no such file or directory")
    try:
        return parse_config(local_path.read_text())
    except PluginConfigError as err:
        raise PluginConfigError(f"error parsing config file: {err}")


def plugin_error_line(err: PluginConfigError) -> str:
    return f"unable to load config: unable to finalize config: unable to parse config file: {err}"


@dataclass
class Registration:
    node: str
    pod_uid: str
    config: SharingConfig


class DevicePlugins:
    """Registrations of running plugin containers, and the node resources they imply."""

    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self._registrations: dict[str, Registration] = {}  # pod uid -> registration
        self.physical: dict[str, int] = {}  # node name -> physical GPUs (nodes the sandbox made)

    def physical_gpus(self, node: dict) -> int:
        """GPUs the node's hardware has (not what the plugin advertises)."""
        name = node["metadata"]["name"]
        if name in self.physical:
            return self.physical[name]
        labels = node["metadata"].get("labels") or {}
        instance = labels.get("node.kubernetes.io/instance-type", "")
        if instance in GPUS_PER_INSTANCE:
            return GPUS_PER_INSTANCE[instance]
        return 1 if labels.get("nvidia.com/gpu.present") == "true" else 0

    def register(self, node: str, pod_uid: str, config: SharingConfig) -> None:
        """A plugin container on `node` started with `config` and serves its GPUs."""
        self._registrations[pod_uid] = Registration(node, pod_uid, config)

    def unregister(self, pod_uid: str) -> None:
        """The plugin container of this pod stopped."""
        self._registrations.pop(pod_uid, None)

    def config_for_node(self, node: str) -> SharingConfig | None:
        """The sharing config of the plugin serving `node`, or None when none is registered."""
        regs = [r for r in self._registrations.values() if r.node == node]
        return regs[-1].config if regs else None

    def sync(self, nodes: list[dict]) -> None:
        """Write each node's GPU capacity/allocatable and GFD-like labels from the registrations."""
        for node in nodes:
            self._sync_node(node)

    def _sync_node(self, node: dict) -> None:
        name = node["metadata"]["name"]
        physical = self.physical_gpus(node)
        config = self.config_for_node(name) if physical else None
        status = node.get("status") or {}
        capacity = dict(status.get("capacity") or {})
        allocatable = dict(status.get("allocatable") or {})
        labels = dict(node["metadata"].get("labels") or {})
        for resource in (GPU_RESOURCE, GPU_RESOURCE + ".shared"):
            if resource in capacity or resource in allocatable:
                allocatable[resource] = "0"  # known before, no plugin serving it now
        if config is not None:
            resource = config.resource_name()
            count = str(physical * config.replicas)
            capacity[resource] = count
            allocatable[resource] = count
            product = GPU_PRODUCT.get(labels.get("karpenter.k8s.aws/instance-family", ""), "Tesla-T4")
            shared = config.replicas > 1
            labels.update({
                "nvidia.com/gpu.count": str(physical),
                "nvidia.com/gpu.replicas": str(config.replicas),
                "nvidia.com/gpu.sharing-strategy": config.strategy if shared else "none",
                "nvidia.com/gpu.product": product + ("-SHARED" if shared and not config.rename_by_default else ""),
            })
        if capacity == (status.get("capacity") or {}) and allocatable == (status.get("allocatable") or {}) \
                and labels == (node["metadata"].get("labels") or {}):
            return

        def write(obj: dict) -> None:
            obj["metadata"]["labels"] = labels
            obj.setdefault("status", {})["capacity"] = capacity
            obj["status"]["allocatable"] = allocatable

        self.store.mutate(NODES, None, name, write)
