"""Several serving nodes (serving_nodes, tts_per_node): one ASR and one TTS pod per GPU node, all behind the ALB.

One sandbox for the whole story, as an operator lives it: grow to two nodes, rerun, shrink back to one.
"""

from __future__ import annotations

import threading
import time

from kubernetes import client

from tests.cluster_helpers import wait_for
from tests.deploy_helpers import assert_ok, deploy, output, writes
from tests.test_operate import speechctl

NS = "hosthree"
GROUP = "qwen3-speech"
SERVICES = {"qwen3-asr": f"{NS}/qwen3-asr-service:80", "qwen3-tts": f"{NS}/qwen3-tts-service:80"}
LOCK = "/leases/qwen3-speech-deploy"


def _placement(core) -> dict[str, list[str]]:
    """node -> the app names of the serving pods on it (terminating pods left out)."""
    out: dict[str, list[str]] = {}
    for pod in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/part-of=qwen3-speech").items:
        app = pod.metadata.labels.get("app.kubernetes.io/name")
        if app in SERVICES and pod.metadata.deletion_timestamp is None and pod.spec.node_name:
            out.setdefault(pod.spec.node_name, []).append(app)
    return {node: sorted(apps) for node, apps in out.items()}


def _healthy_targets(sandbox) -> dict[str, list[str]]:
    """app -> its healthy ALB targets ("pod:port"), from the sandbox ALB's target groups."""
    groups = (sandbox.control.status().get("alb_targets") or {}).get(GROUP) or {}
    return {app: sorted(t for t, state in (groups.get(service) or {}).items() if state == "healthy")
            for app, service in SERVICES.items()}


def test_two_serving_nodes_converge_rerun_without_writes_and_shrink_back_keeping_one_pair_serving(sandbox):
    core = client.CoreV1Api(sandbox.control.kube_api_client())
    policy = client.PolicyV1Api(sandbox.control.kube_api_client())

    # Two nodes: Karpenter starts the second GPU node for the ASR pod anti-affinity keeps off the
    # first, in the zone the ASR pods' zone spread prefers; each node ends with exactly one ASR and one TTS pod, and verify asks every pod.
    grown = deploy(sandbox, "--data", "serving_nodes=2")
    assert_ok(grown)
    placement = _placement(core)
    assert len(placement) == 2 and all(apps == ["qwen3-asr", "qwen3-tts"] for apps in placement.values()), placement
    # The ASR zone spread (a preference) put the new node in the VPC's other zone.
    zones = {core.read_node(node).metadata.labels["topology.kubernetes.io/zone"] for node in placement}
    assert zones == {"us-west-2a", "us-west-2b"}
    text = output(grown)
    for node in placement:
        assert f"round trip on {node}" in text, text[-4000:]
    budgets = {b.metadata.name: b.spec.min_available for b in policy.list_namespaced_pod_disruption_budget(NS).items}
    assert budgets == {"qwen3-asr": 1, "qwen3-tts": 1}
    # Both pods of each app are registered behind the ALB and pass its health checks.
    both = wait_for(lambda: (lambda t: t if all(len(v) == 2 for v in t.values()) else None)(_healthy_targets(sandbox)),
                    "both pods of each app to be healthy ALB targets", timeout=60)
    assert {target.split(":")[0] for targets in both.values() for target in targets} == {
        p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/part-of=qwen3-speech").items
        if p.metadata.labels.get("app.kubernetes.io/name") in SERVICES}

    # A rerun with nothing to change writes nothing (the deploy lock's Lease aside), nor does status,
    # which lists every serving pod on its node and both budgets healthy.
    mark = sandbox.control.audit_mark()
    rerun = deploy(sandbox, "--data", "serving_nodes=2")
    assert_ok(rerun)
    status = speechctl(sandbox, "status", "inventories/sandbox.py", "--data", "serving_nodes=2")
    assert status.returncode == 0, output(status)[-3000:]
    assert [f"{r['verb']} {r['path']}" for r in writes(sandbox.control.audit_since(mark))
            if not r["path"].endswith(LOCK)] == []
    for pod in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/part-of=qwen3-speech").items:
        if pod.metadata.labels.get("app.kubernetes.io/name") in SERVICES:
            assert f"{pod.metadata.name} on {pod.spec.node_name}: " in status.stdout, status.stdout
    assert status.stdout.count("PodDisruptionBudget ") == 2 and "NOT READY" not in status.stdout

    # Back to one node: the ALB is polled all along, and always has a healthy target of each app.
    polls: list[dict[str, list[str]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append(_healthy_targets(sandbox))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        shrunk = deploy(sandbox, "--data", "serving_nodes=1")
    finally:
        stop.set()
        poller.join(timeout=10)
    assert_ok(shrunk)
    assert len(polls) > 10
    assert [p for p in polls if not (p["qwen3-asr"] and p["qwen3-tts"])] == []
    # Whole nodes' worth went: one node keeps its pair, the other has no serving pod left.
    assert list(_placement(core).values()) == [["qwen3-asr", "qwen3-tts"]], _placement(core)
    assert policy.list_namespaced_pod_disruption_budget(NS).items == []
