"""The sandbox API server as the official kubernetes client sees it: auth, discovery, CRUD, validation, dry runs, audit."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kubeapi.resources import RESOURCES, served

# What a sandbox without add-ons serves (the Prometheus Operator's kinds only with its option).
DEFAULT_RESOURCES = [r for r in RESOURCES if served(r, frozenset())]


def message(error: ApiException) -> str:
    """The Status message the server answered with."""
    return json.loads(error.body)["message"]


def deployment(name: str, *, image: str = "nginx:1.27", replicas: int | None = None, labels: dict | None = None) -> dict:
    labels = labels or {"app": name}
    spec: dict = {"selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [{"name": "web", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels}, "spec": spec}


def config_map(name: str, data: dict | None = None, labels: dict | None = None) -> dict:
    metadata = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data or {"k": "v"}}


# -- authentication ------------------------------------------------------------------------------

def test_request_without_a_token_is_refused_with_401(kube):
    status, body, _ = kube.request("GET", "/api/v1/namespaces", token=None)
    assert status == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"


def test_request_with_a_wrong_token_is_refused_with_401(kube):
    status, body, _ = kube.request("GET", "/api/v1/namespaces", token="not-the-admin-token")
    assert (status, body["reason"]) == (401, "Unauthorized")


def test_eks_token_is_refused_with_a_reason_when_the_sandbox_runs_without_aws(kube):
    status, body, _ = kube.request("GET", "/api/v1/namespaces", token="k8s-aws-v1.aHR0cHM6Ly9zdHMuZXhhbXBsZQ")
    assert status == 401
    assert "AWS" in body["message"]


# -- discovery -----------------------------------------------------------------------------------

def test_version_reports_an_eks_1_31_server(kube):
    version = client.VersionApi(kube.api).get_code()
    assert version.git_version.startswith("v1.31.") and "eks" in version.git_version


def test_discovery_lists_every_kind_with_verbs_namespacing_and_subresources(kube):
    core = {r.name: r for r in client.CoreV1Api(kube.api).get_api_resources().resources}
    apps = {r.name: r for r in client.AppsV1Api(kube.api).get_api_resources().resources}
    assert core["pods"].namespaced and not core["nodes"].namespaced
    assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(apps["deployments"].verbs)
    assert "deployments/status" in apps and "deployments/scale" in apps
    assert "pods/log" in core and "services/proxy" in core
    groups = {g.name for g in client.ApisApi(kube.api).get_api_versions().groups}
    assert {r.group for r in DEFAULT_RESOURCES if r.group} <= groups


def test_dynamic_client_finds_every_kind_and_works_with_it(kube):
    for res in DEFAULT_RESOURCES:
        found = kube.dynamic.resources.get(api_version=res.api_version, kind=res.kind)
        assert (found.name, found.namespaced) == (res.plural, res.namespaced)
    config_maps = kube.dynamic.resources.get(api_version="v1", kind="ConfigMap")
    config_maps.create(body=config_map("via-dynamic"), namespace="default")
    assert config_maps.get(name="via-dynamic", namespace="default").data.k == "v"
    node_pools = kube.dynamic.resources.get(api_version="karpenter.sh/v1", kind="NodePool")
    assert node_pools.get().kind == "NodePoolList"


# -- CRUD and selectors ------------------------------------------------------------------------------

def test_create_get_replace_delete_round_trip_with_uid_and_resource_version(kube):
    created = kube.core.create_namespaced_config_map("default", config_map("settings"))
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.resource_version
    created.data = {"k": "changed"}
    replaced = kube.core.replace_namespaced_config_map("settings", "default", created)
    assert replaced.data == {"k": "changed"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    kube.core.delete_namespaced_config_map("settings", "default")
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespaced_config_map("settings", "default")
    assert gone.value.status == 404
    assert message(gone.value) == 'configmaps "settings" not found'


def test_replace_with_a_stale_resource_version_is_a_409_conflict(kube):
    created = kube.core.create_namespaced_config_map("default", config_map("stale"))
    kube.core.patch_namespaced_config_map("stale", "default", {"data": {"k": "newer"}})
    created.data = {"k": "older"}
    with pytest.raises(ApiException) as conflict:
        kube.core.replace_namespaced_config_map("stale", "default", created)
    assert conflict.value.status == 409
    assert "the object has been modified" in message(conflict.value)


def test_creating_an_existing_object_is_409_already_exists(kube):
    kube.core.create_namespaced_config_map("default", config_map("twice"))
    with pytest.raises(ApiException) as exists:
        kube.core.create_namespaced_config_map("default", config_map("twice"))
    assert exists.value.status == 409 and message(exists.value) == 'configmaps "twice" already exists'


def test_list_honours_label_and_field_selectors_and_reports_a_resource_version(kube):
    kube.core.create_namespaced_config_map("default", config_map("a", labels={"tier": "gpu", "team": "speech"}))
    kube.core.create_namespaced_config_map("default", config_map("b", labels={"tier": "cpu", "team": "speech"}))
    kube.core.create_namespaced_config_map("default", config_map("c", labels={"tier": "gpu"}))
    names = lambda result: sorted(i.metadata.name for i in result.items)  # noqa: E731
    assert names(kube.core.list_namespaced_config_map("default", label_selector="tier=gpu")) == ["a", "c"]
    assert names(kube.core.list_namespaced_config_map("default", label_selector="team,tier!=gpu")) == ["b"]
    assert names(kube.core.list_namespaced_config_map("default", label_selector="tier in (cpu,tpu)")) == ["b"]
    assert names(kube.core.list_namespaced_config_map("default", field_selector="metadata.name=c")) == ["c"]
    listed = kube.core.list_config_map_for_all_namespaces(label_selector="team=speech")
    assert names(listed) == ["a", "b"] and listed.metadata.resource_version


def test_list_pages_with_limit_and_continue(kube):
    for index in range(5):
        kube.core.create_namespaced_config_map("default", config_map(f"page-{index}", labels={"paged": "yes"}))
    first = kube.core.list_namespaced_config_map("default", limit=3, label_selector="paged")  # not kube-root-ca.crt
    rest = kube.core.list_namespaced_config_map("default", limit=3, label_selector="paged",
                                                _continue=first.metadata._continue)
    assert [i.metadata.name for i in first.items + rest.items] == [f"page-{i}" for i in range(5)]
    assert rest.metadata._continue is None


def test_generation_moves_on_spec_changes_only_and_replicas_default_to_one(kube):
    created = kube.apps.create_namespaced_deployment("default", deployment("gen"))
    assert (created.metadata.generation, created.spec.replicas) == (1, 1)
    relabelled = kube.apps.patch_namespaced_deployment("gen", "default", {"metadata": {"labels": {"extra": "x"}}})
    assert relabelled.metadata.generation == 1 and relabelled.metadata.labels["extra"] == "x"
    scaled = kube.apps.patch_namespaced_deployment("gen", "default", {"spec": {"replicas": 2}})
    assert scaled.metadata.generation == 2


def test_status_subresource_changes_only_the_status_and_main_writes_keep_it(kube):
    kube.apps.create_namespaced_deployment("default", deployment("stat"))
    written = kube.apps.patch_namespaced_deployment_status(
        "stat", "default", {"status": {"readyReplicas": 1, "replicas": 1}, "spec": {"replicas": 5}})
    assert written.status.ready_replicas == 1 and written.spec.replicas == 1
    main = kube.apps.patch_namespaced_deployment("stat", "default", {"status": {"readyReplicas": 9}})
    assert main.status.ready_replicas == 1


def test_scale_subresource_reads_and_sets_replicas(kube):
    kube.apps.create_namespaced_deployment("default", deployment("scaled", replicas=2))
    assert kube.apps.read_namespaced_deployment_scale("scaled", "default").spec.replicas == 2
    kube.apps.patch_namespaced_deployment_scale("scaled", "default", {"spec": {"replicas": 4}})
    assert kube.apps.read_namespaced_deployment("scaled", "default").spec.replicas == 4


def test_deleting_a_namespace_deletes_what_is_in_it(kube):
    kube.core.create_namespace({"metadata": {"name": "doomed"}})
    kube.core.create_namespaced_config_map("doomed", config_map("inside"))
    kube.core.delete_namespace("doomed")
    assert kube.core.list_namespaced_config_map("doomed").items == []
    status, _, _ = kube.request("GET", "/api/v1/namespaces/doomed")
    assert status == 404


def test_namespace_gets_the_metadata_name_label_and_active_phase(kube):
    created = kube.core.create_namespace({"metadata": {"name": "speech"}})
    assert created.metadata.labels["kubernetes.io/metadata.name"] == "speech"
    assert created.status.phase == "Active"


# -- patch formats -------------------------------------------------------------------------------

def test_merge_patch_sets_and_deletes_keys(kube):
    kube.core.create_namespaced_config_map("default", config_map("merge", {"a": "1", "b": "2"}))
    status, body, _ = kube.request("PATCH", "/api/v1/namespaces/default/configmaps/merge",
                                   body={"data": {"a": None, "c": "3"}}, content_type="application/merge-patch+json")
    assert status == 200 and body["data"] == {"b": "2", "c": "3"}


def test_json_patch_adds_replaces_removes_and_tests(kube):
    kube.core.create_namespaced_config_map("default", config_map("jp", {"a": "1", "b": "2"}))
    patch = [{"op": "test", "path": "/data/a", "value": "1"}, {"op": "replace", "path": "/data/a", "value": "9"},
             {"op": "remove", "path": "/data/b"}, {"op": "add", "path": "/metadata/labels", "value": {}},
             {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"}]
    result = kube.core.patch_namespaced_config_map("jp", "default", patch)
    assert result.data == {"a": "9"} and result.metadata.labels == {"x/y": "z"}
    status, body, _ = kube.request("PATCH", "/api/v1/namespaces/default/configmaps/jp",
                                   body=[{"op": "test", "path": "/data/a", "value": "1"}],
                                   content_type="application/json-patch+json")
    assert status == 422 and "/data/a" in body["message"]


def test_strategic_merge_patch_merges_containers_by_name_and_env_by_name(kube):
    base = deployment("smp")
    base["spec"]["template"]["spec"]["containers"] = [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "b:1"}]
    kube.apps.create_namespaced_deployment("default", base)
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "2"}]},
        {"name": "b", "$patch": "delete"}]}}}}
    result = kube.apps.patch_namespaced_deployment("smp", "default", patch)  # the client sends strategic merge
    containers = result.spec.template.spec.containers
    assert [c.name for c in containers] == ["a"]
    assert containers[0].image == "a:1"
    assert [(e.name, e.value) for e in containers[0].env] == [("X", "1"), ("Y", "2")]


# -- namespaces, validation ------------------------------------------------------------------------

@pytest.mark.parametrize("dry_run", [None, "All"])
def test_write_into_a_missing_namespace_is_404_namespace_not_found(kube, dry_run):
    body = config_map("orphan")
    with pytest.raises(ApiException) as missing:
        kube.core.create_namespaced_config_map("no-such-ns", body, dry_run=dry_run)
    assert missing.value.status == 404
    assert message(missing.value) == 'namespaces "no-such-ns" not found'


def test_invalid_name_is_422_naming_metadata_name(kube):
    status, body, _ = kube.request("POST", "/api/v1/namespaces/default/configmaps", body=config_map("Bad_Name"))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert 'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain' in body["message"]


def test_unknown_and_mistyped_fields_are_422_naming_each_field(kube):
    bad = deployment("typo")
    bad["spec"]["replicas"] = "two"
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    status, body, _ = kube.request("POST", "/apis/apps/v1/namespaces/default/deployments", body=bad)
    assert status == 422
    fields = {c["field"] for c in body["details"]["causes"]}
    assert fields == {"spec.replicas", "spec.template.spec.containers[0].imagePullPolicyy"}
    assert kube.apps.list_namespaced_deployment("default").items == []


def test_bad_label_value_and_missing_required_field_are_422(kube):
    bad = deployment("labels", labels={"app": "has spaces"})
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]
    status, body, _ = kube.request("POST", "/apis/apps/v1/namespaces/default/deployments", body=bad)
    assert status == 422
    fields = {c["field"] for c in body["details"]["causes"]}
    assert {"metadata.labels", "spec.template.spec.containers[0].name"} <= fields


# -- dry run and audit -----------------------------------------------------------------------------

def test_dry_run_writes_return_the_result_but_store_nothing(kube, api_sandbox):
    kube.core.create_namespaced_config_map("default", config_map("kept", {"a": "1"}))
    before = api_sandbox.runtime.store.resource_version
    created = kube.core.create_namespaced_config_map("default", config_map("ghost"), dry_run="All")
    assert created.metadata.name == "ghost" and created.metadata.uid
    patched = kube.core.patch_namespaced_config_map("kept", "default", {"data": {"a": "2"}}, dry_run="All")
    assert patched.data == {"a": "2"}
    kube.core.delete_namespaced_config_map("kept", "default", dry_run="All")
    status, applied, _ = kube.request("PATCH", "/api/v1/namespaces/default/configmaps/applied-ghost",
                                      body=config_map("applied-ghost"), content_type="application/apply-patch+yaml",
                                      query={"fieldManager": "t", "dryRun": "All"})
    assert status == 201 and applied["metadata"]["name"] == "applied-ghost"
    assert api_sandbox.runtime.store.resource_version == before
    assert [c.metadata.name for c in kube.core.list_namespaced_config_map("default").items] == ["kept", "kube-root-ca.crt"]
    assert kube.core.read_namespaced_config_map("kept", "default").data == {"a": "1"}
    dry_records = [r for r in api_sandbox.control.audit() if r["dry_run"]]
    assert [r["verb"] for r in dry_records] == ["create", "patch", "delete", "patch"]


def test_audit_log_has_one_record_per_request_with_verb_user_code_and_field_manager(kube, api_sandbox):
    mark = api_sandbox.control.audit_mark()
    kube.core.create_namespaced_config_map("default", config_map("audited"), field_manager="my-tool")
    kube.core.read_namespaced_config_map("audited", "default")
    kube.core.list_namespaced_config_map("default")
    with pytest.raises(ApiException):
        kube.core.read_namespaced_config_map("missing", "default")
    kube.core.delete_namespaced_config_map("audited", "default")
    records = api_sandbox.control.audit_since(mark)
    assert [(r["verb"], r["code"]) for r in records] == [
        ("create", 201), ("get", 200), ("list", 200), ("get", 404), ("delete", 200)]
    assert records[0]["fieldManager"] == "my-tool" and records[0]["dry_run"] is False
    assert all(r["user"] == "admin" and r["resource"] == "configmaps" for r in records)
    assert records[1]["path"] == "/api/v1/namespaces/default/configmaps/audited"


def test_create_records_the_writer_as_field_manager_with_an_update_entry(kube):
    created = kube.core.create_namespaced_config_map("default", config_map("owned"), field_manager="installer")
    entry = created.metadata.managed_fields[0]
    assert (entry.manager, entry.operation) == ("installer", "Update")
    assert entry.fields_v1 == {"f:data": {"f:k": {}}}


def test_the_store_hands_out_copies_so_a_caller_cannot_change_a_stored_object_behind_its_back():
    from sandbox.kubeapi.store import Store

    configmaps = next(r for r in RESOURCES if r.kind == "ConfigMap")
    store = Store()
    created = store.create(configmaps, {"metadata": {"name": "c", "namespace": "n", "labels": {"a": "1"}},
                                        "data": {"k": "v"}, "binaryData": None})
    for handed_out in (created, store.get(configmaps, "n", "c"), store.list(configmaps)[0],
                       dict(store.all_objects())[configmaps.key]):
        handed_out["metadata"]["labels"]["a"] = "changed"
        handed_out["data"]["k"] = "changed"
    stored = store.get(configmaps, "n", "c")
    assert stored["metadata"]["labels"] == {"a": "1"} and stored["data"] == {"k": "v"}
