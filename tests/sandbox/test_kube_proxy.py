"""The kube-proxy stand-in: pod processes reach Services through the env vars the kubelet sets,
and `internalTrafficPolicy: Local` routes only to endpoints on the caller's node."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from sandbox.cluster.common import DEPLOYMENTS, NODES, SERVICES
from tests.cluster_helpers import deployment, pods, ready_pods, running_cluster, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service(name: str, policy: str | None) -> dict:
    spec = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    if policy:
        spec["internalTrafficPolicy"] = policy
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _get(env: dict[str, str], prefix: str) -> int | str:
    url = f"http://{env[prefix + '_SERVICE_HOST']}:{env[prefix + '_SERVICE_PORT']}/"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError) as err:
        return type(getattr(err, "reason", err)).__name__


@pytest.fixture
def web(tmp_path):
    port = _free_port()
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        # Services first: a pod gets env vars only for the Services that exist when it starts.
        store.create(SERVICES, _service("web", None))
        store.create(SERVICES, _service("web-local", "Local"))
        store.create(DEPLOYMENTS, deployment("web", container={
            "command": ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "ports": [{"name": "http", "containerPort": port}]}))
        (pod,) = wait_for(lambda: ready_pods(store, "default", "app=web", 1), "the web pod ready")
        yield cluster, pod["spec"]["nodeName"]


def test_a_service_is_reached_through_its_env_vars_from_any_node_and_a_local_one_only_from_its_own(web):
    cluster, node = web
    other = next(n["metadata"]["name"] for n in cluster.store.list(NODES) if n["metadata"]["name"] != node)
    here, there = cluster.kube_proxy.service_env("default", node), cluster.kube_proxy.service_env("default", other)
    assert here["WEB_LOCAL_SERVICE_PORT"] == here["WEB_LOCAL_SERVICE_PORT_HTTP"]
    wait_for(lambda: _get(here, "WEB") == 200, "the web Service answering on the pod's node")
    assert _get(there, "WEB") == 200  # Cluster policy: any ready endpoint, wherever it runs
    assert _get(here, "WEB_LOCAL") == 200
    # Local policy and no endpoint on this node: kube-proxy drops it, the client sees a reset.
    assert _get(there, "WEB_LOCAL") == "ConnectionResetError"


def test_pod_processes_get_the_service_env_vars_of_their_namespace(web):
    cluster, node = web
    (pod,) = pods(cluster.store, selector="app=web")
    run = next(r for r in cluster.kubelet.runs.values() if r.name == pod["metadata"]["name"])
    env = run.main[0].env
    assert env["WEB_SERVICE_HOST"] == "127.0.0.1"
    assert env["WEB_LOCAL_SERVICE_PORT"] == cluster.kube_proxy.service_env("default", node)["WEB_LOCAL_SERVICE_PORT"]
