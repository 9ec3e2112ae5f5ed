"""Admission every EKS API server runs: NamespaceLifecycle, ServiceAccount, DefaultStorageClass."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException


def pod(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec}}


def refusal(error: ApiException) -> tuple[int, dict]:
    return error.status, json.loads(error.body)


def test_a_create_in_a_namespace_that_does_not_exist_is_404(kube):
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    code, status = refusal(refused.value)
    assert code == 404 and status["message"] == 'namespaces "nowhere" not found'


def test_a_new_namespace_gets_the_default_service_account_and_the_cluster_ca(kube):
    kube.core.create_namespace({"metadata": {"name": "fresh"}})
    assert kube.core.read_namespaced_service_account("default", "fresh").metadata.name == "default"
    ca = kube.core.read_namespaced_config_map("kube-root-ca.crt", "fresh").data["ca.crt"]
    assert ca.startswith("-----BEGIN CERTIFICATE-----")


def test_a_pod_gets_the_default_service_account_and_its_projected_token(kube):
    created = kube.core.create_namespaced_pod("default", pod("plain"))
    assert created.spec.service_account_name == "default"
    [volume] = [v for v in created.spec.volumes if v.name.startswith("kube-api-access-")]
    assert [bool(s.service_account_token) for s in volume.projected.sources] == [True, False, False]
    [mount] = created.spec.containers[0].volume_mounts
    assert mount.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount" and mount.read_only


def test_no_token_is_projected_when_the_pod_or_its_service_account_turns_it_off(kube):
    created = kube.core.create_namespaced_pod("default", pod("quiet", automountServiceAccountToken=False))
    assert not created.spec.volumes
    kube.core.create_namespaced_service_account("default", {"metadata": {"name": "silent"},
                                                            "automountServiceAccountToken": False})
    created = kube.core.create_namespaced_pod("default", pod("quiet2", serviceAccountName="silent"))
    assert not created.spec.volumes and created.spec.service_account_name == "silent"


def test_a_pod_naming_a_missing_service_account_is_refused(kube):
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_pod("default", pod("lost", serviceAccountName="ghost"))
    code, status = refusal(refused.value)
    assert code == 403 and status["reason"] == "Forbidden"
    assert status["message"] == ('pods "lost" is forbidden: error looking up service account default/ghost: '
                                 'serviceaccount "ghost" not found')


def test_a_claim_without_a_class_gets_the_default_storage_class_and_an_explicit_empty_class_stays(kube):
    kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body={
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "ebs.csi.aws.com",
        "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}})
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}}
    assert kube.core.create_namespaced_persistent_volume_claim("default", claim).spec.storage_class_name == "gp3"
    claim["metadata"]["name"], claim["spec"]["storageClassName"] = "static", ""
    assert kube.core.create_namespaced_persistent_volume_claim("default", claim).spec.storage_class_name == ""
