"""Step 1 through whoever owns the device plugin: each setup converges from scratch, a rerun writes nothing."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from tests.deploy_helpers import assert_ok, changed_operations, deploy, output, writes


def gpu_allocatable(handle) -> list[str]:
    core = client.CoreV1Api(handle.api_client())
    return [n.status.allocatable.get("nvidia.com/gpu", "0") for n in core.list_node(label_selector="node-type=gpu").items]


def converge_and_rerun(handle) -> str:
    first = deploy(handle)
    assert_ok(first)
    assert gpu_allocatable(handle) == ["2"]
    mark = handle.control.audit_mark()
    again = deploy(handle)
    assert_ok(again)
    assert writes(handle.control.audit_since(mark)) == []
    assert changed_operations(output(again)) == 0
    return output(first)


# The static DaemonSet (the sandbox's default) converges and reruns in tests/test_deploy.py's first test.
def test_with_bottlerocket_a_deploy_converges_from_scratch_and_a_rerun_writes_nothing(make_sandbox):
    handle = make_sandbox(device_plugin_setup="bottlerocket")
    text = converge_and_rerun(handle)
    assert "device plugin: Bottlerocket nodes of EC2NodeClass gpu" in text


def test_with_helm_the_chart_sidecar_keeps_selecting_configs_and_its_fields_stay_the_charts(make_sandbox):
    handle = make_sandbox(device_plugin_setup="helm")
    apps = client.AppsV1Api(handle.api_client())
    before = apps.read_namespaced_daemon_set("nvdp-nvidia-device-plugin", "nvidia-device-plugin").spec.template.spec
    converge_and_rerun(handle)
    after = apps.read_namespaced_daemon_set("nvdp-nvidia-device-plugin", "nvidia-device-plugin").spec.template.spec
    assert [c.to_dict() for c in after.containers] == [c.to_dict() for c in before.containers]
    # The sidecar still answers the chart's own selection: back to the chart's default config.
    core = client.CoreV1Api(handle.api_client())
    node = core.list_node(label_selector="node-type=gpu").items[0].metadata.name
    core.patch_node(node, {"metadata": {"labels": {"nvidia.com/device-plugin.config": "default"}}})
    deadline = time.monotonic() + 15
    while gpu_allocatable(handle) != ["1"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gpu_allocatable(handle) == ["1"]


def test_with_the_gpu_operator_its_reconcile_does_not_undo_time_slicing(make_sandbox):
    handle = make_sandbox(device_plugin_setup="gpu-operator")
    text = converge_and_rerun(handle)
    assert "device plugin: GPU Operator ClusterPolicy gpu-operator/cluster-policy" in text
    dynamic = DynamicClient(handle.api_client())
    policy = dynamic.resources.get(api_version="nvidia.com/v1", kind="ClusterPolicy").get(name="cluster-policy")
    assert policy.spec.devicePlugin.config.name == "nvidia-device-plugin-config"
    handle.control.fault("gpu-operator-upgrade")  # the operator rewrites its DaemonSets whole
    time.sleep(1.0)
    deadline = time.monotonic() + 15
    while gpu_allocatable(handle) != ["2"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gpu_allocatable(handle) == ["2"]


@pytest.mark.parametrize("enabled", [True, False])
def test_serving_and_seeding_pods_ask_karpenter_not_to_disrupt_their_node_unless_told_not_to(enabled):
    from tests.manifest_helpers import all_manifests

    templates = {m["metadata"]["name"]: m["spec"]["template"] for m in all_manifests(karpenter_do_not_disrupt=enabled)
                 if m["kind"] in ("Deployment", "Job")}
    assert templates, "no Deployment or Job rendered"
    for name, template in templates.items():
        annotations = template["metadata"].get("annotations") or {}
        assert (annotations.get("karpenter.sh/do-not-disrupt") == "true") is enabled, name
