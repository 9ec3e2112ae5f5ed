"""Server-side apply in the sandbox API server, through the official client's DynamicClient."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError

from sandbox.kubeapi.resources import by_key


def app(name: str = "speech", *, replicas: int | None = 1, env: list | None = None, labels: dict | None = None,
        containers: list | None = None) -> dict:
    container = {"name": "asr", "image": "qwen3-asr:1", "ports": [{"containerPort": 8000}]}
    if env is not None:
        container["env"] = env
    spec: dict = {"selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": containers if containers is not None else [container]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    metadata: dict = {"name": name, "namespace": "default"}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


@pytest.fixture
def deployments(kube):
    return kube.dynamic.resources.get(api_version="apps/v1", kind="Deployment")


def apply(kube, deployments, body: dict, manager: str, **kwargs):
    return kube.dynamic.server_side_apply(deployments, body=copy.deepcopy(body), field_manager=manager, **kwargs)


def managers(obj) -> dict[tuple[str, str], dict]:
    return {(m["manager"], m["operation"]): m for m in obj.to_dict()["metadata"]["managedFields"]}


def test_apply_creates_the_object_and_records_the_manager_as_apply(kube, deployments):
    created = apply(kube, deployments, app(labels={"tier": "gpu"}), "playbook")
    assert created.metadata.generation == 1
    entry = managers(created)[("playbook", "Apply")]
    fields = entry["fieldsV1"]
    assert fields["f:metadata"] == {"f:labels": {"f:tier": {}}}
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"asr"}']
    assert container["."] == {} and "f:image" in container
    assert 'k:{"containerPort":8000,"protocol":"TCP"}' in container["f:ports"]


def test_reapplying_the_same_configuration_changes_nothing(kube, deployments):
    first = apply(kube, deployments, app(env=[{"name": "A", "value": "1"}]), "playbook")
    again = apply(kube, deployments, app(env=[{"name": "A", "value": "1"}]), "playbook")
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
    assert again.metadata.managedFields[0].time == first.metadata.managedFields[0].time
    assert again.metadata.generation == 1


def test_field_dropped_from_the_applied_configuration_is_removed(kube, deployments):
    apply(kube, deployments, app(labels={"tier": "gpu", "team": "speech"},
                                 env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]), "playbook")
    after = apply(kube, deployments, app(labels={"tier": "gpu"}, env=[{"name": "A", "value": "1"}]), "playbook")
    assert after.metadata.labels.to_dict() == {"tier": "gpu"}
    env = after.spec.template.spec.containers[0].env
    assert [(e.name, e.value) for e in env] == [("A", "1")]
    assert after.metadata.generation == 2


def test_changing_a_field_owned_by_another_manager_is_a_409_conflict(kube, deployments):
    apply(kube, deployments, app(replicas=1), "playbook")
    kube.apps.patch_namespaced_deployment("speech", "default", {"spec": {"replicas": 3}}, field_manager="autoscaler")
    with pytest.raises(ConflictError) as conflict:
        apply(kube, deployments, app(replicas=2), "playbook")
    status = json.loads(conflict.value.body)
    assert status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "autoscaler" using apps/v1: .spec.replicas'
    assert status["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                                            "message": 'conflict with "autoscaler" using apps/v1'}]
    assert kube.apps.read_namespaced_deployment("speech", "default").spec.replicas == 3


def test_forced_apply_takes_the_field_and_its_ownership(kube, deployments):
    apply(kube, deployments, app(replicas=1), "playbook")
    kube.apps.patch_namespaced_deployment("speech", "default", {"spec": {"replicas": 3}}, field_manager="autoscaler")
    forced = apply(kube, deployments, app(replicas=2), "playbook", force_conflicts=True)
    assert forced.spec.replicas == 2
    owners = managers(forced)
    assert "f:replicas" in owners[("playbook", "Apply")]["fieldsV1"]["f:spec"]
    assert "f:replicas" not in owners.get(("autoscaler", "Update"), {}).get("fieldsV1", {}).get("f:spec", {})


def test_applying_the_same_value_as_another_manager_shares_the_field_without_conflict(kube, deployments):
    apply(kube, deployments, app(replicas=3), "playbook")
    shared = apply(kube, deployments, app(replicas=3), "operator")
    assert shared.spec.replicas == 3
    # The first manager stops applying it: the other still owns it, so it stays.
    kept = apply(kube, deployments, app(replicas=None), "playbook")
    assert kept.spec.replicas == 3


def test_two_managers_own_different_containers_and_env_entries_of_one_list(kube, deployments):
    apply(kube, deployments, app(env=[{"name": "MODEL", "value": "asr"}]), "playbook")
    sidecar = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "speech", "namespace": "default"},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "asr", "env": [{"name": "DEBUG", "value": "1"}]},
                   {"name": "metrics", "image": "exporter:1"}]}}}}
    both = apply(kube, deployments, sidecar, "observability")
    containers = {c.name: c for c in both.spec.template.spec.containers}
    assert set(containers) == {"asr", "metrics"}
    assert [e.name for e in containers["asr"].env] == ["MODEL", "DEBUG"]
    # The playbook re-applies without its env var: only its own entry goes, the other manager's stay.
    after = apply(kube, deployments, app(env=[]), "playbook")
    containers = {c.name: c for c in after.spec.template.spec.containers}
    assert set(containers) == {"asr", "metrics"}
    assert [e.name for e in containers["asr"].env] == ["DEBUG"]
    assert containers["asr"].image == "qwen3-asr:1"


def test_atomic_lists_are_replaced_not_merged(kube, deployments):
    tolerated = app()
    tolerated["spec"]["template"]["spec"]["tolerations"] = [{"key": "a", "operator": "Exists"}]
    apply(kube, deployments, tolerated, "playbook")
    tolerated["spec"]["template"]["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    after = apply(kube, deployments, tolerated, "playbook")
    assert [t.key for t in after.spec.template.spec.tolerations] == ["nvidia.com/gpu"]


def test_apply_without_a_field_manager_is_422(kube):
    status, body, _ = kube.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/speech", body=app(),
                                   content_type="application/apply-patch+yaml")
    assert status == 422 and "fieldManager" in body["message"]


def test_apply_accepts_yaml_bodies(kube):
    manifest = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  namespace: default\n"
                "data:\n  greeting: hello\n")
    status, body, _ = kube.request("PATCH", "/api/v1/namespaces/default/configmaps/from-yaml", body=manifest,
                                   content_type="application/apply-patch+yaml", query={"fieldManager": "cli"})
    assert status == 201 and body["data"] == {"greeting": "hello"}


def test_apply_with_an_invalid_field_is_422_and_stores_nothing(kube, deployments):
    broken = app()
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {"limits": {"nvidia.com/gpu": 1}}
    with pytest.raises(DynamicApiError) as invalid:
        apply(kube, deployments, broken, "playbook")
    assert invalid.value.status == 422
    causes = json.loads(invalid.value.body)["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.template.spec.containers[0].resource"]
    assert kube.apps.list_namespaced_deployment("default").items == []


def test_apply_into_a_missing_namespace_is_404_even_as_a_dry_run(kube, deployments):
    body = app()
    body["metadata"]["namespace"] = "nowhere"
    with pytest.raises(DynamicApiError) as missing:
        apply(kube, deployments, body, "playbook", dry_run="All")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'namespaces "nowhere" not found'


def test_status_apply_only_touches_the_status(kube, deployments):
    apply(kube, deployments, app(replicas=2), "playbook")
    status, body, _ = kube.request(
        "PATCH", "/apis/apps/v1/namespaces/default/deployments/speech/status",
        body={"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "speech"},
              "spec": {"replicas": 7}, "status": {"readyReplicas": 2}},
        content_type="application/apply-patch+yaml", query={"fieldManager": "controller"})
    assert status == 200
    assert body["status"] == {"readyReplicas": 2} and body["spec"]["replicas"] == 2
    entry = next(m for m in body["metadata"]["managedFields"] if m["manager"] == "controller")
    assert entry["subresource"] == "status" and entry["fieldsV1"] == {"f:status": {"f:readyReplicas": {}}}


def test_an_empty_apply_gives_back_an_object_the_manager_found_unmanaged(kube, deployments, api_sandbox):
    # Made by a controller straight in the store, as the cluster seeds the device plugin: no managedFields.
    seeded = app("plugin", env=[{"name": "FAIL_ON_INIT_ERROR", "value": "false"}])
    api_sandbox.runtime.store.create(by_key("deployments.apps"), seeded)
    config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plugin", "namespace": "default"},
              "spec": {"template": {"spec": {"containers": [
                  {"name": "asr", "env": [{"name": "CONFIG_FILE", "value": "/config/config.yaml"}]}]}}}}
    configured = apply(kube, deployments, config, "playbook", force_conflicts=True)
    assert [e.name for e in configured.spec.template.spec.containers[0].env] == ["FAIL_ON_INIT_ERROR", "CONFIG_FILE"]
    assert ("before-first-apply", "Update") in managers(configured)

    empty = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plugin", "namespace": "default"}}
    restored = apply(kube, deployments, empty, "playbook")
    container = restored.spec.template.spec.containers[0]
    assert (container.name, container.image) == ("asr", "qwen3-asr:1")
    assert [e.name for e in container.env] == ["FAIL_ON_INIT_ERROR"]
    assert ("playbook", "Apply") not in managers(restored)
