"""Step 1 (配置 GPU Time-Slicing): one physical GPU advertised as several nvidia.com/gpu.

Applies the device plugin config, points the installed device plugin DaemonSet at it (only
those fields, under our field manager), then waits until every GPU node reports
allocatable nvidia.com/gpu = physical GPUs x replicas.
"""

from __future__ import annotations

import hashlib
import posixpath
import time

from pyinfra import host, logger, state
from pyinfra.api import deploy, operation

from kubeops import k8s
from kubeops.waiter import Heartbeat, WaitTimedOut, node_gpus
from qwen_speech.manifests import render

from .context import context_of

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


def desired(ctx) -> list[dict]:
    s = ctx.settings
    return render("nvidia-time-slicing-config.yaml", s, plugin=ctx.device_plugin, config_hash=_config_hash(s),
                  config_key=posixpath.basename(s.time_slicing_config_path),
                  config_dir=posixpath.dirname(s.time_slicing_config_path))


@deploy("1. GPU time-slicing")
def configure():
    ctx = context_of(host)
    s, plugin = ctx.settings, ctx.device_plugin
    k8s.applied(
        name=f"1. Time-slicing config + device plugin {plugin.namespace}/{plugin.name}",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        label="1. time-slicing",
    )
    gpus_shared(
        name=f"1. GPU nodes advertise {s.time_slicing_replicas} nvidia.com/gpu per physical GPU",
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
    nodes = ctx.kube.list("v1", "Node", label_selector=selector) if state.is_executing else ctx.gpu_nodes
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
                         lambda line: logger.info(f"    [{host.name}] 1. time-slicing: {line}"), ctx.kube.progress_interval)
        while True:
            current = ctx.kube.list("v1", "Node", label_selector=selector)
            report = ", ".join(f"{n['metadata']['name']}: {node_gpus(n)}/{wanted_gpus(n, replicas)}" for n in current)
            if current and all(node_gpus(n) == wanted_gpus(n, replicas) for n in current):
                logger.info(f"    [{host.name}] 1. time-slicing: GPU nodes report nvidia.com/gpu {report}")
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
