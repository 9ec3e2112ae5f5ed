"""The GPU image cache: `image-cache build` against the sandbox's AWS, and a deploy whose new GPU node pulls
nothing and seeds the models from its own disk.

`python -m qwen_speech image-cache build` runs as an operator runs it; the sandbox's AWS is moto,
whose SSM history tells which images the build instance pulled and which models it downloaded
before its data volume was snapshotted, and the Karpenter stand-in boots a node of the managed
NodePool with them (the models as files under /local, which the seeding pod mounts by hostPath).
"""

from __future__ import annotations

import os
import json
import re
import subprocess
import sys
import urllib.request

import boto3
import pytest
from kubernetes import client

from sandbox.hub import ASR_REPO, TTS_REPO
from tests.deploy_helpers import ROOT, assert_ok, deploy, output, writes
from tests.seed_helpers import MANIFEST_NAME, run_guard

NODEPOOL = "qwen3-speech-gpu"


def image_cache_build(sandbox, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update(QWEN3_SANDBOX_DIR=str(sandbox.root), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "qwen_speech", "image-cache", "build", "inventories/sandbox.py", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def ec2_of(sandbox):
    state = sandbox.state
    return boto3.client("ec2", region_name=state["region"], endpoint_url=state["aws_endpoint_url"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def pinned_images(sandbox) -> dict[str, str]:
    state = sandbox.state
    registry = f"{state['account_id']}.dkr.ecr.{state['region']}.amazonaws.com"
    return {"asr": f"{registry}/{state['asr_ecr_repository']}@{state['asr_ecr_image_digest']}",
            "tts": f"{registry}/qwen3-tts@{state['ecr_image_digest']}"}


def built_snapshot(sandbox) -> str:
    result = image_cache_build(sandbox)
    assert result.returncode == 0, output(result)[-4000:]
    found = re.search(r"gpu_image_cache_snapshot_id = '(snap-[0-9a-f]+)'", result.stdout)
    assert found, result.stdout
    return found.group(1)


def test_image_cache_build_makes_a_completed_snapshot_tagged_with_both_pinned_images_and_leaves_no_instance(make_sandbox):
    sandbox = make_sandbox(with_cluster=False)
    result = image_cache_build(sandbox)
    assert result.returncode == 0, output(result)[-4000:]
    lines = result.stdout.splitlines()
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == [
        "[1/7", "[2/7", "[3/7", "[4/7", "[4/7", "[4/7", "[4/7", "[5/7", "[6/7", "[7/7"]
    snapshot_id = re.search(r"gpu_image_cache_snapshot_id = '(snap-[0-9a-f]+)'", lines[-1]).group(1)
    ec2 = ec2_of(sandbox)
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snapshot["State"] == "completed"
    tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
    images = pinned_images(sandbox)
    assert tags["qwen3-speech/image/asr"] == images["asr"] and tags["qwen3-speech/image/tts"] == images["tts"]
    commits = hub_commits(sandbox)
    assert tags["qwen3-speech/model/asr"] == f"{ASR_REPO}@{commits[ASR_REPO]}"
    assert tags["qwen3-speech/model/tts"] == f"{TTS_REPO}@{commits[TTS_REPO]}"
    states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert states and set(states) == {"terminated"}


def test_image_cache_build_refuses_an_image_on_a_moving_tag_and_launches_nothing(make_sandbox):
    sandbox = make_sandbox(with_cluster=False)
    result = image_cache_build(sandbox, "--data", "asr_ecr_repository=null")
    assert result.returncode == 2
    assert "asr_image 'qwenllm/qwen3-asr:latest' is not pinned by digest" in result.stderr
    assert ec2_of(sandbox).describe_instances()["Reservations"] == []


def hub_commits(sandbox) -> dict[str, str]:
    """What main is on the sandbox's Hub now, for both repos (the inventory pins main)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=sandbox.state["hub_url"])
    return {repo: api.model_info(repo, revision="main").sha for repo in (ASR_REPO, TTS_REPO)}


def hub_files_served(sandbox) -> set[str]:
    """"repo/path" of every file the sandbox's Hub has sent bytes of."""
    with urllib.request.urlopen(sandbox.state["hub_url"] + "/_sandbox/stats", timeout=10) as answer:
        return {key for key, sent in json.load(answer)["bytes_served"].items() if sent}


def models_on_efs_verify(sandbox) -> dict[str, str]:
    """Each model directory on the sandbox's EFS passes the pods' model guard; repo -> commit."""
    found = {}
    for manifest in sandbox.root.glob(f"efs/**/{MANIFEST_NAME}"):
        seeded = json.loads(manifest.read_text())
        guard = run_guard(manifest.parent, seeded["repo"], seeded["commit"])
        assert guard.returncode == 0, guard.output
        found[seeded["repo"]] = seeded["commit"]
    return found


def kubelet_events(sandbox, node: str) -> list:
    events = client.CoreV1Api(sandbox.api_client()).list_namespaced_event("hosthree").items
    return [e for e in events if e.source and e.source.host == node and e.reason in ("Pulling", "Pulled")]


def test_a_deploy_with_the_image_cache_onto_a_cluster_without_gpu_nodes_pulls_neither_image_seeds_both_models_from_the_nodes_disk_and_reruns_without_writes(
        make_sandbox):
    sandbox = make_sandbox(gpu_node=False)
    snapshot_id = built_snapshot(sandbox)
    options = ("--data", "manage_gpu_nodepool=true", "--data", f"gpu_image_cache_snapshot_id={snapshot_id}")
    served_before = hub_files_served(sandbox)
    result = deploy(sandbox, *options)
    assert_ok(result)
    assert f"image cache {snapshot_id}: new GPU nodes boot with" in output(result)
    assert output(result).count("copying from the GPU node's disk (/local/qwen3-speech-models/") == 2
    assert hub_files_served(sandbox) - served_before == set(), "a model file came from the Hub"
    assert models_on_efs_verify(sandbox) == hub_commits(sandbox)

    nodes = client.CoreV1Api(sandbox.api_client()).list_node(label_selector="node-type=gpu").items
    assert [n.metadata.labels["karpenter.sh/nodepool"] for n in nodes] == [NODEPOOL]
    node = nodes[0].metadata.name
    images = pinned_images(sandbox)
    events = kubelet_events(sandbox, node)
    pulled = [e.message for e in events if e.reason == "Pulling" and any(i in e.message for i in images.values())]
    assert pulled == []
    present = {e.message for e in events if e.reason == "Pulled"}
    for image in images.values():
        assert f'Container image "{image}" already present on machine' in present

    mark = sandbox.control.audit_mark()
    assert_ok(deploy(sandbox, *options))
    assert [r for r in writes(sandbox.control.audit_since(mark)) if r.get("resource") != "leases"] == []


def test_a_model_the_snapshot_holds_at_another_commit_is_seeded_from_the_hub_and_the_deploy_says_why(make_sandbox):
    sandbox = make_sandbox(gpu_node=False)
    snapshot_id = built_snapshot(sandbox)
    cached_asr = hub_commits(sandbox)[ASR_REPO]
    moved = sandbox.control.fault("hub-new-revision", repo=ASR_REPO, path="config.json")["result"]["commit"]
    served_before = hub_files_served(sandbox)
    result = deploy(sandbox, "--data", "manage_gpu_nodepool=true", "--data", f"gpu_image_cache_snapshot_id={snapshot_id}")
    assert_ok(result)
    assert (f"4. models: ASR {ASR_REPO}@{moved[:12]}: image cache {snapshot_id} holds {ASR_REPO}@{cached_asr[:12]}, "
            "not this commit: seeding from the Hub") in output(result)
    served = hub_files_served(sandbox) - served_before
    assert served and all(key.startswith(ASR_REPO + "/") for key in served), served  # TTS's came from the node
    assert output(result).count("copying from the GPU node's disk") == 1  # TTS's, at the commit the snapshot holds
    assert models_on_efs_verify(sandbox) == {ASR_REPO: moved, TTS_REPO: hub_commits(sandbox)[TTS_REPO]}


def test_with_the_image_cache_the_nodes_own_device_plugin_is_enough_where_no_plugin_daemonset_is_installed(make_sandbox):
    sandbox = make_sandbox(gpu_node=False, device_plugin=False)
    snapshot_id = built_snapshot(sandbox)
    result = deploy(sandbox, "--data", "manage_gpu_nodepool=true", "--data", f"gpu_image_cache_snapshot_id={snapshot_id}")
    assert_ok(result)
    assert f"device plugin: Bottlerocket nodes of EC2NodeClass {NODEPOOL}" in output(result)
    node = client.CoreV1Api(sandbox.api_client()).list_node(label_selector="node-type=gpu").items[0]
    assert node.status.allocatable["nvidia.com/gpu"] == "2"  # 1 T4 x time_slicing_replicas, from the user data


@pytest.mark.parametrize("snapshot_id, said", [
    ("snap-0123456789abcdef0", "gpu_image_cache_snapshot_id = 'snap-0123456789abcdef0': no such EBS snapshot"),
    ("snap-xyz", "gpu_image_cache_snapshot_id = 'snap-xyz': must be an EBS snapshot id"),
])
def test_a_bad_image_cache_snapshot_id_is_refused_before_any_write(sandbox, snapshot_id, said):
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox, "--data", "manage_gpu_nodepool=true", "--data", f"gpu_image_cache_snapshot_id={snapshot_id}")
    assert result.returncode != 0
    assert said in output(result), output(result)[-3000:]
    assert writes(sandbox.control.audit_since(mark)) == []


def test_the_deployer_needs_the_nodepool_rights_only_with_manage_gpu_nodepool():
    from tasks.permissions import Right, needed_rights

    create_pool = Right("create", "karpenter.sh", "nodepools", "")
    assert create_pool not in needed_rights("hosthree")
    assert create_pool in needed_rights("hosthree", settings_on=frozenset({"manage_gpu_nodepool"}))
