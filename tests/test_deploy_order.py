"""deploy_order: what runs side by side (the node, the pulls, the seeding, the ALB) and the one
order that is kept (ASR loads before TTS on the shared GPU), on the first deploy and after a Spot
interruption with nobody running anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from kubernetes import client

from qwen_speech.roundtrip import UrlTransport, round_trip
from sandbox.hub import ASR_REPO, TTS_REPO
from tests.deploy_helpers import (ROOT, assert_asr_loaded_before_tts, assert_ok, changed_operations, deploy, deployed,  # noqa: F401
                                  output, ready_at, serving_pods, writes)

NS = "hosthree"
# The big file of each model: the sandbox Hub holds its download mid-way until the fault is cleared.
WEIGHTS = {ASR_REPO: "model-00001-of-00002.safetensors", TTS_REPO: "model.safetensors"}


def _guard_log(core, pod) -> str:
    statuses = {s.name: s for s in pod.status.init_container_statuses or []}
    guard = statuses.get("model-guard")
    if guard is None or not (guard.state.running or guard.state.terminated):
        return ""
    return core.read_namespaced_pod_log(pod.metadata.name, NS, container="model-guard")


def _until(what: str, check, seconds: float = 120, run: subprocess.Popen | None = None):
    """Poll check() until it returns something truthy; fail naming `what` (a bound, not a timing assert)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if run is not None and run.poll() is not None:
            raise AssertionError(f"the deploy ended before {what}:\n" + run.stdout.read()[-4000:])
        time.sleep(0.3)
    raise AssertionError(f"never saw {what}")


def test_serving_pods_and_the_ingress_come_while_the_models_seed_asr_first_and_start_asr_then_tts_once_seeded(sandbox):
    for repo, path in WEIGHTS.items():  # both downloads hang half-way until cleared
        sandbox.control.fault("hub-cut", repo=repo, path=path, stall_seconds=600)
    core = client.CoreV1Api(sandbox.control.kube_api_client())
    net = client.NetworkingV1Api(sandbox.control.kube_api_client())
    apps = client.AppsV1Api(sandbox.control.kube_api_client())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update(QWEN3_SANDBOX_DIR=str(sandbox.root), PYTHONUNBUFFERED="1")
    run = subprocess.Popen([sys.executable, "-m", "pyinfra", "-y", "inventories/sandbox.py", "deploy.py"], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def guards_waiting():
            logs = [_guard_log(core, p) for app in ("qwen3-asr", "qwen3-tts") for p in serving_pods(core, app)]
            return len(logs) == 2 and all("waiting for the seed" in log for log in logs) and logs

        logs = _until("both serving pods waiting in their model guard", guards_waiting, run=run)
        assert ASR_REPO in logs[0] and TTS_REPO in logs[1]
        # Meanwhile the ALB provisions: the Ingress is there while no serving pod is Ready.
        assert {i.metadata.name for i in net.list_namespaced_ingress(NS).items} == {"qwen3-asr-ingress",
                                                                                  "qwen3-tts-ingress"}
        for name in ("qwen3-asr", "qwen3-tts"):
            assert not apps.read_namespaced_deployment(name, NS).status.ready_replicas
        # The seeding runs on a node that was already there, not on the GPU node the pods wait on.
        seeders = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/name=qwen3-model-seed").items
        gpu_nodes = {n.metadata.name for n in core.list_node(label_selector="node-type=gpu").items}
        assert seeders and not {p.spec.node_name for p in seeders} & gpu_nodes
        tts = apps.read_namespaced_deployment("qwen3-tts", NS).spec.template.spec.containers[0]
        assert {c.image for p in seeders for c in p.spec.containers} == {tts.image}  # the smaller image
        # One model after the other, ASR's first (its load comes first): TTS's seeder waits for it.
        def tts_seeder_waiting():
            pods = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/name=qwen3-model-seed,"
                                                               "qwen3-speech.io/model=tts").items
            return [p for p in pods for s in p.status.init_container_statuses or []
                    if s.name == "after-asr-seed" and s.state.running]

        (waiting,) = _until("TTS's seeder waiting for ASR's seed", tts_seeder_waiting, run=run)
        assert ASR_REPO in core.read_namespaced_pod_log(waiting.metadata.name, NS, container="after-asr-seed")
        sandbox.control.fault("clear")
        text, _ = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, text[-6000:]
    assert "round trip tts-1/Vivian" in text
    (asr,) = serving_pods(core, "qwen3-asr")
    assert_asr_loaded_before_tts(core, asr.spec.node_name)
    log = _guard_log(core, asr)  # the guard that waited is the one that let the pod start
    assert "waiting for the seed" in log and "complete in " in log.strip().splitlines()[-1]

    mark = sandbox.control.audit_mark()
    again = deploy(sandbox)
    assert_ok(again)
    assert writes(sandbox.control.audit_since(mark)) == []
    assert changed_operations(output(again)) == 0


def test_the_guides_order_applies_tts_only_after_asr_is_ready_and_the_ingress_last(sandbox):
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox, "--data", "deploy_order=guide")
    assert_ok(result)
    text = output(result)
    records = [r for r in writes(sandbox.control.audit_since(mark)) if r["verb"] in ("create", "patch")]

    def first(part: str) -> int:
        return next(i for i, r in enumerate(records) if part in r["path"])

    assert first("/jobs/qwen3-seed-") < first("/deployments/qwen3-asr") < first("/deployments/qwen3-tts") < first(
        "/ingresses/qwen3-asr-ingress")
    assert text.index("4. models: ASR @") < text.index("created Deployment hosthree/qwen3-asr")
    assert text.index("Deployment hosthree/qwen3-asr is ready") < text.index("created Deployment hosthree/qwen3-tts")
    assert text.index("Deployment hosthree/qwen3-tts is ready") < text.index("created Ingress hosthree/qwen3-asr-ingress")
    core = client.CoreV1Api(sandbox.control.kube_api_client())
    apps = client.AppsV1Api(sandbox.control.kube_api_client())
    (asr,) = serving_pods(core, "qwen3-asr")
    assert ready_at(asr) <= apps.read_namespaced_deployment("qwen3-tts", NS).metadata.creation_timestamp


def test_a_spot_interruption_with_nobody_running_anything_brings_back_asr_then_tts_through_the_alb(deployed):
    core = client.CoreV1Api(deployed.control.kube_api_client())
    mark = deployed.control.audit_mark()
    fault = deployed.control.fault("spot-interruption", replacement_delay=1)["result"]
    node = fault["replacement"]

    def both_ready_on_the_new_node():
        pods = [p for app in ("qwen3-asr", "qwen3-tts") for p in serving_pods(core, app) if not p.metadata.deletion_timestamp]
        return len(pods) == 2 and all(p.spec.node_name == node and p.status.conditions and any(
            c.type == "Ready" and c.status == "True" for c in p.status.conditions) for p in pods)

    _until("both serving pods Ready on the replacement node", both_ready_on_the_new_node, seconds=240)
    assert_asr_loaded_before_tts(core, node)
    listeners = deployed.state["alb_listeners"]

    def answers():
        try:
            return round_trip(UrlTransport(listeners["8880"]), UrlTransport(listeners["8000"]),
                              asr_model="/models/Qwen3-ASR-1.7B", max_cer=0.2, timeout=30)
        except Exception:  # the ALB's targets may still be registering
            return None

    results = _until("a round trip through the ALB", answers, seconds=120)
    assert all(r.ok for r in results), results
    # Nothing was rerun: no write by the playbook, and no seeding Job came back.
    assert not [r for r in writes(deployed.control.audit_since(mark)) if "/jobs" in r["path"]]


def test_a_wait_relays_what_a_running_init_container_says_it_waits_for(sandbox):
    from kubeops.client import from_kubeconfig
    from kubeops.kinds import Ref
    from kubeops.waiter import wait_until_ready

    kube = from_kubeconfig(str(sandbox.root / "kubeconfig"))
    hold = {"name": "hold", "image": "python:3.11-slim", "command": [
        "python3", "-c", "import time; print('hold: waiting for the seed of the test model', flush=True); time.sleep(3)"]}
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "held", "namespace": "default"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "held"}}, "template": {
                    "metadata": {"labels": {"app": "held"}},
                    "spec": {"initContainers": [hold], "containers": [{"name": "main", "image": "busybox:1.36"}]}}}},
               field_manager="test")
    lines: list[str] = []
    wait_until_ready(kube, Ref("apps/v1", "Deployment", "held", "default"), timeout=120, poll=0.1, progress=lines.append)
    assert any("Init (hold: waiting for the seed of the test model)" in line for line in lines), lines
