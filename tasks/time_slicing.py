"""Step 1 (配置 GPU Time-Slicing): one physical GPU advertised as several nvidia.com/gpu.

Configures sharing through whoever owns the device plugin (preflight found it), touching only
fields that owner leaves to its users, under our field manager:
- static DaemonSet: a config ConfigMap, and the plugin container (by name) pointed at it;
- Helm release with config-manager: our config as one more file of the chart's ConfigMap, chosen
  per node by the label nvidia.com/device-plugin.config (the chart's own selection; its values and
  DaemonSet stay the chart's);
- GPU Operator: a ConfigMap in its namespace and ClusterPolicy spec.devicePlugin.config name/default
  (the operator re-renders its DaemonSets from that; a patch of them would be undone);
- Bottlerocket: settings.kubelet-device-plugins.nvidia in the EC2NodeClass user data (other
  settings kept); Karpenter replaces the drifted nodes, which boot with it.
The config name carries the replicas, so a new count is a new selection the owner reloads.
Then it waits until every GPU node reports allocatable nvidia.com/gpu = physical GPUs x replicas.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import time
import tomllib

from pyinfra import host, logger
from pyinfra.api import deploy, operation

from kubeops import k8s
from kubeops.waiter import Heartbeat, WaitTimedOut, node_gpus
from qwen_speech.manifests import render

from .context import DeployBlocked, context_of, host_tag

# Physical GPUs per instance type, for nodes without GPU feature discovery's nvidia.com/gpu.count.
GPUS_PER_INSTANCE = {"g4dn.xlarge": 1, "g4dn.2xlarge": 1, "g4dn.4xlarge": 1, "g4dn.8xlarge": 1,
                     "g4dn.16xlarge": 1, "g4dn.12xlarge": 4, "g4dn.metal": 8, "g5.xlarge": 1, "g5.2xlarge": 1,
                     "g5.4xlarge": 1, "g5.8xlarge": 1, "g5.16xlarge": 1, "g5.12xlarge": 4, "g5.24xlarge": 4,
                     "g5.48xlarge": 8, "g6.xlarge": 1, "g6.2xlarge": 1, "g6.4xlarge": 1}


def physical_gpus(node: dict) -> int:
    labels = node["metadata"].get("labels") or {}
    if labels.get("nvidia.com/gpu.count", "").isdigit():
        return int(labels["nvidia.com/gpu.count"])
    return GPUS_PER_INSTANCE.get(labels.get("node.kubernetes.io/instance-type", ""), 1)


def wanted_gpus(node: dict, replicas: int) -> int:
    return physical_gpus(node) * replicas


CONFIG_LABEL = "nvidia.com/device-plugin.config"  # config-manager's node label (cmd/config-manager/main.go)


def config_key(s) -> str:
    return f"{s.time_slicing_config_name}-{s.time_slicing_replicas}x"


def plugin_config(s) -> str:
    """The plugin's config file (api/config/v1); a pod may never ask for more than one shared GPU."""
    return ("version: v1\nsharing:\n  timeSlicing:\n    failRequestsGreaterThanOne: true\n    resources:\n"
            f"      - name: nvidia.com/gpu\n        replicas: {s.time_slicing_replicas}\n")


def desired(ctx) -> list[dict]:
    s, plugin = ctx.settings, ctx.device_plugin
    if plugin.owner == "helm":
        return [_config_map(s, plugin.config_map, plugin.namespace)] + _node_labels(ctx)
    if plugin.owner == "gpu-operator":
        return [_config_map(s, s.time_slicing_config_name, plugin.namespace),
                {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": plugin.name},
                 "spec": {"devicePlugin": {"config": {"name": s.time_slicing_config_name, "default": config_key(s)}}}}]
    if plugin.owner == "bottlerocket":
        return _nodeclass_user_data(ctx)
    return render("nvidia-time-slicing-config.yaml", s, plugin=ctx.device_plugin, config_hash=_config_hash(s),
                  config_key=posixpath.basename(s.time_slicing_config_path),
                  config_dir=posixpath.dirname(s.time_slicing_config_path))


def _config_map(s, name: str, namespace: str) -> dict:
    """Only our key: server-side apply leaves the other files (the chart's) to their owner."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {config_key(s): plugin_config(s)}}


def _node_labels(ctx) -> list[dict]:
    """Each GPU node selects our config; a node Karpenter adds later needs the label in its NodePool."""
    return [{"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": n["metadata"]["name"], "labels": {CONFIG_LABEL: config_key(ctx.settings)}}}
            for n in ctx.gpu_nodes]


_NVIDIA_TABLE = re.compile(r"^\s*\[\s*settings\.kubelet-device-plugins\.nvidia(\.[a-z-]+)?\s*\]\s*$")


def bottlerocket_settings(s) -> str:
    """settings.kubelet-device-plugins.nvidia for time-slicing (bottlerocket.dev api/settings/kubelet-device-plugins)."""
    return ('[settings.kubelet-device-plugins.nvidia]\ndevice-sharing-strategy = "time-slicing"\n\n'
            '[settings.kubelet-device-plugins.nvidia.time-slicing]\n'
            f'replicas = {s.time_slicing_replicas}\nfail-requests-greater-than-one = true\n')


def merged_user_data(user_data: str, s) -> str:
    """The user data with our nvidia tables instead of any earlier ones; every other setting kept."""
    kept, skipping = [], False
    for line in (user_data or "").splitlines():
        if line.strip().startswith("["):
            skipping = bool(_NVIDIA_TABLE.match(line))
        if not skipping:
            kept.append(line)
    text = "\n".join(kept).rstrip()
    return (text + "\n\n" if text else "") + bottlerocket_settings(s)


def _nodeclass_user_data(ctx) -> list[dict]:
    s, plugin = ctx.settings, ctx.device_plugin
    from kubeops.kinds import Ref

    from .gpu_nodepool import NAME

    if s.manage_gpu_nodepool and plugin.name == NAME:
        # Step 0 applies this EC2NodeClass whole, time-slicing included; a second apply of only its
        # userData by the same field manager would drop every other field step 0 set.
        return []

    nodeclass = ctx.kube.get(Ref("karpenter.k8s.aws/v1", "EC2NodeClass", plugin.name, None)) or {}
    current = (nodeclass.get("spec") or {}).get("userData") or ""
    try:
        nvidia = tomllib.loads(current).get("settings", {}).get("kubelet-device-plugins", {}).get("nvidia", {})
    except tomllib.TOMLDecodeError as err:
        raise DeployBlocked(f"EC2NodeClass {plugin.name} spec.userData is not TOML ({err}); fix it, then rerun")
    wanted = tomllib.loads(bottlerocket_settings(s))["settings"]["kubelet-device-plugins"]["nvidia"]
    if nvidia == wanted:
        return []  # already so: nothing to write, no node replaced
    return [{"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": plugin.name},
             "spec": {"userData": merged_user_data(current, s)}}]


@deploy("1. GPU time-slicing")
def configure():
    ctx = context_of(host)
    s, plugin = ctx.settings, ctx.device_plugin
    k8s.applied(
        name=f"configured through the {plugin.describe()}",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        label="1. time-slicing",
    )
    gpus_shared(
        name=f"GPU nodes advertise {s.time_slicing_replicas} nvidia.com/gpu per physical GPU",
        replicas=s.time_slicing_replicas,
        timeout=s.timeout_time_slicing,
        poll=s.poll_seconds,
    )


def _config_hash(s) -> str:
    return hashlib.sha256(f"{s.time_slicing_replicas}".encode()).hexdigest()[:12]


@operation(is_idempotent=True)
def gpus_shared(replicas: int, timeout: float = 300, poll: float = 2.0):
    """
    Wait until every GPU node advertises its GPUs times the time-slicing replicas.

    + replicas: the time-slicing replicas per physical GPU
    + timeout: seconds to wait
    + poll: seconds between checks

    With no GPU node yet (Karpenter starts one for the ASR pod), there is nothing to wait for:
    the ASR step's scheduling brings the node, and TTS scheduling proves the sharing.
    """
    ctx = context_of(host)
    selector = ",".join(f"{k}={v}" for k, v in sorted(ctx.settings.gpu_node_selector.items()))
    # Preflight's list stands until an operation of this run changed something (the config above).
    nodes = ctx.kube.list("v1", "Node", label_selector=selector) if k8s.changed_this_run() else ctx.gpu_nodes
    if not nodes:
        host.noop("no GPU node yet: Karpenter will start one for ASR; sharing is checked when TTS schedules")
        return
    short = [n for n in nodes if node_gpus(n) != wanted_gpus(n, replicas)]
    if not short:
        host.noop("GPU nodes already advertise " + ", ".join(f"{n['metadata']['name']}={node_gpus(n)}" for n in nodes))
        return

    def wait_for_gpus():
        deadline = time.monotonic() + timeout
        beat = Heartbeat("GPU nodes to advertise shared GPUs", timeout,
                         lambda line: logger.info(f"    {host_tag()}1. time-slicing: {line}"), ctx.kube.progress_interval)
        while True:
            current = ctx.kube.list("v1", "Node", label_selector=selector)
            report = ", ".join(f"{n['metadata']['name']}: {node_gpus(n)}/{wanted_gpus(n, replicas)}" for n in current)
            if current and all(node_gpus(n) == wanted_gpus(n, replicas) for n in current):
                logger.info(f"    {host_tag()}1. time-slicing: GPU nodes report nvidia.com/gpu {report}")
                return True
            beat.update(f"waiting for the device plugin, nvidia.com/gpu {report}")
            if time.monotonic() >= deadline:
                host.log_styled(str(WaitTimedOut(
                    f"GPU nodes still report nvidia.com/gpu {report} (allocatable/wanted) after {timeout}s; check the "
                    "device plugin pods in its namespace: an invalid config makes them crash-loop")),
                    fg="red", log_func=logger.error)
                return False
            time.sleep(poll)

    yield k8s.python_command("1. time-slicing", wait_for_gpus)
