"""What kubectl needs from the API server besides CRUD: OpenAPI, Tables, field selectors, health,
watch bookmarks and 410 Gone, pod log options, discovery of the common EKS kinds.

Each test shows an answer the sandbox used to get wrong (kinder than kube-apiserver): no OpenAPI
(so `kubectl apply` failed unless --validate=false), NAME/AGE only, any field selector accepted,
JSON health, watches that never expire, `--previous` answering the current log.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io," \
        "application/json"


def pod(name: str, containers: tuple[str, ...] = ("main",), **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers], **spec}}


def set_status(api_sandbox, kind_key: str, namespace: str | None, name: str, status: dict) -> None:
    from sandbox.kubeapi.resources import by_key

    def change(obj: dict) -> None:
        obj["status"] = status

    api_sandbox.runtime.store.mutate(by_key(kind_key), namespace, name, change)


# -- OpenAPI ---------------------------------------------------------------------------------

def test_openapi_v3_index_lists_every_served_group_version_with_a_hashed_url(kube):
    code, index, _ = kube.request("GET", "/openapi/v3")
    assert code == 200
    assert {"api/v1", "apis/apps/v1", "apis/batch/v1", "apis/networking.k8s.io/v1", "apis/storage.k8s.io/v1",
            "apis/karpenter.sh/v1", "apis/policy/v1", "apis/autoscaling/v2"} <= set(index["paths"])
    assert index["paths"]["apis/apps/v1"]["serverRelativeURL"].startswith("/openapi/v3/apis/apps/v1?hash=")


def test_openapi_v3_patch_operations_carry_field_validation_so_kubectl_validates_on_the_server(kube):
    # kubectl's query_param_verifier_v3 looks for exactly this: a PATCH tagged with the kind's GVK that
    # takes a `fieldValidation` query parameter. Without it, `kubectl apply` fails to download openapi.
    code, doc, _ = kube.request("GET", "/openapi/v3/apis/apps/v1")
    assert code == 200 and doc["openapi"].startswith("3.")
    patches = [(path, item["patch"]) for path, item in doc["paths"].items() if "patch" in item]
    deployment = [(path, op) for path, op in patches
                  if op["x-kubernetes-group-version-kind"] == {"group": "apps", "kind": "Deployment", "version": "v1"}]
    assert deployment[0][0] == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    assert "fieldValidation" in {p["name"] for p in deployment[0][1]["parameters"] if p["in"] == "query"}


def test_openapi_v3_schemas_are_the_upstream_ones_with_merge_keys_and_no_json_schema_strictness(kube):
    _, doc, _ = kube.request("GET", "/openapi/v3/api/v1")
    schemas = doc["components"]["schemas"]
    pod_schema = schemas["io.k8s.api.core.v1.Pod"]
    assert pod_schema["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert pod_schema["properties"]["spec"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name" and containers["type"] == "array"
    assert "enum" not in pod_schema["properties"]["apiVersion"] and "additionalProperties" not in pod_schema
    assert schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]["oneOf"] == [{"type": "string"},
                                                                                  {"type": "number"}]
    assert json.dumps(doc).count("$defs") == 0


def test_openapi_v2_is_json_and_a_protobuf_only_request_is_told_what_is_served(kube):
    code, doc, _ = kube.request("GET", "/openapi/v2")
    assert code == 200 and doc["swagger"] == "2.0"
    assert doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]["$ref"] == \
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    code, status, _ = kube.request("GET", "/openapi/v2",
                                   accept="application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
    assert code == 406 and status["reason"] == "NotAcceptable"
    assert kube.request("GET", "/openapi/v3/apis/nope/v1")[0] == 404


# -- Tables ----------------------------------------------------------------------------------

def test_pod_table_has_kubectls_columns_and_the_aggregate_status_of_its_containers(kube, api_sandbox):
    kube.core.create_namespaced_pod("default", pod("web", ("app",), nodeName="node-a"))
    set_status(api_sandbox, "pods", "default", "web", {
        "phase": "Running", "podIPs": [{"ip": "10.0.1.7"}],
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "app", "ready": False, "restartCount": 3,
                               "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                               "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}}}]})
    code, table, _ = kube.request("GET", "/api/v1/namespaces/default/pods", accept=TABLE)
    assert code == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [(c["name"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1),
        ("Nominated Node", 1), ("Readiness Gates", 1)]
    row = table["rows"][0]
    assert row["cells"][:3] == ["web", "0/1", "CrashLoopBackOff"]
    assert row["cells"][3].startswith("3 (") and row["cells"][3].endswith(" ago)")
    assert row["cells"][5:] == ["10.0.1.7", "node-a", "<none>", "<none>"]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "web"
    assert table["metadata"]["resourceVersion"]


def test_one_object_as_a_table_and_include_object_choices(kube):
    kube.core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})
    _, table, _ = kube.request("GET", "/api/v1/namespaces/default/configmaps/cfg", accept=TABLE,
                               query={"includeObject": "Object"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["cfg", 2] and table["rows"][0]["object"]["data"] == {"a": "1", "b": "2"}
    _, table, _ = kube.request("GET", "/api/v1/namespaces/default/configmaps", accept=TABLE,
                               query={"includeObject": "None"})
    assert "object" not in table["rows"][0]
    code, status, _ = kube.request("GET", "/api/v1/namespaces/default/configmaps", accept=TABLE,
                                   query={"includeObject": "Everything"})
    assert code == 400 and 'Unsupported value: "Everything"' in status["message"]
    # A plain JSON client still gets the list.
    assert kube.request("GET", "/api/v1/namespaces/default/configmaps")[1]["kind"] == "ConfigMapList"


def test_storage_class_table_marks_the_default_class_and_fills_upstream_defaults(kube):
    kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body={
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "ebs.csi.aws.com",
        "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}})
    _, table, _ = kube.request("GET", "/apis/storage.k8s.io/v1/storageclasses", accept=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"]
    assert table["rows"][0]["cells"][:5] == ["gp3 (default)", "ebs.csi.aws.com", "Delete", "Immediate", False]


def test_kinds_without_an_upstream_printer_get_name_and_created_at(kube):
    kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"}, "rules": []})
    _, table, _ = kube.request("GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", accept=TABLE)
    assert [(c["name"], c["type"]) for c in table["columnDefinitions"]] == [("Name", "string"), ("Created At", "date")]
    assert table["rows"][0]["cells"][0] == "reader" and table["rows"][0]["cells"][1].endswith("Z")


def test_human_duration_matches_apimachinery():
    from sandbox.kubeapi.printers import human_duration

    assert [human_duration(s) for s in (5, 119, 125, 600, 3 * 3600 + 60, 9 * 3600, 50 * 3600, 10 * 86400)] == [
        "5s", "119s", "2m5s", "10m", "3h1m", "9h", "2d2h", "10d"]


# -- field selectors -------------------------------------------------------------------------

def test_unsupported_field_selector_is_a_400_naming_the_label(kube):
    with pytest.raises(ApiException) as refused:
        kube.core.list_namespaced_pod("default", field_selector="spec.containers=x")
    assert refused.value.status == 400
    assert json.loads(refused.value.body)["message"] == "field label not supported: spec.containers"
    with pytest.raises(ApiException) as refused:
        kube.apps.list_namespaced_deployment("default", field_selector="spec.replicas=1")
    assert refused.value.status == 400


def test_supported_field_selectors_filter_as_upstream(kube):
    kube.core.create_namespaced_pod("default", pod("on-a", nodeName="node-a"))
    kube.core.create_namespaced_pod("default", pod("on-b", nodeName="node-b"))
    names = [p.metadata.name for p in kube.core.list_namespaced_pod(
        "default", field_selector="spec.nodeName=node-a,metadata.namespace=default").items]
    assert names == ["on-a"]
    assert kube.core.list_namespaced_event("default", field_selector="involvedObject.name=on-a").items == []


# -- health ----------------------------------------------------------------------------------

def test_health_endpoints_answer_plain_text_without_credentials(kube):
    for path in ("/healthz", "/livez", "/readyz"):
        code, text, headers = kube.request("GET", path, token=None, accept="*/*")
        assert (code, text) == (200, "ok") and headers["Content-Type"].startswith("text/plain")
    code, text, _ = kube.request("GET", "/readyz", query={"verbose": "", "exclude": "etcd"}, token=None)
    lines = text.splitlines()
    assert lines[0] == "[+]ping ok" and "[+]etcd excluded: ok" in lines and lines[-1] == "readyz check passed"
    assert kube.request("GET", "/livez/ping", token=None)[1] == "ok"
    assert kube.request("GET", "/healthz/nope", token=None)[0] == 404


# -- watches ---------------------------------------------------------------------------------

def test_watch_with_allow_bookmarks_gets_bookmark_events_carrying_the_resource_version(kube, api_sandbox):
    api_sandbox.runtime.api.bookmark_seconds = 0.2
    listed = kube.core.list_namespaced_config_map("default")
    kube.core.create_namespaced_config_map("default", {"metadata": {"name": "later"}})
    stream = watch.Watch().stream(kube.core.list_namespaced_config_map, "default", allow_watch_bookmarks=True,
                                  resource_version=listed.metadata.resource_version, timeout_seconds=1)
    events = [(e["type"], e["raw_object"]["metadata"]["resourceVersion"]) for e in stream]
    assert events[0][0] == "ADDED" and any(t == "BOOKMARK" for t, _ in events)
    bookmark_rv = next(rv for t, rv in events if t == "BOOKMARK")
    assert int(bookmark_rv) >= int(events[0][1])


def test_watch_without_bookmarks_allowed_gets_none(kube, api_sandbox):
    api_sandbox.runtime.api.bookmark_seconds = 0.1
    events = [e["type"] for e in watch.Watch().stream(kube.core.list_namespaced_config_map, "default",
                                                       timeout_seconds=1)]
    assert "BOOKMARK" not in events


def test_watch_from_a_compacted_resource_version_is_410_expired(kube, api_sandbox):
    old_rv = kube.core.list_namespaced_config_map("default").metadata.resource_version
    kube.core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    api_sandbox.control.fault("api-compact")
    with pytest.raises(ApiException) as expired:
        list(watch.Watch().stream(kube.core.list_namespaced_config_map, "default", resource_version=old_rv,
                                  timeout_seconds=1))
    assert expired.value.status == 410 and "too old resource version" in expired.value.reason
    # Watching again from a fresh list works, as a client that relists does.
    fresh = kube.core.list_namespaced_config_map("default").metadata.resource_version
    assert list(watch.Watch().stream(kube.core.list_namespaced_config_map, "default", resource_version=fresh,
                                     timeout_seconds=1)) == []


def test_kubectl_style_table_watch_sends_rows_with_the_columns_only_once(kube):
    kube.core.create_namespaced_config_map("default", {"metadata": {"name": "one", "labels": {"row": "yes"}}})
    kube.core.create_namespaced_config_map("default", {"metadata": {"name": "two", "labels": {"row": "yes"}}})
    response = kube.api.call_api(*kube.api.param_serialize(  # the label leaves kube-root-ca.crt out
        "GET", "/api/v1/namespaces/default/configmaps",
        query_params=[("watch", "true"), ("timeoutSeconds", "1"), ("labelSelector", "row")],
        header_params={"Accept": TABLE}, auth_settings=["BearerToken"])[:4], _request_timeout=10)
    events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    assert [e["object"]["kind"] for e in events] == ["Table", "Table"]
    assert [c["name"] for c in events[0]["object"]["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert events[1]["object"]["columnDefinitions"] == [] and events[1]["object"]["rows"][0]["cells"][0] == "two"


# -- pod logs --------------------------------------------------------------------------------

def _running_pod_with_log(kube, api_sandbox, name: str, text: str, *, restarted: bool = False):
    kube.core.create_namespaced_pod("default", pod(name, ("app",)))
    status = {"name": "app", "ready": True, "restartCount": 1 if restarted else 0,
              "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, "lastState": {}}
    if restarted:
        status["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:00Z"}}
    set_status(api_sandbox, "pods", "default", name, {"phase": "Running", "containerStatuses": [status]})
    log_file = api_sandbox.root / "logs" / "default" / name / "app.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(text)
    return log_file


def test_previous_log_of_a_container_that_never_restarted_is_a_400_as_from_the_kubelet(kube, api_sandbox):
    _running_pod_with_log(kube, api_sandbox, "steady", "now\n")
    with pytest.raises(ApiException) as missing:
        kube.core.read_namespaced_pod_log("steady", "default", previous=True)
    assert missing.value.status == 400
    assert json.loads(missing.value.body)["message"] == \
        'previous terminated container "app" in pod "steady" not found'


def test_previous_log_is_the_last_instances_output(kube, api_sandbox):
    log_file = _running_pod_with_log(kube, api_sandbox, "restarted", "second run\n", restarted=True)
    log_file.with_suffix(".previous.log").write_text("first run\ncrashed\n")
    assert kube.core.read_namespaced_pod_log("restarted", "default", previous=True) == "first run\ncrashed\n"
    assert kube.core.read_namespaced_pod_log("restarted", "default") == "second run\n"


def test_in_a_crash_loop_back_off_both_logs_are_the_last_instances_as_from_the_kubelet(kube, api_sandbox):
    _running_pod_with_log(kube, api_sandbox, "crashing", "boom\n", restarted=True)
    set_status(api_sandbox, "pods", "default", "crashing", {"phase": "Running", "containerStatuses": [
        {"name": "app", "ready": False, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:00Z"}}}]})
    assert kube.core.read_namespaced_pod_log("crashing", "default") == "boom\n"
    assert kube.core.read_namespaced_pod_log("crashing", "default", previous=True) == "boom\n"


def test_log_of_a_container_whose_image_cannot_be_pulled_says_so(kube, api_sandbox):
    kube.core.create_namespaced_pod("default", pod("unpulled", ("app",)))
    set_status(api_sandbox, "pods", "default", "unpulled", {"phase": "Pending", "containerStatuses": [
        {"name": "app", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]})
    with pytest.raises(ApiException) as waiting:
        kube.core.read_namespaced_pod_log("unpulled", "default")
    assert json.loads(waiting.value.body)["message"] == \
        'container "app" in pod "unpulled" is waiting to start: trying and failing to pull image'


def test_timestamps_since_seconds_and_limit_bytes(kube, api_sandbox):
    _running_pod_with_log(kube, api_sandbox, "stamped", "alpha\nbeta\n")
    stamped = kube.core.read_namespaced_pod_log("stamped", "default", timestamps=True).splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["alpha", "beta"]
    assert stamped[0].split(" ", 1)[0].endswith("Z") and "T" in stamped[0]
    assert kube.core.read_namespaced_pod_log("stamped", "default", since_seconds=3600) == "alpha\nbeta\n"
    assert kube.core.read_namespaced_pod_log("stamped", "default", limit_bytes=3) == "alp"
    with pytest.raises(ApiException) as bad:
        kube.core.read_namespaced_pod_log("stamped", "default", tail_lines=-1)
    assert bad.value.status == 422


def test_follow_streams_what_the_container_writes_until_it_stops(kube, api_sandbox):
    log_file = _running_pod_with_log(kube, api_sandbox, "chatty", "first\n")
    response = kube.core.read_namespaced_pod_log("chatty", "default", follow=True, _preload_content=False)
    assert response.read(6) == b"first\n"
    with open(log_file, "a") as f:
        f.write("second\n")
    time.sleep(0.5)
    set_status(api_sandbox, "pods", "default", "chatty", {"phase": "Succeeded", "containerStatuses": [
        {"name": "app", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]})
    assert response.read() == b"second\n"


# -- discovery -------------------------------------------------------------------------------

def test_discovery_lists_the_kinds_every_eks_cluster_serves(kube):
    found = set()
    for path in ("/api/v1", *(f"/apis/{g['preferredVersion']['groupVersion']}"
                              for g in kube.request("GET", "/apis")[1]["groups"])):
        found |= {r["kind"] for r in kube.request("GET", path)[1]["resources"] if "/" not in r["name"]}
    assert {"StatefulSet", "CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget", "EndpointSlice", "Lease",
            "CustomResourceDefinition", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} <= found
