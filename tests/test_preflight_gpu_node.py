"""Step 0 and the GPU node: a NodePool that can make it, and images that cannot move under the pods.

The sandbox's NodePool `gpu` is replaced through its Kubernetes API before the run, as an operator
would `kubectl apply` another one; a failed check stops the run before any write.
"""

from __future__ import annotations

from kubernetes import client

from tests.deploy_helpers import assert_ok, deploy, deployed, output, run_pyinfra, writes  # noqa: F401



def replace_nodepool(handle, change) -> None:
    """Read NodePool `gpu`, let `change` edit its spec.template, write it back."""
    api = client.CustomObjectsApi(handle.api_client())
    pool = api.get_cluster_custom_object("karpenter.sh", "v1", "nodepools", "gpu")
    change(pool["spec"]["template"])
    api.replace_cluster_custom_object("karpenter.sh", "v1", "nodepools", "gpu", pool)


def requirement(template: dict, key: str) -> dict:
    return next(r for r in template["spec"]["requirements"] if r["key"] == key)


def blocked_without_writes(handle) -> str:
    mark = handle.control.audit_mark()
    result = deploy(handle)
    assert result.returncode != 0, output(result)[-3000:]
    assert writes(handle.control.audit_since(mark)) == []
    text = output(result)
    assert "nothing was changed" in text and "no Karpenter NodePool can make one for the serving pods" in text
    return text


def test_a_nodepool_that_cannot_make_a_t4_node_stops_the_run_naming_its_requirement(make_sandbox):
    handle = make_sandbox(gpu_node=False)
    replace_nodepool(handle, lambda t: requirement(t, "karpenter.k8s.aws/instance-family").update(values=["p3"]))
    text = blocked_without_writes(handle)
    assert ('NodePool gpu: spec.template.spec.requirements[0] = karpenter.k8s.aws/instance-family In ["p3"] '
            "admits no T4 instance type") in text
    assert '"values": ["g4dn"]' in text


def test_a_nodepool_taint_the_pods_do_not_tolerate_stops_the_run_naming_the_toleration_to_add(make_sandbox):
    handle = make_sandbox(gpu_node=False)
    replace_nodepool(handle, lambda t: t["spec"]["taints"].append({"key": "team", "value": "ml", "effect": "NoSchedule"}))
    text = blocked_without_writes(handle)
    assert "NodePool gpu: spec.template.spec.taints[1] = team=ml:NoSchedule is not tolerated by the serving pods" in text
    assert 'add {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} to gpu_tolerations' in text


def test_a_nodepool_whose_nodes_lack_the_selector_label_stops_the_run_naming_label_and_fix(make_sandbox):
    handle = make_sandbox(gpu_node=False)
    replace_nodepool(handle, lambda t: t["metadata"].update(labels={"node-type": "worker"}))
    text = blocked_without_writes(handle)
    assert ("NodePool gpu: spec.template.metadata.labels = node-type=worker does not admit gpu_node_selector "
            "node-type=gpu") in text
    assert 'set node-type: "gpu" in spec.template.metadata.labels' in text


def test_a_nodepool_check_is_only_said_when_a_gpu_node_is_there_already(make_sandbox):
    handle = make_sandbox()  # the GPU node of a managed node group, say: no replacement is needed to deploy
    replace_nodepool(handle, lambda t: requirement(t, "karpenter.k8s.aws/instance-family").update(values=["p3"]))
    result = run_pyinfra(handle, "deploy.py", "--dry")
    assert_ok(result)
    assert "(GPU nodes are there, so only a replacement would need it) NodePool gpu:" in output(result)


def test_a_nodepool_admitting_multi_gpu_types_deploys_with_a_warning_naming_them_and_the_bound(sandbox):
    replace_nodepool(sandbox, lambda t: t["spec"].update(requirements=[
        r for r in t["spec"]["requirements"] if r["key"] != "karpenter.k8s.aws/instance-gpu-count"]))
    result = run_pyinfra(sandbox, "deploy.py", "--dry")
    assert_ok(result)
    text = output(result)
    assert "NodePool gpu admits g4dn.12xlarge (4 GPUs), g4dn.metal (8 GPUs)" in text
    assert '{"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Lt", "values": ["2"]}' in text
    # The sandbox's own NodePool bounds the GPU count: no such warning there.
    replace_nodepool(sandbox, lambda t: t["spec"]["requirements"].append(
        {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Lt", "values": ["2"]}))
    again = run_pyinfra(sandbox, "deploy.py", "--dry")
    assert_ok(again)
    assert "multi-GPU" not in output(again) and "admits g4dn.12xlarge" not in output(again)


def test_an_image_on_a_moving_tag_gets_one_warning_line_naming_the_setting_that_pins_it(sandbox):
    result = run_pyinfra(sandbox, "deploy.py", "--dry", "--data", "asr_ecr_repository=null")
    assert_ok(result)
    lines = [line for line in output(result).splitlines() if "is a moving tag" in line]
    assert len(lines) == 1, lines
    assert "asr_image 'qwenllm/qwen3-asr:latest' is a moving tag" in lines[0] and "asr_ecr_repository" in lines[0]


def test_the_asr_image_is_pinned_by_digest_from_ecr_and_pulled_if_not_present(deployed):
    state = deployed.state
    registry = f"{state['account_id']}.dkr.ecr.{state['region']}.amazonaws.com"
    pinned = f"{registry}/{state['asr_ecr_repository']}@{state['asr_ecr_image_digest']}"
    apps = client.AppsV1Api(deployed.api_client())
    for name in ("qwen3-asr", "qwen3-tts"):
        spec = apps.read_namespaced_deployment(name, "hosthree").spec.template.spec
        for container in spec.init_containers + spec.containers:
            assert "@sha256:" in container.image and container.image_pull_policy == "IfNotPresent", (name, container.name)
    asr = apps.read_namespaced_deployment("qwen3-asr", "hosthree").spec.template.spec
    assert [c.image for c in asr.init_containers + asr.containers] == [pinned, pinned]
    assert "is a moving tag" not in output(deploy(deployed, "--dry"))
