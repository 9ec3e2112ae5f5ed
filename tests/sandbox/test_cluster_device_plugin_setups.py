"""The sandbox's device plugin as each installer lays it out, answering a time-slicing config as upstream does."""

from __future__ import annotations

from sandbox.cluster.common import CONFIGMAPS, DAEMONSETS, DEPLOYMENTS, EVENTS, NODES
from sandbox.cluster.device_plugin import CLUSTERPOLICIES, EC2NODECLASSES, OPERATOR_HASH
from tests.cluster_helpers import (GPU_NODE, deployment, deployment_ready, node_gpus, running_cluster,
                                   time_slicing_config, wait_for)


def gpu_nodes(store) -> list[dict]:
    return [n for n in store.list(NODES) if (n["metadata"].get("labels") or {}).get("node-type") == "gpu"]


def test_helm_config_manager_selects_the_config_the_node_label_names_and_the_plugin_reloads(tmp_path):
    with running_cluster(tmp_path, device_plugin_setup="helm") as cluster:
        store = cluster.store
        wait_for(lambda: node_gpus(store) == 1, "the chart's default config: one GPU")
        store.mutate(CONFIGMAPS, "nvidia-device-plugin", "nvdp-nvidia-device-plugin-configs",
                     lambda cm: cm["data"].update({"shared": time_slicing_config(3)}))
        store.mutate(NODES, None, GPU_NODE,
                     lambda n: n["metadata"]["labels"].update({"nvidia.com/device-plugin.config": "shared"}))
        wait_for(lambda: node_gpus(store) == 3, "the sidecar to switch configs and the plugin to reload")
        store.mutate(NODES, None, GPU_NODE,
                     lambda n: n["metadata"]["labels"].update({"nvidia.com/device-plugin.config": "default"}))
        wait_for(lambda: node_gpus(store) == 1, "back to the chart's default")


def test_gpu_operator_renders_its_daemonsets_from_the_cluster_policy_and_a_patch_lasts_only_until_it_renders_anew(tmp_path):
    with running_cluster(tmp_path, device_plugin_setup="gpu-operator") as cluster:
        store = cluster.store
        wait_for(lambda: store.get(DAEMONSETS, "gpu-operator", "gpu-feature-discovery"), "GFD rendered")
        wait_for(lambda: node_gpus(store) == 1, "the operator's plugin: one GPU")
        store.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "ts", "namespace": "gpu-operator"},
                                  "data": {"any": time_slicing_config(4)}})
        store.mutate(CLUSTERPOLICIES, None, "cluster-policy",
                     lambda p: p["spec"]["devicePlugin"].update(config={"name": "ts", "default": "any"}))
        wait_for(lambda: node_gpus(store) == 4, "the re-rendered plugin with the ClusterPolicy's config")

        def patch(ds: dict) -> None:  # what the old playbook did: edit the operator's DaemonSet
            ds["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "PATCHED", "value": "1"})
        store.mutate(DAEMONSETS, "gpu-operator", "nvidia-device-plugin-daemonset", patch)
        cluster.inject("gpu-operator-upgrade")
        wait_for(lambda: all(e["name"] != "PATCHED" for e in store.get(
            DAEMONSETS, "gpu-operator", "nvidia-device-plugin-daemonset")["spec"]["template"]["spec"]["containers"][0]["env"]),
            "the operator to rewrite its DaemonSet whole")
        assert store.get(DAEMONSETS, "gpu-operator", "nvidia-device-plugin-daemonset")["metadata"]["annotations"][OPERATOR_HASH]
        wait_for(lambda: node_gpus(store) == 4, "time-slicing kept: it lives in the ClusterPolicy")


def test_bottlerocket_sharing_comes_from_user_data_on_relaunch_and_do_not_disrupt_blocks_the_drift(tmp_path):
    with running_cluster(tmp_path, device_plugin_setup="bottlerocket") as cluster:
        store = cluster.store
        assert not store.list(DAEMONSETS, "kube-system")
        wait_for(lambda: node_gpus(store) == 1, "the OS's own plugin: one GPU")
        pinned = deployment("asr", gpu=1)
        pinned["spec"]["template"]["metadata"]["annotations"] = {"karpenter.sh/do-not-disrupt": "true"}
        store.create(DEPLOYMENTS, pinned)
        wait_for(lambda: deployment_ready(store, "default", "asr"), "a pod that must not be disrupted")
        settings = ('\n[settings.kubelet-device-plugins.nvidia]\ndevice-sharing-strategy = "time-slicing"\n'
                    '[settings.kubelet-device-plugins.nvidia.time-slicing]\nreplicas = 3\n')
        store.mutate(EC2NODECLASSES, None, "gpu", lambda nc: nc["spec"].update(userData=nc["spec"]["userData"] + settings))
        wait_for(lambda: [e for e in store.list(EVENTS, "default") + store.list(EVENTS, None)
                          if e["reason"] == "DisruptionBlocked"], "Karpenter to refuse the drift")
        assert [n["metadata"]["name"] for n in gpu_nodes(store)] == [GPU_NODE] and node_gpus(store) == 1

        store.delete(DEPLOYMENTS, "default", "asr")
        wait_for(lambda: [n for n in gpu_nodes(store) if n["metadata"]["name"] != GPU_NODE
                          and node_gpus(store, n["metadata"]["name"]) == 3], "a replacement node booted with 3 replicas")
        assert store.get(NODES, None, GPU_NODE) is None


def test_karpenter_consolidation_leaves_a_node_with_a_do_not_disrupt_pod_alone(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        pinned = deployment("asr", gpu=1)
        pinned["spec"]["template"]["metadata"]["annotations"] = {"karpenter.sh/do-not-disrupt": "true"}
        store.create(DEPLOYMENTS, pinned)
        wait_for(lambda: deployment_ready(store, "default", "asr"), "the pod")
        result = cluster.inject("karpenter-consolidate", {"node": GPU_NODE})
        assert "do-not-disrupt" in result["blocked"]
        assert store.get(NODES, None, GPU_NODE) is not None
