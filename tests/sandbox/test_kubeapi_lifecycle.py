"""Object lifecycle as kube-apiserver has it: finalizers, propagation policies, namespace termination, dry-run deletes."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException


def config_map(name: str, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {"k": "v"}}


def owned_by(owner: dict, name: str) -> dict:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid}
    return config_map(name, ownerReferences=[ref])


def names(kube, namespace: str = "default") -> set[str]:
    return {c.metadata.name for c in kube.core.list_namespaced_config_map(namespace).items}


def test_an_object_with_a_finalizer_is_marked_on_delete_and_goes_when_the_finalizer_is_cleared(kube):
    kube.core.create_namespaced_config_map("default", config_map("held", finalizers=["example.com/hold"]))
    status, answer, _ = kube.request("DELETE", "/api/v1/namespaces/default/configmaps/held")
    assert status == 200 and answer["metadata"]["deletionTimestamp"]  # the object itself, not a Status: it is still there
    live = kube.core.read_namespaced_config_map("held", "default")
    assert live.metadata.deletion_timestamp and live.metadata.finalizers == ["example.com/hold"]
    with pytest.raises(ApiException) as refused:
        kube.core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": ["a/b", "example.com/hold"]}})
    assert refused.value.status == 422 and "no new finalizers can be added" in json.loads(refused.value.body)["message"]
    kube.core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    assert "held" not in names(kube)


def test_dry_run_delete_in_the_body_or_the_query_deletes_nothing(kube):
    kube.core.create_namespaced_config_map("default", config_map("kept"))
    status, body, _ = kube.request("DELETE", "/api/v1/namespaces/default/configmaps/kept",
                                   body={"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})
    assert status == 200 and body["status"] == "Success"
    kube.core.delete_namespaced_config_map("kept", "default", dry_run="All")
    assert "kept" in names(kube)


def test_background_deletion_takes_dependants_along_and_orphan_only_drops_the_owner_reference(kube):
    owner = kube.core.create_namespaced_config_map("default", config_map("owner"))
    kube.core.create_namespaced_config_map("default", owned_by(owner, "child"))
    kube.core.delete_namespaced_config_map("owner", "default")
    assert not {"owner", "child"} & names(kube)

    owner = kube.core.create_namespaced_config_map("default", config_map("owner2"))
    kube.core.create_namespaced_config_map("default", owned_by(owner, "child2"))
    kube.core.delete_namespaced_config_map("owner2", "default", propagation_policy="Orphan")
    assert kube.core.read_namespaced_config_map("child2", "default").metadata.owner_references is None


def test_foreground_deletion_waits_for_a_held_dependant_with_the_foreground_finalizer(kube):
    owner = kube.core.create_namespaced_config_map("default", config_map("parent"))
    child = owned_by(owner, "held-child")
    child["metadata"]["finalizers"] = ["example.com/hold"]
    child["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = True
    kube.core.create_namespaced_config_map("default", child)
    kube.core.delete_namespaced_config_map("parent", "default", propagation_policy="Foreground")
    parent = kube.core.read_namespaced_config_map("parent", "default")
    assert parent.metadata.finalizers == ["foregroundDeletion"] and parent.metadata.deletion_timestamp
    assert kube.core.read_namespaced_config_map("held-child", "default").metadata.deletion_timestamp
    kube.core.patch_namespaced_config_map("held-child", "default", {"metadata": {"finalizers": None}})
    assert not {"parent", "held-child"} & names(kube)


def test_a_namespace_is_terminating_while_content_is_held_and_refuses_new_content_with_403(kube):
    kube.core.create_namespace({"metadata": {"name": "leaving"}})
    kube.core.create_namespaced_config_map("leaving", config_map("held", finalizers=["example.com/hold"]))
    kube.core.create_namespaced_config_map("leaving", config_map("free"))
    status, answer, _ = kube.request("DELETE", "/api/v1/namespaces/leaving")
    assert status == 200 and answer["status"]["phase"] == "Terminating"
    assert kube.core.read_namespace("leaving").status.phase == "Terminating"
    assert names(kube, "leaving") == {"held"}
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_config_map("leaving", config_map("late"))
    status = json.loads(refused.value.body)
    assert refused.value.status == 403 and status["reason"] == "Forbidden"
    assert status["message"] == ('configmaps "late" is forbidden: unable to create new content in namespace leaving '
                                 "because it is being terminated")
    assert status["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    kube.core.patch_namespaced_config_map("held", "leaving", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespace("leaving")
    assert gone.value.status == 404


def test_an_empty_namespace_goes_at_once(kube):
    kube.core.create_namespace({"metadata": {"name": "brief"}})
    kube.core.delete_namespace("brief")
    assert "brief" not in {n.metadata.name for n in kube.core.list_namespace().items}


def test_a_pod_on_a_node_is_terminating_for_its_grace_period_and_an_unscheduled_pod_goes_at_once(kube):
    spec = {"containers": [{"name": "main", "image": "busybox:1.36"}], "automountServiceAccountToken": False}
    kube.core.create_namespaced_pod("default", {"metadata": {"name": "placed"}, "spec": {**spec, "nodeName": "n1"}})
    kube.core.create_namespaced_pod("default", {"metadata": {"name": "pending"}, "spec": spec})
    kube.core.delete_namespaced_pod("placed", "default", grace_period_seconds=20)
    marked = kube.core.read_namespaced_pod("placed", "default").metadata
    assert marked.deletion_grace_period_seconds == 20 and marked.deletion_timestamp > marked.creation_timestamp
    kube.core.delete_namespaced_pod("pending", "default")
    assert [p.metadata.name for p in kube.core.list_namespaced_pod("default").items] == ["placed"]
    kube.core.delete_namespaced_pod("placed", "default", grace_period_seconds=0)  # --force: no kubelet to wait for
    assert not kube.core.list_namespaced_pod("default").items
