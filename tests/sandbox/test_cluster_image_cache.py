"""A node Karpenter boots from an EC2NodeClass whose data volume is an image-cache snapshot pulls nothing it holds,
and has on its disk the model files downloaded onto that volume.

The snapshot is made as awslabs' bottlerocket-images-cache makes one, with plain boto3 against the
sandbox's AWS: a Bottlerocket instance, an SSM `ctr images pull` on it (and the `huggingface-cli
download` that `image-cache build` sends), a snapshot of /dev/xvdb.
"""

from __future__ import annotations

import pytest

from qwen_speech.image_cache import NODE_MODEL_DIR, model_commands, model_dir_name
from sandbox.aws import BOTTLEROCKET_AMI_PARAMETER
from sandbox.cluster.common import DEPLOYMENTS, NODEPOOLS, NODES
from sandbox.cluster.device_plugin import EC2NODECLASSES
from tests.aws_helpers import running_sandbox_aws
from tests.cluster_helpers import deployment, deployment_ready, pods, running_cluster, wait_for

# Fully qualified and pinned, as the deploy's images are: ctr and the pod name it alike.
CACHED = "123456789012.dkr.ecr.us-west-2.amazonaws.com/busybox@sha256:" + "b" * 64


@pytest.fixture(scope="module")
def sandbox_aws(tmp_path_factory):
    with running_sandbox_aws(tmp_path_factory.mktemp("aws")) as started:
        yield started


def cache_snapshot(aws, image: str, *more_commands: list[str]) -> str:
    """A Bottlerocket data-volume snapshot after `image` was pulled on its instance through SSM (and
    `more_commands` ran there)."""
    ec2, ssm = aws.client("ec2"), aws.client("ssm")
    ami = ssm.get_parameter(Name=BOTTLEROCKET_AMI_PARAMETER)["Parameter"]["Value"]
    instance = ec2.run_instances(ImageId=ami, InstanceType="m5.large", MinCount=1, MaxCount=1, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 100, "DeleteOnTermination": True}}])["Instances"][0]
    ssm.send_command(InstanceIds=[instance["InstanceId"]], DocumentName="AWS-RunShellScript", Parameters={"commands": [
        "apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n k8s.io images pull "
        f"--label io.cri-containerd.image=managed {image}"]})
    for commands in more_commands:
        ssm.send_command(InstanceIds=[instance["InstanceId"]], DocumentName="AWS-RunShellScript",
                         Parameters={"commands": commands})
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    volume = next(m["Ebs"]["VolumeId"] for m in described["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdb")
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    return snapshot


def cached_pool(snapshot: str) -> tuple[dict, dict]:
    nodeclass = {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "cached"},
                 "spec": {"role": "KarpenterNodeRole-qwen3-sandbox", "amiSelectorTerms": [{"alias": "bottlerocket@latest"}],
                          "blockDeviceMappings": [{"deviceName": "/dev/xvdb",
                                                   "ebs": {"volumeSize": "100Gi", "snapshotID": snapshot}}]}}
    pool = {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "cached"},
            "spec": {"weight": 10, "template": {
                "metadata": {"labels": {"node-type": "gpu"}},
                "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "cached"},
                         "requirements": [{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g4dn"]}],
                         "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]}}}}
    return nodeclass, pool


def launched_cached_node(store, snapshot: str) -> str:
    """The node Karpenter launches from the cached pool for a 1-GPU deployment of CACHED, once it runs there."""
    nodeclass, pool = cached_pool(snapshot)
    store.create(EC2NODECLASSES, nodeclass)
    store.create(NODEPOOLS, pool)
    store.create(DEPLOYMENTS, deployment("cached", gpu=1, image=CACHED))
    wait_for(lambda: deployment_ready(store, "default", "cached"), "the GPU deployment on a launched node", timeout=30)
    return pods(store, selector="app=cached")[0]["spec"]["nodeName"]


def kubelet_events(store, node: str, reason: str) -> list[str]:
    from sandbox.cluster.common import EVENTS

    return [e["message"] for e in store.list(EVENTS, "default")
            if e["reason"] == reason and (e.get("source") or {}).get("host") == node]


def test_a_node_booted_from_an_image_cache_snapshot_and_its_spot_replacement_find_the_image_present_and_pull_nothing(
        tmp_path, sandbox_aws):
    snapshot = cache_snapshot(sandbox_aws, CACHED)
    assert sandbox_aws.snapshot_images(snapshot) == [CACHED]
    with running_cluster(tmp_path, aws=sandbox_aws, gpu_node=False) as cluster:
        store = cluster.store
        node = launched_cached_node(store, snapshot)
        assert store.get(NODES, None, node)["metadata"]["labels"]["karpenter.sh/nodepool"] == "cached"
        assert [n["metadata"]["name"] for n in store.list(NODES, label_selector="node-type=gpu")] == [node]
        assert kubelet_events(store, node, "Pulling") == []
        assert f'Container image "{CACHED}" already present on machine' in kubelet_events(store, node, "Pulled")

        # Karpenter's replacement after a Spot interruption boots from the same EC2NodeClass.
        replacement = cluster.faults.inject("spot-interruption", {"node": node, "replacement_delay": 0.3})["replacement"]
        wait_for(lambda: [p for p in pods(store, selector="app=cached") if p["spec"].get("nodeName") == replacement]
                 and deployment_ready(store, "default", "cached"), "the pod to run again on the replacement", timeout=30)
        assert kubelet_events(store, replacement, "Pulling") == []
        assert f'Container image "{CACHED}" already present on machine' in kubelet_events(store, replacement, "Pulled")


def test_a_snapshot_of_a_volume_nothing_was_pulled_onto_holds_no_images(sandbox_aws):
    ec2 = sandbox_aws.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=100)["VolumeId"]
    assert sandbox_aws.snapshot_images(ec2.create_snapshot(VolumeId=volume)["SnapshotId"]) == []


def test_a_node_booted_from_a_snapshot_with_a_downloaded_model_has_its_files_on_its_disk_and_they_go_with_the_node(
        tmp_path, sandbox_aws):
    from sandbox.hub import ASR_REPO, HubServer

    hub = HubServer(tmp_path / "hub")  # what the build instance's download fetched (not served: no bytes move)
    sandbox_aws.model_source = hub
    commit = hub.commit_of(ASR_REPO)
    try:
        snapshot = cache_snapshot(sandbox_aws, CACHED, model_commands(CACHED, "asr", ASR_REPO, commit, None))
        directory = f"{NODE_MODEL_DIR}/{model_dir_name(ASR_REPO, commit)}"
        files = sandbox_aws.snapshot_files(snapshot)
        assert sorted(files) == sorted(f"{directory}/{path}" for path in hub.files_at(ASR_REPO))
        with running_cluster(tmp_path, aws=sandbox_aws, gpu_node=False) as cluster:
            node = launched_cached_node(cluster.store, snapshot)
            disk = tmp_path / "hostpath" / node / directory.lstrip("/")  # where a hostPath volume of the node points
            for path, blob in hub.files_at(ASR_REPO).items():
                assert (disk / path).read_bytes() == hub.blobs.path(blob.sha256).read_bytes()
            replacement = cluster.faults.inject("spot-interruption", {"node": node, "replacement_delay": 0.3})["replacement"]
            wait_for(lambda: (tmp_path / "hostpath" / replacement / directory.lstrip("/")).is_dir()
                     and not disk.exists(), "the replacement's disk with the model, the old node's gone", timeout=30)
    finally:
        sandbox_aws.model_source = None
