"""Watches, pod logs and the service/pod proxy of the sandbox API server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from sandbox.kubeapi.store import ApiError


def pod(name: str, containers: tuple[str, ...] = ("main",)) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]}}


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}


# -- watch ---------------------------------------------------------------------------------------

def test_watch_stream_sees_existing_objects_then_added_and_modified_events(kube):
    kube.apps.create_namespaced_deployment("default", deployment("before"))

    def change_things() -> None:
        kube.apps.create_namespaced_deployment("default", deployment("during"))
        kube.apps.patch_namespaced_deployment("during", "default", {"spec": {"replicas": 2}})

    seen = []
    watcher = watch.Watch()
    started = False
    for event in watcher.stream(kube.apps.list_namespaced_deployment, "default", timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if not started:
            started = True
            threading.Thread(target=change_things, daemon=True).start()
        if event["type"] == "MODIFIED":
            watcher.stop()
    assert seen == [("ADDED", "before"), ("ADDED", "during"), ("MODIFIED", "during")]


def test_watch_from_a_resource_version_replays_only_later_events_and_filters_by_label(kube):
    listed = kube.core.list_namespaced_pod("default")
    kube.core.create_namespaced_pod("default", pod("wanted"))
    kube.core.create_namespaced_pod("default", pod("other"))
    kube.core.delete_namespaced_pod("wanted", "default")
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        kube.core.list_namespaced_pod, "default", label_selector="app=wanted",
        resource_version=listed.metadata.resource_version, timeout_seconds=1)]
    assert events == [("ADDED", "wanted"), ("DELETED", "wanted")]


def test_watch_ends_after_timeout_seconds_and_is_audited_as_watch(kube, api_sandbox):
    mark = api_sandbox.control.audit_mark()
    events = list(watch.Watch().stream(kube.core.list_node, timeout_seconds=1))
    assert events == []
    assert [r["verb"] for r in api_sandbox.control.audit_since(mark)] == ["watch"]


# -- pod logs ------------------------------------------------------------------------------------

def test_pod_log_is_served_from_the_container_log_file_with_tail_lines(kube, api_sandbox):
    kube.core.create_namespaced_pod("default", pod("talker", ("app", "sidecar")))
    log_file = api_sandbox.root / "logs" / "default" / "talker" / "app.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("one\ntwo\nthree\n")
    assert kube.core.read_namespaced_pod_log("talker", "default", container="app", tail_lines=2) == "two\nthree\n"
    with pytest.raises(ApiException) as ambiguous:
        kube.core.read_namespaced_pod_log("talker", "default")
    assert ambiguous.value.status == 400 and "choose one of: [app sidecar]" in ambiguous.value.body


def test_pod_log_of_a_container_that_has_not_started_is_a_400(kube):
    kube.core.create_namespaced_pod("default", pod("quiet"))
    with pytest.raises(ApiException) as waiting:
        kube.core.read_namespaced_pod_log("quiet", "default")
    assert waiting.value.status == 400 and "waiting to start" in waiting.value.body


# -- proxy ---------------------------------------------------------------------------------------

class _EchoHandler(BaseHTTPRequestHandler):
    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({"method": self.command, "path": self.path,
                           "content_type": self.headers.get("Content-Type"),
                           "body": self.rfile.read(length).decode()}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _echo

    def log_message(self, *args) -> None:
        pass


class _BackendsOf:
    """The two Cluster methods the API server's proxy calls, answering with one local echo server."""

    def __init__(self, port: int):
        self.port = port
        self.asked: list[tuple] = []

    def backend_for_service(self, namespace, service, port):
        self.asked.append(("service", namespace, service, port))
        if service == "no-endpoints":
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{service}"')
        return "127.0.0.1", self.port

    def backend_for_pod(self, namespace, pod_name, port):
        self.asked.append(("pod", namespace, pod_name, port))
        return "127.0.0.1", self.port


@pytest.fixture
def echo_backends(api_sandbox):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    backends = _BackendsOf(server.server_address[1])
    api_sandbox.runtime.api.cluster = backends
    yield backends
    server.shutdown()
    server.server_close()


def service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8000}]}}


def test_service_proxy_forwards_method_path_query_body_and_content_type(kube, echo_backends):
    kube.core.create_namespaced_service("default", service("tts"))
    status, body, headers = kube.request("POST", "/api/v1/namespaces/default/services/http:tts:8000/proxy/v1/audio/speech",
                                         body={"input": "hello"}, query={"format": "wav"})
    assert status == 201 and headers["Content-Type"] == "application/json"
    assert body["method"] == "POST" and body["path"] == "/v1/audio/speech?format=wav"
    assert json.loads(body["body"]) == {"input": "hello"} and body["content_type"] == "application/json"
    kube.request("GET", "/api/v1/namespaces/default/services/tts/proxy/health")
    assert echo_backends.asked == [("service", "default", "tts", 8000), ("service", "default", "tts", None)]


def test_service_proxy_answers_503_without_endpoints_and_404_for_a_missing_service(kube, echo_backends):
    kube.core.create_namespaced_service("default", service("no-endpoints"))
    status, body, _ = kube.request("GET", "/api/v1/namespaces/default/services/no-endpoints:http/proxy/")
    assert (status, body["reason"]) == (503, "ServiceUnavailable")
    status, body, _ = kube.request("GET", "/api/v1/namespaces/default/services/ghost:8000/proxy/")
    assert (status, body["message"]) == (404, 'services "ghost" not found')


def test_pod_proxy_reaches_the_pod_backend_and_is_audited_as_proxy(kube, echo_backends, api_sandbox):
    kube.core.create_namespaced_pod("default", pod("asr-0"))
    mark = api_sandbox.control.audit_mark()
    status, body, _ = kube.request("GET", "/api/v1/namespaces/default/pods/asr-0:8000/proxy/v1/models")
    assert status == 200 and body["path"] == "/v1/models"
    assert echo_backends.asked == [("pod", "default", "asr-0", 8000)]
    assert [r["verb"] for r in api_sandbox.control.audit_since(mark)] == ["proxy"]


def test_service_gets_a_cluster_ip_and_port_defaults(kube):
    created = kube.core.create_namespaced_service("default", service("defaults"))
    assert created.spec.type == "ClusterIP" and created.spec.cluster_ip
    assert (created.spec.ports[0].protocol, created.spec.ports[0].target_port) == ("TCP", 8000)
