"""Networking in the sandbox cluster: Service backends for the API proxy, speech stand-ins, ALB Ingresses."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from sandbox.cluster.common import CONFIGMAPS, DEPLOYMENTS, ENDPOINTS, INGRESSES, PVCS, PVS, SERVICES, STORAGECLASSES
from sandbox.kubeapi.store import ApiError
from tests.cluster_helpers import deployment, deployment_ready, pods, running_cluster, wait_for, waiting_reason
from tests.sandbox.test_cluster_storage import claim, phase, storage_class

REPO = Path(__file__).resolve().parents[2]
TTS_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/qwen3-tts:latest"
ASR_IMAGE = "qwenllm/qwen3-asr:latest"


def service(name: str, app: str, target_port) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": target_port}]}}


def ingress(name: str, port: int, group: str | None = "qwen3-speech") -> dict:
    annotations = {"alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTP": port}])}
    if group:
        annotations["alb.ingress.kubernetes.io/group.name"] = group
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"ingressClassName": "alb", "rules": [{"http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]}}


def hostname(store, name: str) -> str | None:
    ing = store.get(INGRESSES, "default", name)
    lb = ((ing or {}).get("status") or {}).get("loadBalancer") or {}
    return (lb.get("ingress") or [{}])[0].get("hostname")


def get_json(host: str, port: int, path: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{host}:{port}{path}", timeout=5) as response:
        return json.load(response)


def tts_deployment() -> dict:
    check = (REPO / "files" / "tts_health_check.py").read_text()
    probe = {"exec": {"command": ["python3", "/opt/qwen3-speech/tts_health_check.py"]},
             "periodSeconds": 10, "failureThreshold": 60}
    return deployment("tts", image=TTS_IMAGE, container={
        "env": [{"name": "PORT", "value": "8880"}],
        "ports": [{"name": "http", "containerPort": 8880}],
        "startupProbe": probe, "readinessProbe": probe,
        "volumeMounts": [{"name": "scripts", "mountPath": "/opt/qwen3-speech"}]},
        spec={"volumes": [{"name": "scripts", "configMap": {"name": "scripts"}}]}), check


def test_service_port_resolves_through_named_target_port_to_the_ready_tts_stand_in(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        manifest, check = tts_deployment()
        store.create(CONFIGMAPS, {"metadata": {"name": "scripts", "namespace": "default"},
                                  "data": {"tts_health_check.py": check}})
        store.create(DEPLOYMENTS, manifest)
        store.create(SERVICES, service("tts", "tts", "http"))
        # Readiness runs the playbook's exec check, which reads PORT: it must reach the stand-in.
        wait_for(lambda: deployment_ready(store, "default", "tts"), "the TTS deployment to be ready", timeout=30)
        # The endpoints controller follows the pod's Ready condition on its own pass, as upstream's
        # does: the Deployment can say ready a moment before the address moves out of notReadyAddresses.
        wait_for(lambda: ((store.get(ENDPOINTS, "default", "tts") or {}).get("subsets") or [{}])[0].get("addresses"),
                 "the TTS pod's address in the Service's Endpoints", timeout=30)
        host, port = cluster.backend_for_service("default", "tts", 80)
        assert host == "127.0.0.1"
        assert get_json(host, port, "/health")["status"] == "healthy"
        assert cluster.backend_for_service("default", "tts", "http") == (host, port)
        (pod,) = pods(store, selector="app=tts")
        assert cluster.backend_for_pod("default", pod["metadata"]["name"], "http") == (host, port)
        subsets = store.get(ENDPOINTS, "default", "tts")["subsets"]
        assert subsets[0]["ports"] == [{"port": 8880, "protocol": "TCP", "name": "http"}]
        assert subsets[0]["addresses"][0]["targetRef"]["name"] == pod["metadata"]["name"]


def test_service_with_a_wrong_target_port_has_no_endpoints(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        manifest, check = tts_deployment()
        store.create(CONFIGMAPS, {"metadata": {"name": "scripts", "namespace": "default"},
                                  "data": {"tts_health_check.py": check}})
        store.create(DEPLOYMENTS, manifest)
        store.create(SERVICES, service("tts", "tts", 8000))
        wait_for(lambda: deployment_ready(store, "default", "tts"), "the TTS deployment to be ready", timeout=30)
        with pytest.raises(ApiError) as raised:
            cluster.backend_for_service("default", "tts", 80)
        assert (raised.value.code, raised.value.reason) == (503, "ServiceUnavailable")
        assert raised.value.message == 'no endpoints available for service "tts"'
        with pytest.raises(ApiError) as missing:
            cluster.backend_for_service("default", "nope", 80)
        assert missing.value.code == 404


def asr_deployment() -> dict:
    return deployment("asr", image=ASR_IMAGE, container={
        "command": ["qwen-asr-serve"],
        "args": ["/models/Qwen3-ASR-1.7B", "--host", "0.0.0.0", "--port", "8000"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 90},
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}]},
        spec={"volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]})


def test_asr_stand_in_serves_the_model_from_the_claims_directory(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class())
        store.create(PVCS, claim())
        wait_for(lambda: phase(store) == "Bound", "the models claim to bind")
        model_dir = cluster.storage.local_dir(store.list(PVS)[0]) / "Qwen3-ASR-1.7B"
        model_dir.mkdir(parents=True)
        (model_dir / "config.json").write_text("{}")
        store.create(DEPLOYMENTS, asr_deployment())
        wait_for(lambda: deployment_ready(store, "default", "asr"), "the ASR deployment to be ready")
        (pod,) = pods(store, selector="app=asr")
        host, port = cluster.backend_for_pod("default", pod["metadata"]["name"], 8000)
        models = get_json(host, port, "/v1/models")
        assert [m["id"] for m in models["data"]] == ["/models/Qwen3-ASR-1.7B"]


def test_asr_without_model_files_crash_loops_with_the_servers_error(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class())
        store.create(PVCS, claim())
        store.create(DEPLOYMENTS, asr_deployment())
        pod = wait_for(lambda: next((p for p in pods(store, selector="app=asr")
                                     if waiting_reason(p) == "CrashLoopBackOff"), None), "the ASR crash loop")
        last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert last["exitCode"] == 1 and last["message"]


def test_two_ingresses_of_one_group_share_one_hostname_and_a_lone_one_gets_its_own(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(INGRESSES, ingress("asr", 8000))
        store.create(INGRESSES, ingress("tts", 8880))
        store.create(INGRESSES, ingress("other", 80, group=None))
        asr = wait_for(lambda: hostname(store, "asr"), "the ASR ingress hostname")
        assert wait_for(lambda: hostname(store, "tts"), "the TTS ingress hostname") == asr
        assert asr.endswith(".elb.amazonaws.com")
        assert wait_for(lambda: hostname(store, "other"), "the lone ingress hostname") != asr
        assert cluster.alb._groups["qwen3-speech"][0] == (8000, 8880)

        store.delete(INGRESSES, "default", "asr")
        store.delete(INGRESSES, "default", "tts")
        wait_for(lambda: "qwen3-speech" not in cluster.alb._groups, "the group's load balancer to be deleted")


def test_ingress_gets_no_hostname_without_the_alb_controller(tmp_path):
    with running_cluster(tmp_path, alb_controller=False) as cluster:
        store = cluster.store
        store.create(INGRESSES, ingress("asr", 8000))
        wait_for(lambda: cluster.passes > 20, "the control loop to run a while")
        assert hostname(store, "asr") is None
