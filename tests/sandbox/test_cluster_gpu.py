"""GPU behaviour of the sandbox cluster: the device plugin, time-slicing, scheduling on GPUs, Spot."""

from __future__ import annotations

from sandbox.cluster.common import CONFIGMAPS, DEPLOYMENTS, NODES, PODS, condition
from tests.cluster_helpers import (DEVICE_PLUGIN, GPU_NODE, configure_time_slicing, deployment, deployment_ready,
                                   device_plugin_ready,
                                   events, node_gpus, pods, ready_pods, running_cluster, time_slicing_config,
                                   unschedulable_message, wait_for, waiting_reason)

UNSCHEDULABLE_ONE_GPU = ("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) didn't match Pod's node "
                         "affinity/selector. preemption: 0/2 nodes are available: 1 No preemption victims found for "
                         "incoming pod, 1 Preemption is not helpful for scheduling.")


def plugin_pod_on(store, node: str) -> dict | None:
    ns, name = DEVICE_PLUGIN
    return next((p for p in pods(store, ns) if p["metadata"]["name"].startswith(name)
                 and p["spec"].get("nodeName") == node), None)


def test_second_gpu_deployment_waits_unschedulable_until_time_slicing_then_both_share_the_node(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        wait_for(lambda: node_gpus(store) == 1, "the device plugin to report the one physical GPU")
        store.create(DEPLOYMENTS, deployment("asr", gpu=1))
        wait_for(lambda: deployment_ready(store, "default", "asr"), "the first GPU deployment to be ready")

        store.create(DEPLOYMENTS, deployment("tts", gpu=1, next_to="asr"))
        pending = wait_for(lambda: next((unschedulable_message(p) for p in pods(store, selector="app=tts")
                                         if unschedulable_message(p)), None), "the second GPU pod to be Unschedulable")
        assert pending == UNSCHEDULABLE_ONE_GPU
        warning = wait_for(lambda: events(store, "tts-", reason="FailedScheduling"), "a FailedScheduling event")
        assert warning[0]["type"] == "Warning" and warning[0]["message"] == UNSCHEDULABLE_ONE_GPU
        assert not deployment_ready(store, "default", "tts")

        configure_time_slicing(store, time_slicing_config(4))
        wait_for(lambda: node_gpus(store) == 4, "allocatable nvidia.com/gpu = 1 GPU x 4 replicas")
        wait_for(lambda: deployment_ready(store, "default", "tts"), "the second GPU deployment to be ready")
        nodes = {p["spec"]["nodeName"] for p in pods(store) if p["metadata"]["name"].startswith(("asr-", "tts-"))}
        assert nodes == {GPU_NODE}
        labels = store.get(NODES, None, GPU_NODE)["metadata"]["labels"]
        assert labels["nvidia.com/gpu.replicas"] == "4"
        assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


def test_invalid_time_slicing_config_makes_the_plugin_crash_loop_and_advertise_no_gpu(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        wait_for(lambda: node_gpus(store) == 1 and device_plugin_ready(store), "the device plugin on every node")
        configure_time_slicing(store, time_slicing_config(0))
        crashing = wait_for(lambda: (p := plugin_pod_on(store, GPU_NODE)) and waiting_reason(p) == "CrashLoopBackOff"
                            and p, "the device plugin pod on the GPU node to crash-loop")
        status = crashing["status"]["containerStatuses"][0]
        assert status["restartCount"] >= 1
        assert "number of replicas must be >= 0" in status["lastState"]["terminated"]["message"]
        log = cluster.pod_log_path(DEVICE_PLUGIN[0], crashing["metadata"]["name"], "nvidia-device-plugin-ctr")
        assert "unable to load config" in log.read_text() or \
            "unable to load config" in log.with_suffix(".previous.log").read_text()
        assert node_gpus(store) == 0

        configure_time_slicing(store, time_slicing_config(2))
        wait_for(lambda: node_gpus(store) == 2, "the plugin to recover with a valid config")


def test_config_without_the_mounted_file_name_key_is_a_missing_file_for_the_plugin(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        configure_time_slicing(store, time_slicing_config(4))

        def drop_key(cm: dict) -> None:
            cm["data"] = {"other.yaml": cm["data"]["config.yaml"]}
        store.mutate(CONFIGMAPS, DEVICE_PLUGIN[0], "time-slicing-config", drop_key)
        wait_for(lambda: plugin_pod_on(store, GPU_NODE), "a plugin pod on the GPU node")
        store.delete(PODS, DEVICE_PLUGIN[0], plugin_pod_on(store, GPU_NODE)["metadata"]["name"])
        crashing = wait_for(lambda: (p := plugin_pod_on(store, GPU_NODE)) and waiting_reason(p) == "CrashLoopBackOff"
                            and p, "the restarted plugin to crash on the missing file")
        message = crashing["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"]
        assert "open /config/config.yaml: no such file or directory" in message


def test_rename_by_default_advertises_shared_gpus_instead(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        configure_time_slicing(store, time_slicing_config(3, extra="    renameByDefault: true\n"))
        wait_for(lambda: node_gpus(store, resource="nvidia.com/gpu.shared") == 3, "nvidia.com/gpu.shared = 3")
        assert node_gpus(store) == 0


def test_spot_interruption_removes_node_and_pods_then_a_replacement_runs_them_again(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        configure_time_slicing(store, time_slicing_config(4))
        wait_for(lambda: node_gpus(store) == 4, "time-slicing in effect")
        store.create(DEPLOYMENTS, deployment("asr", gpu=1))
        store.create(DEPLOYMENTS, deployment("tts", gpu=1, next_to="asr"))
        before = wait_for(lambda: ready_pods(store, "default", "app in (asr,tts)", 2), "both GPU pods ready")

        result = cluster.inject("spot-interruption", {"replacement_delay": 0.5})
        assert result["node"] == GPU_NODE
        wait_for(lambda: store.get(NODES, None, GPU_NODE) is None, "the interrupted node to leave")
        old_names = {p["metadata"]["name"] for p in before}
        assert not old_names & {p["metadata"]["name"] for p in pods(store)}
        assert events(store, GPU_NODE, reason="SpotInterrupted")

        after = wait_for(lambda: ready_pods(store, "default", "app in (asr,tts)", 2), "both GPU pods back")
        replacement = result["replacement"]
        assert {p["spec"]["nodeName"] for p in after} == {replacement} != {GPU_NODE}
        assert node_gpus(store, replacement) == 4
        assert plugin_pod_on(store, replacement) is not None
        gpu_nodes = [n["metadata"]["name"] for n in store.list(NODES) if n["metadata"]["labels"].get("node-type") == "gpu"]
        assert gpu_nodes == [replacement]  # Karpenter launched nothing else for the evicted pods


def test_karpenter_launches_a_gpu_node_for_a_pending_gpu_pod_when_there_is_none(tmp_path):
    with running_cluster(tmp_path, gpu_node=False) as cluster:
        store = cluster.store
        assert [n for n in store.list(NODES) if n["metadata"]["labels"].get("node-type") == "gpu"] == []
        store.create(DEPLOYMENTS, deployment("asr", gpu=1))
        wait_for(lambda: events(store, "asr-", reason="Nominated"), "Karpenter to nominate a new node")
        (pod,) = wait_for(lambda: ready_pods(store, "default", "app=asr", 1), "the GPU pod to run on the new node")
        node = store.get(NODES, None, pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["karpenter.sh/nodepool"] == "gpu"
        assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "g4dn.xlarge"


def test_without_pod_affinity_karpenter_gives_a_second_gpu_pod_its_own_node(tmp_path):
    # Karpenter sizes nodes by physical GPUs and knows nothing of time-slicing: the reason the
    # playbook pins TTS next to ASR with pod affinity.
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        wait_for(lambda: node_gpus(store) == 1, "the physical GPU")
        store.create(DEPLOYMENTS, deployment("asr", gpu=1))
        wait_for(lambda: deployment_ready(store, "default", "asr"), "the first GPU deployment")
        store.create(DEPLOYMENTS, deployment("tts", gpu=1))
        (pod,) = wait_for(lambda: ready_pods(store, "default", "app=tts", 1), "the second pod on a new node")
        assert pod["spec"]["nodeName"] != GPU_NODE


def test_failing_scheduling_names_the_untolerated_gpu_taint(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        d = deployment("no-toleration", spec={"nodeSelector": {"node-type": "gpu"}})
        store.create(DEPLOYMENTS, d)
        message = wait_for(lambda: next((unschedulable_message(p) for p in pods(store) if unschedulable_message(p)),
                                        None), "the pod to be unschedulable")
        assert message.startswith("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                                  "1 node(s) had untolerated taint {nvidia.com/gpu: true}.")
        pod = pods(store)[0]
        assert condition(pod, "PodScheduled")["reason"] == "Unschedulable"


def _apart(app: str) -> dict:
    """Required anti-affinity on the hostname against the app's own pods (one ASR per node)."""
    return {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}}}


def gpu_node_names(store) -> set[str]:
    return {n["metadata"]["name"] for n in store.list(NODES) if n["metadata"]["labels"].get("node-type") == "gpu"}


def test_karpenter_launches_a_node_per_pod_anti_affinity_keeps_apart_up_to_the_pools_gpu_limit(tmp_path):
    # The sandbox pool allows 4 GPUs (g4dn.xlarge: one each): five pods that may not share a node get
    # four. Time-slicing gives each node 4 slots, so only the anti-affinity keeps the fifth out.
    with running_cluster(tmp_path, gpu_node=False) as cluster:
        store = cluster.store
        configure_time_slicing(store, time_slicing_config(4))
        store.create(DEPLOYMENTS, deployment("asr", gpu=1, replicas=5, spec=_apart("asr")))
        running = wait_for(lambda: ready_pods(store, "default", "app=asr", 4), "four pods, each on a node of its own")
        assert len({p["spec"]["nodeName"] for p in running}) == 4
        assert len(gpu_node_names(store)) == 4
        # (While a new node's device plugin still reports 1 slot, the reason is that node's GPUs.)
        last = wait_for(lambda: next((m for p in pods(store, selector="app=asr") if (m := unschedulable_message(p))
                                      and "anti-affinity" in m), None), "the fifth pod to stay Unschedulable")
        assert "4 node(s) didn't match pod anti-affinity rules" in last
        assert len(gpu_node_names(store)) == 4


def test_a_capped_hostname_spread_leaves_a_pod_pending_rather_than_doubling_up_on_a_node_with_free_slots(tmp_path):
    # As the TTS manifest: maxSkew 1 and minDomains above any node count make one pod per node a hard
    # cap; the node has 4 slots, yet the second pod waits, and Karpenter starts nothing for it.
    capped = {"topologySpreadConstraints": [{"maxSkew": 1, "minDomains": 1000, "topologyKey": "kubernetes.io/hostname",
                                             "whenUnsatisfiable": "DoNotSchedule",
                                             "labelSelector": {"matchLabels": {"app": "tts"}}}]}
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        configure_time_slicing(store, time_slicing_config(4))
        wait_for(lambda: node_gpus(store) == 4, "time-slicing in effect")
        store.create(DEPLOYMENTS, deployment("asr", gpu=1))
        store.create(DEPLOYMENTS, deployment("tts", gpu=1, next_to="asr", replicas=2, spec=capped))
        (one,) = wait_for(lambda: ready_pods(store, "default", "app=tts", 1), "one TTS pod beside ASR")
        assert one["spec"]["nodeName"] == GPU_NODE
        waiting = wait_for(lambda: next((unschedulable_message(p) for p in pods(store, selector="app=tts")
                                         if unschedulable_message(p)), None), "the second TTS pod to wait")
        assert "1 node(s) didn't match pod topology spread constraints" in waiting
        assert gpu_node_names(store) == {GPU_NODE}
