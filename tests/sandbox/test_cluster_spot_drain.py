"""A Spot interruption while clients stream requests through the ALB: with two serving nodes none is
lost (the ALB stops sending to the leaving pods, which finish what they have and go; the other node
serves until the replacement does); with one node the same stream sees the outage.

Each request is retried once by the client on failure, as the issue asks of clients. The
interruption runs in real time (fast mode's scale): the notice, the drain by eviction, preStop,
SIGTERM, the instance gone at the notice's end, the pre-spun replacement joining later. The
serving pairs are the shipped manifests spread by tests/serving_helpers.py (to become the
`serving_nodes` setting). Below them, the pieces: an eviction a PDB refuses, a request in flight
on a leaving pod (it finishes; cut with a 502 when the instance goes first).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from sandbox.cluster.common import DEPLOYMENTS, NODES, PODS
from sandbox.cluster.faults import PDBS
from tests.cluster_helpers import GPU_NODE, deployment, events, pods, ready_pods, running_cluster, wait_for
from sandbox.speech import decode_speech
from tests.serving_helpers import GROUP, Stream, gpu_nodes, healthy_targets, serving_on, start_serving

# Long enough that the surviving node carries the stream alone for a while after the notice ends.
REPLACEMENT_DELAY = 2.5
AT_LEAST = 50  # requests sent between the notice and the replacement serving again


def stream_through_interruption(tmp_path, nodes: int) -> tuple[list, dict]:
    """Serve on `nodes` GPU nodes, stream requests, interrupt the first node, keep streaming until
    the replacement serves both apps (and AT_LEAST were sent since the notice): the requests sent
    since the notice, and the fault's answer."""
    with running_cluster(tmp_path) as cluster:
        urls = start_serving(cluster, nodes)
        assert len(gpu_nodes(cluster)) == nodes
        stream = Stream(urls).start()
        try:
            wait_for(lambda: len(stream.sent) >= 8, "the stream to flow before the notice")
            notice = time.monotonic()
            fault = cluster.inject("spot-interruption", {"node": GPU_NODE, "replacement_delay": REPLACEMENT_DELAY})
            wait_for(lambda: serving_on(cluster, fault["replacement"]) and len(stream.since(notice)) >= AT_LEAST,
                     "the replacement node to serve both apps again", timeout=120)
        finally:
            stream.stop()
        assert GPU_NODE not in gpu_nodes(cluster)
        assert events(cluster.store, GPU_NODE, reason="SpotInterrupted")
        return stream.since(notice), fault


def test_with_two_serving_nodes_a_spot_interruption_loses_no_request_sent_through_the_alb(tmp_path):
    sent, fault = stream_through_interruption(tmp_path, nodes=2)
    assert len(sent) >= AT_LEAST
    assert {s.kind for s in sent} == {"tts", "asr"}
    failed = [s for s in sent if not s.ok]
    assert failed == [], f"{len(failed)} of {len(sent)} failed after one retry; first: {failed[0].error}"


def test_with_one_serving_node_the_same_stream_sees_the_outage(tmp_path):
    sent, _ = stream_through_interruption(tmp_path, nodes=1)
    assert len(sent) >= AT_LEAST
    assert [s for s in sent if not s.ok], "no request failed although the only serving node went away"


def test_a_drained_pod_finishes_its_grace_period_on_the_node_before_the_instance_goes(tmp_path):
    """The sequence itself: at the notice the node is tainted and its serving pods are Terminating
    (deleted with their grace period, not at once) while the node is still there; the node leaves
    once they have stopped, or at the notice's end."""
    with running_cluster(tmp_path) as cluster:
        start_serving(cluster, 1)
        store = cluster.store
        fault = cluster.inject("spot-interruption", {"node": GPU_NODE, "replacement_delay": 30})
        node = store.get(NODES, None, GPU_NODE)
        assert node is not None
        assert any(t["key"] == "karpenter.sh/disrupted" for t in node["spec"]["taints"])
        leaving = [p for p in pods(store, selector="app.kubernetes.io/part-of=qwen3-speech")
                   if p["spec"].get("nodeName") == GPU_NODE]
        assert leaving and all(p["metadata"].get("deletionTimestamp") for p in leaving)
        assert all(p["metadata"]["deletionGracePeriodSeconds"] == p["spec"]["terminationGracePeriodSeconds"]
                   for p in leaving)
        assert events(store, leaving[0]["metadata"]["name"], reason="Evicted")
        wait_for(lambda: GPU_NODE not in gpu_nodes(cluster), "the interrupted node to leave")
        killing = [e for p in leaving for e in events(store, p["metadata"]["name"], reason="Killing")]
        assert killing  # the kubelet stopped them (preStop, SIGTERM) before the node went
        assert not healthy_targets(cluster, "qwen3-asr") and fault["replacement"] not in gpu_nodes(cluster)


def test_an_eviction_a_pdb_refuses_is_retried_until_the_instance_goes_at_the_notices_end(tmp_path):
    """Karpenter's drain goes through the Eviction API, which honours PDBs; EC2 does not wait for it."""
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("asr", gpu=1))
        store.create(PDBS, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                            "metadata": {"name": "asr", "namespace": "default"},
                            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "asr"}}}})
        (pod,) = wait_for(lambda: ready_pods(store, "default", "app=asr", 1), "the pod")
        name = pod["metadata"]["name"]
        cluster.inject("spot-interruption", {"node": GPU_NODE, "replacement_delay": 30, "notice": 3})
        wait_for(lambda: len(events(store, GPU_NODE, reason="FailedDraining")) or None, "the refused eviction")
        assert not store.get(PODS, "default", name)["metadata"].get("deletionTimestamp")  # refused: still serving
        assert not events(store, name, reason="Evicted")
        wait_for(lambda: store.get(NODES, None, GPU_NODE) is None, "the instance to go when the notice ends")
        assert store.get(PODS, "default", name) is None


# Fast mode runs every duration at 1/100, so a busy machine's control loop (a pass can take a
# few hundred milliseconds) is slow next to them: these two stretch the pods' grace period to 600 s
# (ingress_deregistration_delay_seconds, also the ALB's wait) and use syntheses far from every end.
GRACE = 600
FINISHES = "你好" * 280   # ~300 s of synthesis: inside the grace period and a notice stretched to 900 s
OUTLASTS = "你好" * 600   # ~650 s: far longer than a notice cut short to 30 s


def tts_request_in_flight(cluster) -> bool:
    groups = cluster.alb.balancers[GROUP].target_groups.values()
    return any(t.in_flight for g in groups if g.service == "qwen3-tts-service" for t in g.targets.values())


def interrupt_during_a_synthesis(tmp_path, text: str, notice: float) -> tuple[int, bytes, str]:
    """Start a synthesis of `text` through the ALB, interrupt its node (a `notice` in real seconds)
    while it runs: the client's answer and the TTS container's log."""
    with running_cluster(tmp_path) as cluster:
        urls = start_serving(cluster, 1, ingress_deregistration_delay_seconds=GRACE)
        (pod,) = pods(cluster.store, selector="app.kubernetes.io/name=qwen3-tts")
        answer: dict = {}
        body = json.dumps({"model": "tts-1", "input": text, "voice": "Vivian"}).encode()

        def ask() -> None:
            request = urllib.request.Request(urls["tts"] + "/v1/audio/speech", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer["reply"] = response.status, response.read()
            except urllib.error.HTTPError as err:
                answer["reply"] = err.code, err.read()

        client = threading.Thread(target=ask, daemon=True)
        client.start()
        wait_for(lambda: tts_request_in_flight(cluster), "the synthesis to be in flight")
        cluster.inject("spot-interruption", {"node": GPU_NODE, "replacement_delay": 30,
                                             "notice": cluster.options.scaled(notice)})
        client.join(timeout=60)
        wait_for(lambda: GPU_NODE not in gpu_nodes(cluster), "the interrupted node to leave")
        log = cluster.pod_log_path("default", pod["metadata"]["name"], "tts").read_text()
        return (*answer["reply"], log)


def test_a_synthesis_in_flight_on_an_evicted_pod_finishes_before_its_server_exits(tmp_path):
    status, audio, log = interrupt_during_a_synthesis(tmp_path, FINISHES, notice=900)
    assert status == 200, audio[:300]
    assert decode_speech(audio)[0] == FINISHES
    # SIGTERM came while it ran: the server stopped accepting and waited for it, as uvicorn does.
    assert "Waiting for connections to close" in log and "Finished server process" in log


def test_a_synthesis_still_running_when_the_instance_goes_gets_a_502(tmp_path):
    status, _, log = interrupt_during_a_synthesis(tmp_path, OUTLASTS, notice=30)
    assert status == 502  # the target's connection died before it answered anything
    assert "Finished server process" not in log
