"""EFS access point identity: a recreated models PVC gets a new access point, and only a fixed
uid/gid in the StorageClass lets the next re-seed write the directory the old one left behind
(the sandbox's EFS runs every container mounting the volume as the access point's POSIX user)."""

from __future__ import annotations

import os

import boto3
import pytest
from kubernetes import client

from tests.cluster_helpers import wait_for
from tests.deploy_helpers import assert_ok, deploy, deployed, output, run_pyinfra, writes  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the sandbox kubelet can run containers as another user only as root")

NS, PVC, ASR_REPO = "hosthree", "qwen3-models-pvc", "Qwen/Qwen3-ASR-1.7B"
TODAY = ("--data", "efs_posix_uid=null", "--data", "efs_posix_gid=null")


def _efs(sandbox):
    env = sandbox.env()
    return boto3.client("efs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env.get("AWS_DEFAULT_REGION", "us-west-2"),
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _access_point(sandbox) -> dict:
    core = client.CoreV1Api(sandbox.api_client())
    pv = core.read_persistent_volume(core.read_namespaced_persistent_volume_claim(PVC, NS).spec.volume_name)
    (point,) = _efs(sandbox).describe_access_points(AccessPointId=pv.spec.csi.volume_handle.split("::")[1])["AccessPoints"]
    return point


def _recreate_claim_and_move_asr(sandbox) -> str:
    """Stop what uses the claim, delete it, wait until it is gone; then a new ASR commit on the Hub."""
    api = sandbox.api_client()
    apps, batch, core = client.AppsV1Api(api), client.BatchV1Api(api), client.CoreV1Api(api)
    for name in ("qwen3-asr", "qwen3-tts"):
        apps.patch_namespaced_deployment_scale(name, NS, {"spec": {"replicas": 0}})
    for job in batch.list_namespaced_job(NS).items:
        batch.delete_namespaced_job(job.metadata.name, NS, propagation_policy="Background")
    core.delete_namespaced_persistent_volume_claim(PVC, NS)
    wait_for(lambda: not core.list_namespaced_persistent_volume_claim(NS).items, "the models PVC to go", timeout=60)
    return sandbox.control.fault("hub-new-revision", repo=ASR_REPO, path="config.json")["result"]["commit"]


def test_with_todays_storage_class_a_recreated_claim_cannot_reseed_a_new_commit_eacces(sandbox):
    assert_ok(deploy(sandbox, *TODAY))
    first = _access_point(sandbox)
    _recreate_claim_and_move_asr(sandbox)
    result = deploy(sandbox, *TODAY)
    second = _access_point(sandbox)
    assert second["RootDirectory"]["Path"] == first["RootDirectory"]["Path"]
    assert second["PosixUser"]["Gid"] != first["PosixUser"]["Gid"], "the driver allocated a new gid"
    assert result.returncode != 0
    assert "PermissionError: [Errno 13] Permission denied" in output(result), output(result)[-3000:]


def test_with_a_fixed_uid_and_gid_a_recreated_claim_reseeds_into_the_same_directory(sandbox):
    assert_ok(deploy(sandbox))
    first = _access_point(sandbox)
    assert first["PosixUser"] == {"Uid": 1000, "Gid": 1000}
    new = _recreate_claim_and_move_asr(sandbox)
    result = deploy(sandbox)
    assert_ok(result)
    second = _access_point(sandbox)
    assert second["AccessPointId"] != first["AccessPointId"]
    assert second["RootDirectory"]["Path"] == first["RootDirectory"]["Path"]
    record = client.CoreV1Api(sandbox.api_client()).read_namespaced_config_map("qwen3-speech-models", NS).data
    assert record["asr"] == new, "the new commit was seeded"
    assert "re-seeding" in output(result)


def test_a_storage_class_with_other_parameters_stops_preflight_without_writes_until_replace_is_asked(sandbox):
    assert_ok(deploy(sandbox, *TODAY))
    storage = client.StorageV1Api(sandbox.api_client())
    bound = _access_point(sandbox)["AccessPointId"]

    mark = sandbox.control.audit_mark()
    stopped = deploy(sandbox)
    assert stopped.returncode != 0
    text = output(stopped)
    assert "StorageClass qwen3-efs-sc: the live class differs" in text
    assert "parameters.gid: (none) -> '1000'" in text and "parameters.uid: (none) -> '1000'" in text
    assert "--data replace_storage_class=true" in text
    assert writes(sandbox.control.audit_since(mark)) == []
    assert "uid" not in storage.read_storage_class("qwen3-efs-sc").parameters

    mark = sandbox.control.audit_mark()
    dry = run_pyinfra(sandbox, "deploy.py", "--dry", "--data", "replace_storage_class=true")
    assert_ok(dry)
    assert "Will replace StorageClass qwen3-efs-sc: parameters.gid: (none) -> '1000'" in output(dry)
    assert writes(sandbox.control.audit_since(mark)) == []
    replaced = deploy(sandbox, "--data", "replace_storage_class=true")
    assert_ok(replaced)
    assert "deleted StorageClass qwen3-efs-sc to recreate it (parameters.gid: (none) -> '1000'" in output(replaced)
    params = storage.read_storage_class("qwen3-efs-sc").parameters
    assert (params["uid"], params["gid"]) == ("1000", "1000")
    assert _access_point(sandbox)["AccessPointId"] == bound, "the bound claim kept its volume"
    rerun = deploy(sandbox, "--data", "replace_storage_class=true")
    assert_ok(rerun)
    assert "Replace StorageClass" not in output(rerun), "an equal class is not replaced again"


def test_destroy_with_purge_models_also_deletes_the_retained_volume_and_its_access_point(deployed):
    point = _access_point(deployed)
    core = client.CoreV1Api(deployed.api_client())
    volume = core.read_namespaced_persistent_volume_claim(PVC, NS).spec.volume_name
    result = run_pyinfra(deployed, "destroy.py", "-y", "--data", "purge_models=true")
    assert_ok(result)
    assert f"deleted PersistentVolume {volume}" in output(result)
    assert f"deleted EFS access point {point['AccessPointId']}" in output(result)
    wait_for(lambda: volume not in [pv.metadata.name for pv in core.list_persistent_volume().items],
             "the retained PV to go", timeout=60)
    points = _efs(deployed).describe_access_points(FileSystemId=point["FileSystemId"])["AccessPoints"]
    assert point["AccessPointId"] not in [p["AccessPointId"] for p in points]
