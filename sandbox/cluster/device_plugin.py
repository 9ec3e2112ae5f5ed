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

Who installed the plugin is a setup (ClusterOptions.device_plugin_setup), one class each below:
- static: deployments/static/nvidia-device-plugin.yml (kube-system, no config);
- helm: the nvidia-device-plugin chart with a config map (release `nvdp`), laid out as
  deployments/helm/nvidia-device-plugin/templates/daemonset-device-plugin.yml renders it: the
  config-manager init container and sidecar pick a config file out of the chart's ConfigMap by the
  node label nvidia.com/device-plugin.config (else DEFAULT_CONFIG, else the fallbacks "named",
  "single"; cmd/config-manager/main.go updateConfigName), the sidecar re-selects when the label
  changes and signals the plugin, which reloads;
- gpu-operator: a ClusterPolicy `cluster-policy` and the DaemonSets the operator renders from it
  (nvidia-device-plugin-daemonset and gpu-feature-discovery, same image), with config-manager
  when spec.devicePlugin.config.name is set (gpu-operator controllers/object_controls.go
  handleDevicePluginConfig); like the operator, the stand-in rewrites a DaemonSet whole when the
  hash of what it renders differs from its `nvidia.com/last-applied-hash` annotation, so a patch
  by anyone else lasts until the next ClusterPolicy change or operator upgrade;
- bottlerocket: no DaemonSet; the plugin is part of the OS and reads
  settings.kubelet-device-plugins.nvidia from the EC2NodeClass user data the node was launched
  with (bottlerocket.dev api/settings/kubelet-device-plugins); a changed user data reaches a node
  only when Karpenter replaces it (drift).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from sandbox.kubeapi.resources import by_key

from .common import CONFIGMAPS, DAEMONSETS, NAMESPACES, NODES, SERVICEACCOUNTS

if TYPE_CHECKING:
    from .cluster import Cluster

PLUGIN_IMAGE_MARKER = "k8s-device-plugin"
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
CONFIG_LABEL = "nvidia.com/device-plugin.config"
CLUSTERPOLICIES = by_key("clusterpolicies.nvidia.com")
EC2NODECLASSES = by_key("ec2nodeclasses.karpenter.k8s.aws")
OPERATOR_NAMESPACE = "gpu-operator"
OPERATOR_HASH = "nvidia.com/last-applied-hash"
NODECLASS_HASH = "karpenter.k8s.aws/ec2nodeclass-hash"
NODECLASS_LABEL = "karpenter.k8s.aws/ec2nodeclass"
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
        self.builtin: dict[str, SharingConfig] = {}  # node name -> the OS's own plugin (Bottlerocket)
        self.setup = setup_named(cluster.options.device_plugin_setup)

    def launched(self, node: dict) -> dict:
        """Stamp a node Karpenter launches (or the seeded one) with its EC2NodeClass, as it boots from it.

        A Bottlerocket node's own plugin takes its sharing from the user data it booted with.
        """
        labels = node["metadata"].setdefault("labels", {})
        nodeclass = nodeclass_of(self.store, node)
        if nodeclass is None:
            return node
        labels[NODECLASS_LABEL] = nodeclass["metadata"]["name"]
        node["metadata"].setdefault("annotations", {})[NODECLASS_HASH] = nodeclass_hash(nodeclass)
        name = node["metadata"]["name"]
        if is_bottlerocket(nodeclass):
            info = node.setdefault("status", {}).setdefault("nodeInfo", {})
            info.update(osImage="Bottlerocket OS 1.29.0 (aws-k8s-1.31-nvidia)",
                        kernelVersion="6.1.119", containerRuntimeVersion="containerd://1.7.24+bottlerocket")
            try:
                self.builtin[name] = bottlerocket_sharing((nodeclass.get("spec") or {}).get("userData"))
            except PluginConfigError:
                self.builtin.pop(name, None)  # the node's plugin does not start: no GPUs advertised
        return node

    def forget(self, node: str) -> None:
        self.physical.pop(node, None)
        self.builtin.pop(node, None)

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
        if node in self.builtin:
            return self.builtin[node]
        regs = [r for r in self._registrations.values() if r.node == node]
        return regs[-1].config if regs else None

    def sync(self, nodes: list[dict]) -> None:
        """Write each node's GPU capacity/allocatable and GFD-like labels from the registrations."""
        self.setup.sync(self.cluster)
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


# -- who runs which container of the plugin's image --------------------------------------------

def container_role(container: dict) -> str | None:
    """plugin | config-manager | feature-discovery for a container of the plugin's image, else None.

    One image carries all three binaries since v0.15; the command says which one runs.
    """
    if PLUGIN_IMAGE_MARKER not in (container.get("image") or ""):
        return None
    argv = [str(a) for a in list(container.get("command") or []) + list(container.get("args") or [])]
    program = argv[0].rsplit("/", 1)[-1] if argv else ""
    if program == "config-manager":
        return "config-manager"
    if program == "gpu-feature-discovery":
        return "feature-discovery"
    return "plugin"


def select_named_config(label: str, default: str, fallbacks: list[str], available: list[str]) -> str:
    """Which file of CONFIG_FILE_SRCDIR config-manager links to (cmd/config-manager/main.go updateConfigName).

    "" means the empty config (fallback "empty"); raises PluginConfigError with its message.
    """
    if not available:
        raise PluginConfigError("error getting list of configuration files: no configuration files available")
    if label:
        if label not in available:
            raise PluginConfigError(f"specified config {label} does not exist")
        return label
    if default:
        if default not in available:
            raise PluginConfigError(f"specified config {label} does not exist")  # sic: upstream names the label
        return default
    for fallback in fallbacks:
        if fallback == "named" and "default" in available:
            return "default"
        if fallback == "single" and len(available) == 1:
            return available[0]
        if fallback == "empty":
            return ""
        if fallback not in ("named", "single"):
            raise PluginConfigError(f"unknown fallback strategy: {fallback}")
    raise PluginConfigError("no config was set, no default was provided, and all fallbacks failed")


def run_config_manager(env: dict[str, str], node_labels: dict, source_dir: Path, destination: Path) -> str:
    """Select a config as config-manager does and write it where the plugin reads it; returns its name."""
    available = sorted(p.name for p in source_dir.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if source_dir.is_dir() else []
    label = str(node_labels.get(env.get("NODE_LABEL") or CONFIG_LABEL, ""))
    fallbacks = [f for f in (env.get("FALLBACK_STRATEGIES") or "named,single").split(",") if f]
    name = select_named_config(label, env.get("DEFAULT_CONFIG", ""), fallbacks, available)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text((source_dir / name).read_text() if name else "")  # upstream: a symlink (or /dev/null)
    return name


# -- Bottlerocket: the OS's own plugin, configured by user data ----------------------------------

def bottlerocket_sharing(user_data: str | None) -> SharingConfig:
    """settings.kubelet-device-plugins.nvidia of a Bottlerocket user data (TOML) as the plugin applies it."""
    if not user_data:
        return SharingConfig()
    try:
        data = tomllib.loads(user_data)
    except tomllib.TOMLDecodeError as err:
        raise PluginConfigError(f"user data is not TOML: {err}")
    nvidia = (((data.get("settings") or {}).get("kubelet-device-plugins") or {}).get("nvidia") or {})
    if nvidia.get("device-sharing-strategy") != "time-slicing":
        return SharingConfig()
    slicing = nvidia.get("time-slicing") or {}
    replicas = slicing.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise PluginConfigError(f"settings.kubelet-device-plugins.nvidia.time-slicing.replicas: {replicas!r} "
                                "is not a positive integer")
    return SharingConfig(replicas=replicas, rename_by_default=bool(slicing.get("rename-by-default")),
                         fail_requests_greater_than_one=bool(slicing.get("fail-requests-greater-than-one")),
                         strategy="time-slicing" if replicas > 1 else "none")


def nodeclass_hash(nodeclass: dict) -> str:
    """What Karpenter compares to call a node drifted: a hash of the EC2NodeClass spec."""
    return hashlib.sha256(json.dumps(nodeclass.get("spec") or {}, sort_keys=True).encode()).hexdigest()[:16]


def nodeclass_of(store, node: dict) -> dict | None:
    """The EC2NodeClass a node of a Karpenter NodePool boots from (its pool's nodeClassRef), or None."""
    from .common import NODEPOOLS

    pool_name = (node["metadata"].get("labels") or {}).get("karpenter.sh/nodepool")
    if not pool_name:
        return None
    pool = store.get(NODEPOOLS, None, pool_name) or {}
    ref = ((((pool.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeClassRef") or {})
    return store.get(EC2NODECLASSES, None, ref.get("name") or pool_name)


def is_bottlerocket(nodeclass: dict | None) -> bool:
    spec = (nodeclass or {}).get("spec") or {}
    aliases = [str(t.get("alias", "")) for t in spec.get("amiSelectorTerms") or []]
    return spec.get("amiFamily") == "Bottlerocket" or any(a.startswith("bottlerocket@") for a in aliases)


# -- the four setups -----------------------------------------------------------------------------

def _tolerate_gpu() -> list[dict]:
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _config_manager(name: str, oneshot: bool, default: str) -> dict:
    """The config-manager container as the chart and the operator write it."""
    env = [{"name": "ONESHOT", "value": "true" if oneshot else "false"}, {"name": "KUBECONFIG", "value": ""},
           {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "NODE_LABEL", "value": CONFIG_LABEL},
           {"name": "CONFIG_FILE_SRCDIR", "value": "/available-configs"},
           {"name": "CONFIG_FILE_DST", "value": "/config/config.yaml"},
           {"name": "DEFAULT_CONFIG", "value": default},
           {"name": "FALLBACK_STRATEGIES", "value": "named,single"},
           {"name": "SEND_SIGNAL", "value": "false" if oneshot else "true"},
           {"name": "SIGNAL", "value": "" if oneshot else "1"},
           {"name": "PROCESS_TO_SIGNAL", "value": "" if oneshot else "nvidia-device-plugin"}]
    return {"image": DEVICE_PLUGIN_IMAGE, "name": name, "command": ["config-manager"], "env": env,
            "volumeMounts": [{"name": "available-configs", "mountPath": "/available-configs"},
                             {"name": "config", "mountPath": "/config"}]}


class DevicePluginSetup:
    """How one installer lays the device plugin out; the base is "no plugin at all"."""

    name = "none"

    def seed(self, cluster: "Cluster", put) -> None:
        """Write the installer's objects at cluster start."""

    def sync(self, cluster: "Cluster") -> None:
        """What the installer's controller does on each pass (the GPU Operator reconciles)."""

    def inject(self, cluster: "Cluster", fault: str, params: dict) -> dict:
        raise ValueError(f"fault {fault!r} needs --device-plugin gpu-operator (this sandbox runs {self.name})")


class StaticSetup(DevicePluginSetup):
    """deployments/static/nvidia-device-plugin.yml of NVIDIA/k8s-device-plugin v0.17.1."""

    name = "static"

    def seed(self, cluster, put) -> None:
        put(DAEMONSETS, static_daemonset())


def static_daemonset() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"name": "nvidia-device-plugin-ds"}},
                "spec": {
                    "tolerations": _tolerate_gpu(),
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "image": DEVICE_PLUGIN_IMAGE, "name": "nvidia-device-plugin-ctr",
                        "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
                    }],
                    "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}],
                },
            },
        },
    }


class HelmSetup(DevicePluginSetup):
    """`helm upgrade -i nvdp nvdp/nvidia-device-plugin -n nvidia-device-plugin --set-file config.map.default=...`."""

    name = "helm"
    release, namespace, chart = "nvdp", "nvidia-device-plugin", "nvidia-device-plugin-0.17.1"
    fullname = "nvdp-nvidia-device-plugin"
    # What the operator put in config.map: one config named "default", no sharing.
    default_config = "version: v1\nflags:\n  migStrategy: none\n"

    def labels(self) -> dict:
        return {"helm.sh/chart": self.chart, "app.kubernetes.io/name": "nvidia-device-plugin",
                "app.kubernetes.io/instance": self.release, "app.kubernetes.io/version": "0.17.1",
                "app.kubernetes.io/managed-by": "Helm"}

    def helm_meta(self, name: str) -> dict:
        return {"name": name, "namespace": self.namespace, "labels": self.labels(),
                "annotations": {"meta.helm.sh/release-name": self.release,
                                "meta.helm.sh/release-namespace": self.namespace}}

    def seed(self, cluster, put) -> None:
        put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": self.namespace, "labels": {"kubernetes.io/metadata.name": self.namespace}}})
        put(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": self.helm_meta(f"{self.fullname}-service-account")})
        configs = f"{self.fullname}-configs"
        data = {"default": self.default_config}
        put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.helm_meta(configs), "data": data})
        put(DAEMONSETS, self.daemonset(configs, data))

    def daemonset(self, configs: str, data: dict) -> dict:
        selector = {"app.kubernetes.io/name": "nvidia-device-plugin", "app.kubernetes.io/instance": self.release}
        checksum = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        plugin = {
            "image": DEVICE_PLUGIN_IMAGE, "imagePullPolicy": "IfNotPresent", "name": "nvidia-device-plugin-ctr",
            "command": ["nvidia-device-plugin"],
            "env": [{"name": "MPS_ROOT", "value": "/run/nvidia/mps"},
                    {"name": "CONFIG_FILE", "value": "/config/config.yaml"},
                    {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                    {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}],
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
            "volumeMounts": [{"name": "kubelet-device-plugins-dir", "mountPath": "/var/lib/kubelet/device-plugins"},
                             {"name": "available-configs", "mountPath": "/available-configs"},
                             {"name": "config", "mountPath": "/config"}],
        }
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In",
                                   "values": ["true"]}]},
            {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]}]}}}
        return {
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": self.helm_meta(self.fullname),
            "spec": {
                "selector": {"matchLabels": selector},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": dict(selector), "annotations": {"checksum/config": checksum}},
                    "spec": {
                        "priorityClassName": "system-node-critical",
                        "securityContext": {},
                        "serviceAccountName": f"{self.fullname}-service-account",
                        "shareProcessNamespace": True,
                        "initContainers": [_config_manager("nvidia-device-plugin-init", True, "")],
                        "containers": [_config_manager("nvidia-device-plugin-sidecar", False, ""), plugin],
                        "volumes": [
                            {"name": "kubelet-device-plugins-dir",
                             "hostPath": {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"}},
                            {"name": "available-configs", "configMap": {"name": configs}},
                            {"name": "config", "emptyDir": {}}],
                        "affinity": affinity,
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}] + _tolerate_gpu(),
                    },
                },
            },
        }


class GpuOperatorSetup(DevicePluginSetup):
    """The NVIDIA GPU Operator (assets/state-device-plugin, assets/gpu-feature-discovery of NVIDIA/gpu-operator)."""

    name = "gpu-operator"
    policy_name = "cluster-policy"

    def __init__(self) -> None:
        self.revision = 0  # bumped by the `gpu-operator-upgrade` fault: what it renders changes

    def seed(self, cluster, put) -> None:
        put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": OPERATOR_NAMESPACE,
                                      "labels": {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}}})
        for name in ("nvidia-device-plugin", "nvidia-gpu-feature-discovery"):
            put(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE}})
        put(CLUSTERPOLICIES, {
            "apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
            "metadata": {"name": self.policy_name,
                         "labels": {"app.kubernetes.io/component": "gpu-operator",
                                    "app.kubernetes.io/managed-by": "Helm"}},
            "spec": {"operator": {"defaultRuntime": "containerd"},
                     "driver": {"enabled": False},  # EKS GPU AMIs ship the driver
                     "toolkit": {"enabled": False},
                     "devicePlugin": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "k8s-device-plugin",
                                      "version": "v0.17.1", "config": {"name": "", "default": ""}},
                     "gfd": {"enabled": True}},
            "status": {"state": "ready", "namespace": OPERATOR_NAMESPACE}})

    def inject(self, cluster, fault: str, params: dict) -> dict:
        self.revision += 1
        return {"fault": fault, "revision": self.revision}

    def render(self, policy: dict) -> list[dict]:
        spec = policy.get("spec") or {}
        plugin_spec = spec.get("devicePlugin") or {}
        image = f"{plugin_spec.get('repository', 'nvcr.io/nvidia')}/{plugin_spec.get('image', 'k8s-device-plugin')}:" \
                f"{plugin_spec.get('version', 'v0.17.1')}"
        config = plugin_spec.get("config") or {}
        owner = {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "name": self.policy_name,
                 "uid": policy["metadata"].get("uid", ""), "controller": True, "blockOwnerDeletion": True}
        out = []
        for name, container, program, deploy_label in (
                ("nvidia-device-plugin-daemonset", "nvidia-device-plugin", "nvidia-device-plugin", "device-plugin"),
                ("gpu-feature-discovery", "gpu-feature-discovery", "gpu-feature-discovery", "gpu-feature-discovery")):
            main = {"image": image, "name": container, "command": [program],
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                    "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}]}
            pod = {"nodeSelector": {f"nvidia.com/gpu.deploy.{deploy_label}": "true"},
                   "tolerations": _tolerate_gpu(), "priorityClassName": "system-node-critical",
                   "serviceAccountName": "nvidia-device-plugin" if container == "nvidia-device-plugin"
                   else "nvidia-gpu-feature-discovery",
                   "containers": [main],
                   "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}]}
            if config.get("name"):  # handleDevicePluginConfig: config-manager, the ConfigMap and /config
                main["env"].append({"name": "CONFIG_FILE", "value": "/config/config.yaml"})
                main["volumeMounts"] += [{"name": "available-configs", "mountPath": "/available-configs"},
                                         {"name": "config", "mountPath": "/config"}]
                pod["shareProcessNamespace"] = True
                pod["initContainers"] = [_config_manager("config-manager-init", True, config.get("default") or "")]
                pod["containers"].append(_config_manager("config-manager", False, config.get("default") or ""))
                for c in pod["initContainers"] + pod["containers"][1:]:
                    c["image"] = image
                pod["volumes"] += [{"name": "available-configs", "configMap": {"name": config["name"]}},
                                   {"name": "config", "emptyDir": {}}]
            labels = {"app": name}
            ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
                  "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE, "labels": dict(labels),
                               "ownerReferences": [owner], "annotations": {}},
                  "spec": {"selector": {"matchLabels": labels}, "updateStrategy": {"type": "RollingUpdate"},
                           "template": {"metadata": {"labels": dict(labels)}, "spec": pod}}}
            digest = hashlib.sha256((json.dumps(ds, sort_keys=True) + str(self.revision)).encode()).hexdigest()[:20]
            ds["metadata"]["annotations"][OPERATOR_HASH] = digest
            out.append(ds)
        return out

    def sync(self, cluster) -> None:
        from sandbox.kubeapi.strategies import strategy_for

        store = cluster.store
        policy = store.get(CLUSTERPOLICIES, None, self.policy_name)
        if policy is None:
            return
        for node in cluster.snapshot(NODES):  # the operator labels GPU nodes for its operands
            labels = node["metadata"].get("labels") or {}
            if labels.get("nvidia.com/gpu.present") == "true" and \
                    labels.get("nvidia.com/gpu.deploy.device-plugin") != "true":
                store.mutate(NODES, None, node["metadata"]["name"], lambda o: o["metadata"]["labels"].update({
                    "nvidia.com/gpu.deploy.device-plugin": "true",
                    "nvidia.com/gpu.deploy.gpu-feature-discovery": "true"}))
        for wanted in self.render(policy):
            meta = wanted["metadata"]
            live = store.get(DAEMONSETS, meta["namespace"], meta["name"])
            strategy_for("DaemonSet").default(wanted)
            if live is None:
                store.create(DAEMONSETS, wanted)
            elif (live["metadata"].get("annotations") or {}).get(OPERATOR_HASH) != meta["annotations"][OPERATOR_HASH]:
                def replace(obj: dict, wanted=wanted) -> None:  # client.Update: the operator's object, whole
                    obj["metadata"].update(labels=wanted["metadata"]["labels"],
                                           annotations=wanted["metadata"]["annotations"],
                                           ownerReferences=wanted["metadata"]["ownerReferences"])
                    obj["spec"] = copy.deepcopy(wanted["spec"])
                store.mutate(DAEMONSETS, meta["namespace"], meta["name"], replace)


class BottlerocketSetup(DevicePluginSetup):
    """Bottlerocket's NVIDIA variant with Karpenter: the plugin is in the OS, configured by EC2NodeClass user data."""

    name = "bottlerocket"
    nodeclass_name = "gpu"
    user_data = '[settings.kubernetes]\nmax-pods = 29\n\n[settings.kernel]\nlockdown = "integrity"\n'

    def seed(self, cluster, put) -> None:
        put(EC2NODECLASSES, {
            "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": self.nodeclass_name},
            "spec": {"role": "KarpenterNodeRole-qwen3-sandbox",
                     "amiSelectorTerms": [{"alias": "bottlerocket@latest"}],
                     "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "qwen3-sandbox"}}],
                     "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "qwen3-sandbox"}}],
                     "userData": self.user_data},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})


SETUPS = {cls.name: cls for cls in (StaticSetup, HelmSetup, GpuOperatorSetup, BottlerocketSetup)}


def setup_named(name: str) -> DevicePluginSetup:
    if name not in SETUPS:
        raise ValueError(f"device plugin setup {name!r} is not known; choose from {', '.join(SETUPS)}")
    return SETUPS[name]()
