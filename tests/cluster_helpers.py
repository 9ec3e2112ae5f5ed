"""Helpers for the cluster tests: an in-process fast Cluster over a Store, bounded waits, manifests."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sandbox.cluster import Cluster, ClusterOptions
from sandbox.cluster.common import CONFIGMAPS, DAEMONSETS, DEPLOYMENTS, EVENTS, NODES, PODS, condition, pod_is_ready
from sandbox.kubeapi.registry import Registry
from sandbox.kubeapi.store import Store

GPU_NODE = "ip-10-0-1-23.us-west-2.compute.internal"
GPU_SELECTOR = {"node-type": "gpu"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
DEVICE_PLUGIN = ("kube-system", "nvidia-device-plugin-daemonset")


@contextmanager
def running_cluster(root: Path, aws: Any = None, **overrides: Any) -> Iterator[Cluster]:
    """A seeded fast Cluster (or one on the profile with time_scale=N) on a fresh Store; stopping it
    must leave no internal error behind."""
    store = Store()
    # A Registry with a CA fills each namespace with its "default" ServiceAccount, as the API server's does.
    registry = Registry(store, b"-----BEGIN CERTIFICATE-----\n(the test cluster's CA)\n-----END CERTIFICATE-----\n")
    # fast unless the test lives the real-world profile (time_scale)
    options = ClusterOptions(**{"fast": "time_scale" not in overrides, **overrides})
    cluster = Cluster(store, Path(root), options=options, registry=registry, aws=aws)
    cluster.seed_initial_state()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.errors, "the cluster loop failed:\n" + "\n".join(cluster.errors)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll until predicate() is truthy; fail naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def pods(store: Store, namespace: str = "default", selector: str | None = None) -> list[dict]:
    return store.list(PODS, namespace, label_selector=selector)


def events(store: Store, name_prefix: str, namespace: str = "default", reason: str | None = None) -> list[dict]:
    return [e for e in store.list(EVENTS, namespace)
            if e["involvedObject"]["name"].startswith(name_prefix) and (reason is None or e["reason"] == reason)]


def ready_pods(store: Store, namespace: str, selector: str, count: int) -> list[dict] | None:
    found = [p for p in pods(store, namespace, selector) if pod_is_ready(p)]
    return found if len(found) == count else None


def deployment_ready(store: Store, namespace: str, name: str) -> bool:
    d = store.get(DEPLOYMENTS, namespace, name)
    status = (d or {}).get("status") or {}
    want = (d or {}).get("spec", {}).get("replicas", 1)
    return bool(d) and status.get("observedGeneration") == d["metadata"]["generation"] and \
        status.get("readyReplicas", 0) == want and status.get("updatedReplicas", 0) == want


def device_plugin_ready(store: Store) -> bool:
    """Every device plugin pod Ready on its node (before a config change, so the roll is ordered)."""
    ds = store.get(DAEMONSETS, *DEVICE_PLUGIN)
    status = (ds or {}).get("status") or {}
    return bool(ds) and status.get("numberReady", 0) == status.get("desiredNumberScheduled", -1) > 0


def node_gpus(store: Store, node: str = GPU_NODE, resource: str = "nvidia.com/gpu") -> int | None:
    obj = store.get(NODES, None, node)
    if obj is None:
        return None
    return int(((obj.get("status") or {}).get("allocatable") or {}).get(resource, "0"))


def unschedulable_message(pod: dict) -> str | None:
    cond = condition(pod, "PodScheduled")
    if cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
        return cond.get("message")
    return None


def waiting_reason(pod: dict, init: bool = False) -> str | None:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(key) or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason")
    return None


def deployment(name: str, *, namespace: str = "default", image: str = "busybox:1.36", replicas: int = 1,
               gpu: int = 0, strategy: str = "Recreate", labels: dict | None = None, spec: dict | None = None,
               container: dict | None = None, next_to: str | None = None) -> dict:
    """A Deployment; `next_to` adds required pod affinity to app=<next_to> on the same node (as TTS has)."""
    labels = labels or {"app": name}
    main = {"name": "main", "image": image,
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}
    pod_spec: dict = {"containers": [{**main, **(container or {})}]}
    if gpu:
        res = pod_spec["containers"][0]["resources"]
        res["requests"]["nvidia.com/gpu"] = str(gpu)
        res["limits"] = {"nvidia.com/gpu": str(gpu)}
        pod_spec.update(nodeSelector=dict(GPU_SELECTOR), tolerations=copy.deepcopy(GPU_TOLERATIONS))
    if next_to:
        pod_spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": next_to}}, "topologyKey": "kubernetes.io/hostname"}]}}
    pod_spec.update(spec or {})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"replicas": replicas, "strategy": {"type": strategy},
                     "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec}}}


def job(name: str, command: list[str], *, namespace: str = "default", backoff_limit: int = 0,
        image: str = "python:3.11-slim", spec: dict | None = None, container: dict | None = None) -> dict:
    pod_spec = {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": command, **(container or {})}]}
    pod_spec.update(spec or {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace},
            "spec": {"backoffLimit": backoff_limit, "template": {"spec": pod_spec}}}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def time_slicing_config(replicas: int | str, extra: str = "") -> str:
    return ("version: v1\nsharing:\n  timeSlicing:\n" + extra +
            f"    resources:\n    - name: nvidia.com/gpu\n      replicas: {replicas}\n")


def configure_time_slicing(store: Store, config_text: str, config_name: str = "time-slicing-config") -> None:
    """What the playbook's step 1 does: a ConfigMap, and the plugin DaemonSet pointed at it."""
    ns, ds_name = DEVICE_PLUGIN
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config_name, "namespace": ns},
          "data": {"config.yaml": config_text}}
    if store.get(CONFIGMAPS, ns, config_name) is None:
        store.create(CONFIGMAPS, cm)
    else:
        store.mutate(CONFIGMAPS, ns, config_name, lambda o: o.update(data=cm["data"]))

    def point(ds: dict) -> None:
        spec = ds["spec"]["template"]["spec"]
        container = spec["containers"][0]
        container["env"] = [e for e in container.get("env") or [] if e["name"] != "CONFIG_FILE"] + [
            {"name": "CONFIG_FILE", "value": "/config/config.yaml"}]
        container["volumeMounts"] = [m for m in container.get("volumeMounts") or [] if m["name"] != "config"] + [
            {"name": "config", "mountPath": "/config"}]
        spec["volumes"] = [v for v in spec.get("volumes") or [] if v["name"] != "config"] + [
            {"name": "config", "configMap": {"name": config_name}}]
        annotations = ds["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})
        annotations["config-hash"] = str(abs(hash(config_text)))

    store.mutate(DAEMONSETS, ns, ds_name, point)


__all__ = ["running_cluster", "wait_for", "pods", "events", "ready_pods", "deployment_ready", "node_gpus",
           "unschedulable_message", "device_plugin_ready", "waiting_reason", "deployment", "job", "namespace", "time_slicing_config",
           "configure_time_slicing", "GPU_NODE", "DEVICE_PLUGIN"]
