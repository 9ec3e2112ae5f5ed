"""EFS storage in the sandbox cluster: dynamic provisioning, where the data lives, and what survives."""

from __future__ import annotations

import os

import pytest

from sandbox.cluster.common import CSIDRIVERS, JOBS, PVCS, PVS, STORAGECLASSES, condition
from tests.aws_helpers import running_sandbox_aws
from tests.cluster_helpers import events, job, pods, running_cluster, wait_for

FS_ID = "fs-0123456789abcdef0"


def storage_class(name: str = "efs-sc", *, fs_id: str = FS_ID, fixed_path: bool = True, reclaim: str = "Retain",
                  binding: str = "Immediate", **extra: str) -> dict:
    parameters = {"provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "755",
                  "basePath": "/qwen3-speech", **extra}
    if fixed_path:
        parameters.update(subPathPattern="${.PVC.namespace}/${.PVC.name}", ensureUniqueDirectory="false")
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "efs.csi.aws.com", "reclaimPolicy": reclaim, "volumeBindingMode": binding,
            "parameters": parameters}


def claim(name: str = "models", storage_class_name: str = "efs-sc") -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class_name,
                     "resources": {"requests": {"storage": "50Gi"}}}}


def phase(store, name: str = "models") -> str | None:
    pvc = store.get(PVCS, "default", name)
    return (pvc.get("status") or {}).get("phase") if pvc else None


def models_job(name: str, code: str) -> dict:
    return job(name, ["python3", "-c", code, "/models/qwen/hello.txt"],
               container={"volumeMounts": [{"name": "models", "mountPath": "/models"}]},
               spec={"volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]})


def job_log(cluster, name: str) -> str:
    wait_for(lambda: condition(cluster.store.get(JOBS, "default", name), "Complete"), f"job {name} to complete")
    (pod,) = pods(cluster.store, selector=f"job-name={name}")
    return cluster.pod_log_path("default", pod["metadata"]["name"], "main").read_text()


def test_claim_binds_to_an_access_point_volume_under_the_class_base_path(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class())
        store.create(PVCS, claim())
        wait_for(lambda: phase(store) == "Bound", "the claim to bind")
        pvc = store.get(PVCS, "default", "models")
        pv = store.get(PVS, None, pvc["spec"]["volumeName"])
        assert pv["spec"]["csi"]["driver"] == "efs.csi.aws.com"
        assert pv["spec"]["csi"]["volumeHandle"].startswith(FS_ID + "::fsap-")
        assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["spec"]["capacity"]["storage"] == "50Gi" == pvc["status"]["capacity"]["storage"]
        assert cluster.storage.local_dir(pv) == tmp_path / "efs" / FS_ID / "qwen3-speech" / "default" / "models"
        assert events(store, "models", reason="ProvisioningSucceeded")


def test_claim_stays_pending_without_the_csi_driver_and_binds_once_it_exists(tmp_path):
    with running_cluster(tmp_path, efs_csi_driver=False) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class())
        store.create(PVCS, claim())
        waiting = wait_for(lambda: events(store, "models", reason="ExternalProvisioning"), "a waiting event")
        assert "external provisioner 'efs.csi.aws.com'" in waiting[0]["message"]
        assert phase(store) == "Pending"
        store.create(CSIDRIVERS, {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
                                  "metadata": {"name": "efs.csi.aws.com"}, "spec": {"attachRequired": False}})
        wait_for(lambda: phase(store) == "Bound", "the claim to bind after the driver appears")


def test_claim_of_a_missing_file_system_stays_pending_with_provisioning_failed(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class(fs_id="fs-doesnotexist"))
        store.create(PVCS, claim())
        failed = wait_for(lambda: events(store, "models", reason="ProvisioningFailed"), "ProvisioningFailed")
        assert failed[0]["type"] == "Warning"
        assert failed[0]["message"].startswith('failed to provision volume with StorageClass "efs-sc": ')
        assert "File System does not exist" in failed[0]["message"] and "fs-doesnotexist" in failed[0]["message"]
        assert phase(store) == "Pending" and not store.list(PVS)


def test_recreated_claim_with_a_fixed_path_sees_the_data_written_before(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class())
        store.create(PVCS, claim())
        store.create(JOBS, models_job("write", "import pathlib, sys\np = pathlib.Path(sys.argv[1])\n"
                                               "p.parent.mkdir(parents=True, exist_ok=True)\np.write_text('weights')\n"
                                               "print('wrote', sys.argv[1])"))
        assert "wrote " in job_log(cluster, "write")
        first_pv = store.get(PVCS, "default", "models")["spec"]["volumeName"]

        store.delete(PVCS, "default", "models")
        wait_for(lambda: (store.get(PVS, None, first_pv) or {}).get("status", {}).get("phase") == "Released",
                 "the retained volume to be Released")
        store.create(PVCS, claim())
        wait_for(lambda: phase(store) == "Bound", "the new claim to bind")
        assert store.get(PVCS, "default", "models")["spec"]["volumeName"] != first_pv
        store.create(JOBS, models_job("read", "import pathlib, sys\nprint(pathlib.Path(sys.argv[1]).read_text())"))
        assert job_log(cluster, "read").strip() == "weights"


def test_default_unique_directory_gives_a_recreated_claim_an_empty_volume_and_delete_keeps_the_data(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class(fixed_path=False, reclaim="Delete"))
        store.create(PVCS, claim())
        wait_for(lambda: phase(store) == "Bound", "the claim to bind")
        first = cluster.storage.local_dir(store.get(PVS, None, store.get(PVCS, "default", "models")["spec"]["volumeName"]))
        (first / "kept.txt").write_text("data")
        store.delete(PVCS, "default", "models")
        wait_for(lambda: not store.list(PVS), "the Delete-policy volume to go")
        assert (first / "kept.txt").read_text() == "data"
        store.create(PVCS, claim())
        wait_for(lambda: phase(store) == "Bound", "the new claim to bind")
        second = cluster.storage.local_dir(store.list(PVS)[0])
        assert second != first and not any(second.iterdir())


def test_wait_for_first_consumer_binds_only_when_a_pod_uses_the_claim(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class(binding="WaitForFirstConsumer"))
        store.create(PVCS, claim())
        wait_for(lambda: events(store, "models", reason="WaitForFirstConsumer"), "the waiting event")
        assert phase(store) == "Pending"
        store.create(JOBS, models_job("use", "print('using the volume')"))
        assert "using the volume" in job_log(cluster, "use")
        assert phase(store) == "Bound"


def bound_pv(store, name: str = "models") -> dict:
    wait_for(lambda: phase(store, name) == "Bound", f"claim {name} to bind")
    return store.get(PVS, None, store.get(PVCS, "default", name)["spec"]["volumeName"])


def access_point(sandbox_aws, pv: dict) -> dict:
    point_id = pv["spec"]["csi"]["volumeHandle"].split("::")[1]
    (point,) = sandbox_aws.client("efs").describe_access_points(AccessPointId=point_id)["AccessPoints"]
    return point


def test_a_class_with_uid_and_gid_creates_an_access_point_with_that_posix_user_owning_its_root(tmp_path):
    with running_sandbox_aws(tmp_path / "aws") as sandbox_aws, running_cluster(tmp_path, aws=sandbox_aws) as cluster:
        fs_id = sandbox_aws.facts["efs_file_system_id"]
        cluster.store.create(STORAGECLASSES, storage_class(fs_id=fs_id, uid="1000", gid="1000"))
        cluster.store.create(PVCS, claim())
        pv = bound_pv(cluster.store)
        point = access_point(sandbox_aws, pv)
        assert point["PosixUser"] == {"Uid": 1000, "Gid": 1000}
        assert point["RootDirectory"]["Path"] == "/qwen3-speech/default/models"
        assert point["RootDirectory"]["CreationInfo"] == {"OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "755"}
        root = cluster.storage.local_dir(pv).stat()
        assert oct(root.st_mode & 0o777) == "0o755"
        if os.geteuid() == 0:
            assert (root.st_uid, root.st_gid) == (1000, 1000)


def test_without_uid_and_gid_each_access_point_gets_the_next_free_gid_of_the_range_as_uid_and_gid(tmp_path):
    with running_sandbox_aws(tmp_path / "aws") as sandbox_aws, running_cluster(tmp_path, aws=sandbox_aws) as cluster:
        fs_id = sandbox_aws.facts["efs_file_system_id"]
        cluster.store.create(STORAGECLASSES, storage_class(fs_id=fs_id, fixed_path=False, gidRangeStart="2000",
                                                           gidRangeEnd="2001"))
        cluster.store.create(STORAGECLASSES, storage_class("efs-default", fs_id=fs_id, fixed_path=False))
        for name, class_name in (("a", "efs-sc"), ("b", "efs-sc"), ("c", "efs-sc"), ("d", "efs-default")):
            cluster.store.create(PVCS, claim(name, class_name))
        users = {name: access_point(sandbox_aws, bound_pv(cluster.store, name))["PosixUser"] for name in "abd"}
        assert sorted(u["Gid"] for n, u in users.items() if n != "d") == [2000, 2001]
        assert users["d"]["Gid"] == 50000
        assert all(u["Uid"] == u["Gid"] for u in users.values())
        wait_for(lambda: events(cluster.store, "c", reason="ProvisioningFailed"), "the range to run out for c")
        assert "Failed to locate a free GID" in events(cluster.store, "c", reason="ProvisioningFailed")[0]["message"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet stand-in can switch users only when it runs as root")
def test_a_recreated_claim_with_an_allocated_gid_cannot_write_the_old_directory(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class())
        store.create(PVCS, claim())
        write = ("import pathlib, sys\np = pathlib.Path(sys.argv[1])\np.parent.mkdir(parents=True, exist_ok=True)\n"
                 "try:\n    p.write_text('weights')\n    print('wrote')\nexcept PermissionError as e:\n    print(e)")
        store.create(JOBS, models_job("write", write))
        assert job_log(cluster, "write").strip() == "wrote"
        store.delete(PVCS, "default", "models")
        wait_for(lambda: store.get(PVCS, "default", "models") is None, "the claim to go")
        store.create(PVCS, claim())
        bound_pv(store)
        store.create(JOBS, models_job("rewrite", write.replace("hello.txt", "x")))
        assert "[Errno 13] Permission denied" in job_log(cluster, "rewrite")
        store.create(JOBS, models_job("read", "import pathlib, sys\nprint(pathlib.Path(sys.argv[1]).read_text())"))
        assert job_log(cluster, "read").strip() == "weights"
