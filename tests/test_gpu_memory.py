"""GPU memory shared by ASR and TTS on one time-sliced GPU: the sandbox's memory ledger and the
start order it makes matter. vLLM checks free memory at start and profiles its own usage; a TTS
load during that profiling eats ASR's KV cache, and ASR exits (vllm v1/worker/gpu_worker.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubeops.client import Kube
from kubeops.kinds import Ref
from sandbox import speech
from sandbox.cluster.common import DEPLOYMENTS
from sandbox.cluster.gpu_memory import GIB, GpuMemory
from tests.cluster_helpers import (configure_time_slicing, deployment, node_gpus, pods, ready_pods,
                                   running_cluster, time_slicing_config, wait_for)

ASR_ARGS = ["Qwen/Qwen3-ASR-1.7B", "--dtype", "half", "--gpu-memory-utilization", "0.45"]
TTS_ENV = {"NVIDIA_VISIBLE_DEVICES": "all"}


def test_asr_refuses_to_start_when_free_memory_is_below_its_utilization_share():
    ledger = GpuMemory()
    ledger.allocate("other", 10 * GIB)
    with pytest.raises(speech.StandInCrashed, match=r"Free memory on device cuda:0 \(5.00/15.00 GiB\) on startup "
                                                     r"is less than desired GPU memory utilization \(0.45, 6.75 GiB\)"):
        speech.start_stand_in("asr", args=ASR_ARGS, gpu_memory=ledger, owner="asr")
    assert ledger.used_by("asr") == 0


def test_asr_then_tts_fit_and_stopping_frees_the_memory():
    ledger = GpuMemory()
    asr = speech.start_stand_in("asr", args=ASR_ARGS, gpu_memory=ledger, owner="asr")
    assert ledger.used_by("asr") == pytest.approx(0.45 * 15 * GIB)
    assert any("Available KV cache memory: 1.75 GiB" in line for line in asr.log_lines)
    tts = speech.start_stand_in("tts", env=TTS_ENV, gpu_memory=ledger, owner="tts")
    wait_for(lambda: ledger.used_by("tts") == pytest.approx(speech.TTS_LOAD_GIB * GIB), "the TTS model loaded")
    tts.stop()
    asr.stop()
    assert ledger.free() == ledger.total


def test_a_tts_load_during_asr_profiling_leaves_no_memory_for_the_cache_blocks():
    ledger = GpuMemory()
    asr = speech.start_stand_in("asr", args=ASR_ARGS, gpu_memory=ledger, owner="asr", load_seconds=0.3)
    tts = speech.start_stand_in("tts", env=TTS_ENV, gpu_memory=ledger, owner="tts")
    try:
        wait_for(lambda: asr.exit_message, "ASR to exit after profiling")
        assert "No available memory for the cache blocks" in asr.exit_message
        assert ledger.used_by("asr") == 0  # the exited process holds nothing
    finally:
        tts.stop()
        asr.stop()


def _speech_deployments(store) -> None:
    asr = deployment("asr", image="qwenllm/qwen3-asr:latest", gpu=1, container={"args": ASR_ARGS})
    tts = deployment("tts", image="qwen3-tts:test", gpu=1, next_to="asr",
                     container={"command": ["python", "-m", "api.main"], "env": [
                         {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]})
    store.create(DEPLOYMENTS, asr)
    wait_for(lambda: ready_pods(store, "default", "app=asr", 1), "ASR ready first, as the first deploy does")
    store.create(DEPLOYMENTS, tts)
    wait_for(lambda: ready_pods(store, "default", "app in (asr,tts)", 2), "both ready")


def _asr_restarted(store):
    # A Spot drain leaves the evicted pod Terminating for its grace period beside its replacement.
    (pod,) = [p for p in pods(store, selector="app=asr") if not p["metadata"].get("deletionTimestamp")] or [None]
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return statuses and statuses[0].get("restartCount", 0) >= 1 and statuses[0]


@pytest.mark.parametrize("fault", [("restart-pods", {"deployments": ["asr", "tts"]}),
                                   ("spot-interruption", {"replacement_delay": 0.3})], ids=lambda f: f[0])
def test_both_serving_pods_coming_back_together_crash_asr_with_todays_pod_specs(tmp_path, fault):
    """Today's TTS pod only needs ASR scheduled (pod affinity), not started: after a restart of
    both or a Spot replacement, TTS loads during ASR's profiling and ASR exits."""
    with running_cluster(tmp_path, model_load=0.5) as cluster:
        store = cluster.store
        configure_time_slicing(store, time_slicing_config(4))
        wait_for(lambda: node_gpus(store) == 4, "time-slicing in effect")
        _speech_deployments(store)
        cluster.inject(*fault)
        status = wait_for(lambda: _asr_restarted(store), "ASR to exit and restart")
        assert "No available memory for the cache blocks" in status["lastState"]["terminated"]["message"]


# -- the shipped manifests, deployed by the playbook --------------------------------------------

NS = "hosthree"
FAULTS = [("restart-pods", {"namespace": NS, "deployments": ["qwen3-asr", "qwen3-tts"]}),
          ("spot-interruption", {"replacement_delay": 0.3})]


def _kube(handle) -> Kube:
    return Kube(handle.control.kube_api_client())


def _serving(kube, name: str) -> list[dict]:
    return [p for p in kube.list("v1", "Pod", NS, label_selector=f"app.kubernetes.io/name={name}")
            if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def _asr_status(kube) -> dict | None:
    pods = _serving(kube, "qwen3-asr")
    statuses = (pods[0].get("status") or {}).get("containerStatuses") or [] if len(pods) == 1 else []
    return statuses[0] if statuses else None


def _new_pods_ready(kube, before: set[str]):
    pods = _serving(kube, "qwen3-asr") + _serving(kube, "qwen3-tts")
    return len(pods) == 2 and all(_ready(p) and p["metadata"]["uid"] not in before for p in pods) and pods


def _uids(kube) -> set[str]:
    return {p["metadata"]["uid"] for p in _serving(kube, "qwen3-asr") + _serving(kube, "qwen3-tts")}


@pytest.fixture
def speech_sandbox(make_sandbox):
    """The playbook's deploy, converged, on a sandbox whose model loads (ASR's profiling window) are
    long enough for a co-tenant's load to land inside."""
    from tests.deploy_helpers import assert_ok, deploy

    handle = make_sandbox(cluster_overrides={"model_load": 1.0})
    assert_ok(deploy(handle))
    return handle


def _round_trip_through_alb(handle) -> list | None:
    """The guide's round trip sent to the ALB's listeners, as a client outside the cluster; None
    while it does not answer yet (targets registering, health checks not passed)."""
    from qwen_speech.roundtrip import RoundTripError, UrlTransport, round_trip

    listeners = handle.state.get("alb_listeners") or {}
    try:
        results = round_trip(UrlTransport(listeners["8880"]), UrlTransport(listeners["8000"]),
                             asr_model="/models/Qwen3-ASR-1.7B", max_cer=0.0, timeout=30)
    except (RoundTripError, KeyError):
        return None
    return results if all(r.ok for r in results) else None


def _load_order(handle, node: str, asr_pod: str, tts_pod: str) -> tuple[float, float]:
    """(when ASR's load ended, when TTS's began) on the node's GPU, from the sandbox's memory
    ledger: vLLM's last allocation is its KV cache, after profiling; TTS's first starts its load."""
    allocations = handle.control.status()["gpu_memory"][node]["allocations"]
    asr = [a["at"] for a in allocations if a["owner"] == f"{NS}/{asr_pod}/asr"]
    tts = [a["at"] for a in allocations if a["owner"].startswith(f"{NS}/{tts_pod}/")]
    assert asr and tts, allocations
    return max(asr), min(tts)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f[0])
def test_after_both_pods_come_back_together_the_shipped_manifests_start_asr_first_and_answer_again(speech_sandbox, fault):
    """TTS's wait-for-asr init container holds its model load until ASR on the same node answers
    /health (the node-local Service): ASR never exits, ASR's load ends before TTS's begins on the
    GPU, and the round trip works through the ALB and the API server's proxy, with no rerun."""
    from qwen_speech.roundtrip import round_trip
    from tasks.verify import ServiceProxy

    kube = _kube(speech_sandbox)
    before = _uids(kube)
    speech_sandbox.control.fault(fault[0], **fault[1])
    wait_for(lambda: _new_pods_ready(kube, before), "both serving pods back and ready", timeout=120)
    status = _asr_status(kube)
    assert status["restartCount"] == 0, status
    wait_for(lambda: _round_trip_through_alb(speech_sandbox), "the round trip through the ALB", timeout=60)
    results = round_trip(ServiceProxy(kube, NS, "qwen3-tts-service"), ServiceProxy(kube, NS, "qwen3-asr-service"),
                         asr_model="/models/Qwen3-ASR-1.7B", max_cer=0.0)
    assert [r.ok for r in results] == [True, True]
    (asr_pod,), (tts_pod,) = _serving(kube, "qwen3-asr"), _serving(kube, "qwen3-tts")
    asr_loaded, tts_began = _load_order(speech_sandbox, tts_pod["spec"]["nodeName"], asr_pod["metadata"]["name"],
                                        tts_pod["metadata"]["name"])
    assert asr_loaded <= tts_began
    assert _asr_status(kube)["restartCount"] == 0
    (tts,) = _serving(kube, "qwen3-tts")
    assert "ASR on this node is ready" in kube.pod_log(NS, tts["metadata"]["name"], container="wait-for-asr")
    # The footprint, measured on the node's GPU as the sandbox reports it (`python -m sandbox status`):
    # ASR's reservation (utilization x 15 GiB) plus what the TTS load took, with room to spare.
    gpu = speech_sandbox.control.status()["gpu_memory"][tts["spec"]["nodeName"]]
    held = {who.split("/")[-1]: gib for who, gib in gpu["used_gib"].items()}
    assert held == {"asr": pytest.approx(0.45 * 15, abs=0.01), "tts": pytest.approx(speech.TTS_LOAD_GIB, abs=0.01)}
    assert gpu["free_gib"] == pytest.approx(15 - 0.45 * 15 - speech.TTS_LOAD_GIB, abs=0.02)
    shown = subprocess.run([sys.executable, "-m", "sandbox", "status", "--dir", str(speech_sandbox.root)],
                           capture_output=True, text=True, timeout=60).stdout
    assert f"GPU memory on {tts['spec']['nodeName']}: 3.45 of 15.00 GiB free" in shown, shown


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f[0])
def test_after_both_pods_come_back_together_todays_tts_pod_spec_crashes_asr(speech_sandbox, fault):
    """The failing half on the same deploy: the TTS pod spec shipped before, i.e. without the
    wait-for-asr init container, loads during ASR's profiling and ASR exits."""
    kube = _kube(speech_sandbox)
    ref = Ref("apps/v1", "Deployment", "qwen3-tts", NS)
    tts = kube.get(ref)
    spec = tts["spec"]["template"]["spec"]
    spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] != "wait-for-asr"]
    assert [c["name"] for c in spec["initContainers"]] == ["asr-image-first", "model-guard"]  # today's spec
    kube.request("PUT", ref.path(), body=tts)
    wait_for(lambda: [p for p in _serving(kube, "qwen3-tts") if _ready(p) and not any(
        c["name"] == "wait-for-asr" for c in p["spec"].get("initContainers") or [])], "today's TTS pod ready",
        timeout=120)
    speech_sandbox.control.fault(fault[0], **fault[1])
    status = wait_for(lambda: (_asr_status(kube) or {}).get("restartCount", 0) >= 1 and _asr_status(kube),
                      "ASR to exit and restart", timeout=120)
    assert "No available memory for the cache blocks" in status["lastState"]["terminated"]["message"]
