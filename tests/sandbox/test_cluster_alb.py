"""The sandbox ALB behaves like the real one for long requests, and the shipped manifests survive it.

The TTS Deployment, Services and Ingresses are rendered from files/ as the deploy renders them,
then run in an in-process fast cluster without what these tests do not need (the model guard,
the pod affinity to ASR). `as_before_issue_10` turns them back into the manifests shipped before
the fix: no idle timeout (the ALB's 60 s), an exec readiness probe on /health, the image's own
start command (uvicorn keep-alive 5 s), the ALB's default health check timings.
"""

from __future__ import annotations

import copy
import http.client
import json
import threading
import time
import urllib.parse

import pytest

from sandbox.cluster.alb import DEREGISTRATION_PROPAGATION, AlbConfigError, HealthCheck, TargetGroup
from sandbox.cluster.common import (CONFIGMAPS, DEPLOYMENTS, INGRESSES, NETWORKPOLICIES, PODS, PVCS, PVS,
                                   SERVICEACCOUNTS, SERVICES, STORAGECLASSES)
from sandbox.speech import decode_speech, tts_synthesis_seconds
from tests.cluster_helpers import deployment_ready, events, pods, running_cluster, wait_for
from tests.manifest_helpers import all_manifests

GROUP = "qwen3-speech"
TTS_FILES = ("config.json", "generation_config.json", "speech_tokenizer/config.json")
# Longer than the ALB's default idle timeout (60 s) at the guide's RTF, still short in fast mode.
OVER_A_MINUTE = "你好，这是一段用来测试长时间语音合成的中文文本。" * 6
# The guide's long text (~1000 characters, ~10 minutes of synthesis).
LONG_TEXT = "长文本合成需要很长时间，负载均衡器必须等待它完成。" * 46


def tts_objects(**overrides) -> list[dict]:
    """TTS Deployment + Service + ServiceAccount, both Ingresses, the scripts ConfigMap, StorageClass and
    PVC, as rendered."""
    kinds = {"Deployment", "Service", "ServiceAccount", "Ingress", "ConfigMap", "StorageClass", "PersistentVolumeClaim"}
    out = []
    # Rendered for a namespace of the deploy's own (the inventory refuses "default"), then placed
    # in the bare cluster's "default" namespace, which exists without the namespace step.
    for obj in all_manifests(namespace="qwen3-alb-test", **overrides):
        if "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = "default"
        name = obj["metadata"]["name"]
        if obj["kind"] not in kinds or name in ("qwen3-asr", "qwen3-model-seeder") or name.startswith("nvidia"):
            continue
        if obj["kind"] == "ConfigMap" and name != "qwen3-speech-scripts":
            continue
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            pod.pop("initContainers", None)  # the model guard: tested elsewhere
            pod.pop("affinity", None)        # no ASR pod here to sit next to
        out.append(obj)
    return out


def as_before_issue_10(objects: list[dict]) -> list[dict]:
    """The same objects with the values shipped before long requests were handled."""
    objects = copy.deepcopy(objects)
    for obj in objects:
        annotations = obj["metadata"].get("annotations") or {}
        if obj["kind"] == "Ingress":
            annotations.pop("alb.ingress.kubernetes.io/load-balancer-attributes", None)
            annotations.pop("alb.ingress.kubernetes.io/target-group-attributes", None)
        if obj["kind"] == "Service":
            for key in [k for k in annotations if k != "alb.ingress.kubernetes.io/healthcheck-path"]:
                del annotations[key]
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            container.pop("command", None)  # the image's `python -m api.main`: uvicorn keep-alive 5 s
            container.pop("livenessProbe", None)
            container["readinessProbe"] = {"exec": {"command": ["python3", "/opt/qwen3-speech/tts_health_check.py"]},
                                           "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4}
    return objects


RESOURCES = {"Deployment": DEPLOYMENTS, "Service": SERVICES, "ServiceAccount": SERVICEACCOUNTS, "Ingress": INGRESSES, "ConfigMap": CONFIGMAPS,
             "StorageClass": STORAGECLASSES, "PersistentVolumeClaim": PVCS}


def start_tts(cluster, objects: list[dict]) -> str:
    """Create the objects, seed the TTS model files, wait for Ready and a healthy ALB target: the listener URL."""
    return start_tts_listeners(cluster, objects, ports={8880})[8880]


def start_tts_listeners(cluster, objects: list[dict], ports: set[int]) -> dict[int, str]:
    """As start_tts, waiting for the ALB listeners on `ports`: port to URL."""
    store = cluster.store
    for obj in objects:
        store.create(RESOURCES[obj["kind"]], obj)
    pv = wait_for(lambda: next(iter(store.list(PVS)), None), "the models volume")
    model_dir = cluster.storage.local_dir(pv) / "Qwen3-TTS-CustomVoice"
    for name in TTS_FILES:
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / name).write_text("{}")
    wait_for(lambda: deployment_ready(store, "default", "qwen3-tts"), "the TTS deployment to be ready", timeout=30)
    listeners = wait_for(lambda: (lambda ls: ls if ports <= set(ls) else None)(cluster.alb.listeners().get(GROUP, {})),
                         f"the ALB's listeners on {sorted(ports)}")
    wait_for(lambda: tts_target_states(cluster) == ["healthy"], "the TTS target to turn healthy", timeout=20)
    return listeners


def tts_target_states(cluster) -> list[str]:
    return sorted((cluster.alb.target_health(GROUP).get("default/qwen3-tts-service:80") or {}).values())


def tts_pod_ready(cluster) -> bool:
    found = pods(cluster.store, selector="app.kubernetes.io/name=qwen3-tts")
    return bool(found) and all(c["type"] != "Ready" or c["status"] == "True"
                               for c in found[0].get("status", {}).get("conditions", []))


class Client:
    """One kept-alive client connection to a listener, as curl or an SDK would hold it."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (ConnectionError, http.client.RemoteDisconnected):
            self.conn.close()  # the ALB closed an idle client connection: reconnect once, like clients do
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()

    def speech(self, text: str) -> tuple[int, bytes]:
        return self.request("POST", "/v1/audio/speech", {"model": "tts-1", "input": text, "voice": "Vivian",
                                                         "response_format": "wav"})


def watch(predicate, stop: threading.Event, seen: list) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            seen.append(predicate())
            time.sleep(0.02)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_long_texts_take_longer_than_the_albs_default_idle_timeout():
    # What the tests below rely on, in the real server's seconds.
    assert 60 < tts_synthesis_seconds(OVER_A_MINUTE) < 300
    assert 540 < tts_synthesis_seconds(LONG_TEXT) < 1800


def test_with_the_manifests_before_the_fix_a_long_synthesis_gets_504_and_the_pod_is_deregistered(tmp_path):
    with running_cluster(tmp_path) as cluster:
        url = start_tts(cluster, as_before_issue_10(tts_objects()))
        # Long requests queue up behind each other, as clients' requests do: the server stays busy
        # long enough for four probe failures even on a machine slow to start Python.
        statuses: list[int] = []
        clients = [threading.Thread(target=lambda: statuses.append(Client(url).speech(LONG_TEXT)[0]), daemon=True)
                   for _ in range(8)]
        for thread in clients:
            thread.start()
        wait_for(lambda: len(statuses) == 8, "the ALB to answer all eight", timeout=60)
        assert statuses == [504] * 8
        # The synthesis still runs: the exec readiness probe's /health gets no answer, the pod
        # turns NotReady, and the ALB deregisters it.
        wait_for(lambda: tts_target_states(cluster) == ["draining"], "the TTS target to be deregistered",
                 timeout=120)
        assert not tts_pod_ready(cluster)
        # Deregistered; once that has spread to the ALB's nodes, no target is left to send to.
        time.sleep(cluster.options.scaled(DEREGISTRATION_PROPAGATION))
        assert Client(url).request("GET", "/health")[0] == 503


def test_with_the_shipped_manifests_a_long_synthesis_returns_200_and_the_target_stays_healthy(tmp_path):
    with running_cluster(tmp_path) as cluster:
        url = start_tts(cluster, tts_objects())
        stop, states, ready = threading.Event(), [], []
        watchers = [watch(lambda: tts_target_states(cluster), stop, states), watch(lambda: tts_pod_ready(cluster),
                                                                                   stop, ready)]
        try:
            status, body = Client(url).speech(OVER_A_MINUTE)
        finally:
            stop.set()
            for thread in watchers:
                thread.join()
        assert status == 200, body
        assert decode_speech(body) == (OVER_A_MINUTE, "Chinese")
        assert states and all(s == ["healthy"] for s in states), set(map(tuple, states))
        assert ready and all(ready)


def test_a_second_request_during_a_long_synthesis_is_served_after_it(tmp_path):
    with running_cluster(tmp_path) as cluster:
        url = start_tts(cluster, tts_objects())
        results = {}
        long = threading.Thread(target=lambda: results.setdefault("long", Client(url).speech(OVER_A_MINUTE)))
        long.start()
        time.sleep(0.1)  # let the long one reach the server first
        results["short"] = Client(url).speech("你好")
        long.join()
        assert results["long"][0] == 200 and results["short"][0] == 200


def requests_spaced_between_keep_alive_and_idle_timeout(url: str, count: int = 4) -> list[int]:
    """Statuses of requests on one client connection, each after a pause longer than uvicorn's
    default keep-alive (5 s, scaled) and shorter than the ALB's default idle timeout (60 s, scaled)."""
    client = Client(url)
    statuses = []
    for _ in range(count):
        statuses.append(client.request("GET", "/health")[0])
        time.sleep(0.15)
    return statuses


def test_a_backend_keep_alive_shorter_than_the_idle_timeout_gives_502s(tmp_path):
    with running_cluster(tmp_path) as cluster:
        url = start_tts(cluster, as_before_issue_10(tts_objects()))
        statuses = requests_spaced_between_keep_alive_and_idle_timeout(url)
        assert 502 in statuses, statuses


def test_the_shipped_keep_alive_gives_no_502s(tmp_path):
    with running_cluster(tmp_path) as cluster:
        url = start_tts(cluster, tts_objects())
        statuses = requests_spaced_between_keep_alive_and_idle_timeout(url)
        assert statuses == [200] * len(statuses)


def test_the_alb_refuses_sources_outside_its_inbound_cidrs(tmp_path):
    with running_cluster(tmp_path) as cluster:
        url = start_tts(cluster, tts_objects(ingress_inbound_cidrs="10.0.0.0/16"))
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
            Client(url).request("GET", "/health")


def tts_network_policy(**overrides) -> dict:
    policy = next(o for o in all_manifests(namespace="qwen3-alb-test", **overrides)
                  if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "qwen3-tts")
    policy["metadata"]["namespace"] = "default"
    return policy


def test_the_alb_reaches_tts_only_while_its_network_policy_admits_the_albs_subnet(tmp_path):
    with running_cluster(tmp_path, alb_source_address="10.0.100.10") as cluster:
        cluster.store.create(NETWORKPOLICIES, tts_network_policy())  # the default: the VPC's private ranges
        url = start_tts(cluster, tts_objects())
        assert Client(url).request("GET", "/health")[0] == 200

        def elsewhere(policy: dict) -> None:
            policy["spec"]["ingress"][0]["from"] = [{"ipBlock": {"cidr": "10.0.7.0/24"}}]
        cluster.store.mutate(NETWORKPOLICIES, "default", "qwen3-tts", elsewhere)
        wait_for(lambda: tts_target_states(cluster) == ["unhealthy"], "the TTS target to turn unhealthy", timeout=20)
        assert Client(url).request("GET", "/health")[0] == 504


def test_idle_timeouts_that_differ_within_a_group_stop_the_group(tmp_path):
    with running_cluster(tmp_path) as cluster:
        objects = tts_objects()
        asr_ingress = next(o for o in objects if o["metadata"]["name"] == "qwen3-asr-ingress")
        asr_ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/load-balancer-attributes"] = \
            "idle_timeout.timeout_seconds=120"
        for obj in objects:
            if obj["kind"] == "Ingress":
                cluster.store.create(INGRESSES, obj)
        found = wait_for(lambda: events(cluster.store, "qwen3-", reason="FailedBuildModel"), "FailedBuildModel")
        assert "idle_timeout.timeout_seconds" in found[0]["message"]
        # The group stops reconciling: whatever was built before stays, the TTS listener never comes.
        assert 8880 not in cluster.alb.listeners().get(GROUP, {})


def test_health_check_settings_come_from_the_service_over_the_ingress():
    ingress = {"metadata": {"annotations": {"alb.ingress.kubernetes.io/healthcheck-path": "/",
                                            "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "20"}}}
    service = {"metadata": {"annotations": {"alb.ingress.kubernetes.io/healthcheck-path": "/health",
                                            "alb.ingress.kubernetes.io/success-codes": "200-299"}}}
    check = HealthCheck.of(ingress, service)
    assert (check.path, check.interval, check.timeout, check.healthy, check.unhealthy) == ("/health", 20, 5, 2, 2)
    assert check.accepts(204) and not check.accepts(404)
    with pytest.raises(AlbConfigError, match="timeout"):
        HealthCheck.of({"metadata": {"annotations": {"alb.ingress.kubernetes.io/healthcheck-timeout-seconds": "30"}}},
                       None)


def test_a_new_target_gets_no_request_before_its_first_health_check_passes_and_one_pass_makes_it_healthy():
    # AWS (ELB user guide, target group health checks): a registered target "must pass one health
    # check to be considered healthy"; the fail-open covers a group of "only unhealthy" targets.
    group = TargetGroup("hosthree", "qwen3-tts-service", 8880)
    group.register({("tts-a", 8880)}, now=0.0, scaled=lambda s: s)
    (new,) = group.targets.values()
    assert new.state == "initial" and group.pick() is None  # the listener answers 503
    group.record(new, False, "Target.FailedHealthChecks: connection refused")
    assert new.state == "initial" and group.pick() is None
    group.record(new, True, "")
    assert new.state == "healthy" and group.pick() is new
    # A target back from unhealthy needs the healthy threshold; until then the group fails open.
    for _ in range(group.health.unhealthy):
        group.record(new, False, "Target.Timeout: Request timed out")
    assert new.state == "unhealthy" and group.pick() is new
    group.record(new, True, "")
    assert new.state == "unhealthy"
    group.record(new, True, "")
    assert new.state == "healthy"
    # Beside a healthy target, a new one waits for its first check.
    group.register({("tts-a", 8880), ("tts-b", 8880)}, now=0.0, scaled=lambda s: s)
    assert {group.pick().pod for _ in range(4)} == {"tts-a"}


def test_listener_urls_are_published_for_state_json(tmp_path):
    with running_cluster(tmp_path) as cluster:
        published = []
        cluster.alb.on_listeners = published.append
        for obj in tts_objects():
            if obj["kind"] == "Ingress":
                cluster.store.create(INGRESSES, obj)
        wait_for(lambda: published and set(published[-1].get(GROUP, {})) == {8000, 8880}, "both listeners")
        assert all(u.startswith("http://127.0.0.1:") for u in published[-1][GROUP].values())
