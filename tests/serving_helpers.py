"""N serving nodes in a bare sandbox cluster, and a client that streams requests through its ALB.

The shipped ASR and TTS manifests, rendered as the deploy renders them with `serving_nodes: N` and
placed in "default", run one ASR and one TTS pod per GPU node behind the sandbox ALB: ASR pods kept
apart by required pod anti-affinity (Karpenter launches a GPU node for each), each TTS pod next to
its ASR pod, and with N > 1 a PodDisruptionBudget per app that keeps one serving. Used by tests/sandbox/test_cluster_spot_drain.py
and bench/serving_capacity_bench.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from qwen_speech.roundtrip import RoundTripError, UrlTransport, speak, strip_asr_prefix, transcribe
from qwen_speech.settings import validate
from sandbox.cluster.common import (CONFIGMAPS, DEPLOYMENTS, INGRESSES, NODES, PODS, PVCS, PVS, SERVICEACCOUNTS,
                                    SERVICES, STORAGECLASSES)
from sandbox.cluster.faults import PDBS
from sandbox.speech import decode_speech
from tests.cluster_helpers import configure_time_slicing, deployment_ready, node_gpus, time_slicing_config, wait_for
from tests.manifest_helpers import all_manifests, default_data

GROUP = "qwen3-speech"
APPS = ("qwen3-asr", "qwen3-tts")
NAMESPACE = "qwen3-serving-test"  # rendered for a namespace of the deploy's own, then placed in "default"
ASR_MODEL = "qwen3-asr"  # a served alias (asr_served_model_aliases)
TTS_FILES = ("config.json", "generation_config.json", "speech_tokenizer/config.json")
RESOURCES = {"Deployment": DEPLOYMENTS, "Service": SERVICES, "ServiceAccount": SERVICEACCOUNTS, "Ingress": INGRESSES,
             "ConfigMap": CONFIGMAPS, "StorageClass": STORAGECLASSES, "PersistentVolumeClaim": PVCS,
             "PodDisruptionBudget": PDBS}


def serving_objects(nodes: int, **overrides) -> list[dict]:
    """The serving Deployments, Services, Ingresses, PodDisruptionBudgets and what they mount, as the
    deploy renders them with `serving_nodes: nodes` and `overrides` (one ASR and one TTS pod per GPU
    node, a budget per app while more than one node serves)."""
    out = []
    for obj in all_manifests(namespace=NAMESPACE, serving_nodes=nodes, **overrides):
        name = obj["metadata"]["name"]
        if obj["kind"] not in RESOURCES or (obj["kind"] == "Deployment" and name not in APPS):
            continue
        if obj["kind"] == "ConfigMap" and name != "qwen3-speech-scripts":
            continue
        if "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = "default"
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            # The model guard checks the seeded manifest: tested elsewhere, and no seeding here.
            pod["initContainers"] = [c for c in pod.get("initContainers") or [] if c["name"] != "model-guard"]
        out.append(obj)
    return out


def start_serving(cluster, nodes: int, **overrides) -> dict[str, str]:
    """Create the serving objects for `nodes` GPU nodes (inventory `overrides`), seed the model files,
    wait until every pod is Ready and every ALB target healthy: {"asr": listener URL, "tts": listener URL}."""
    store = cluster.store
    configure_time_slicing(store, time_slicing_config(2))  # ASR and TTS share each node's T4
    wait_for(lambda: node_gpus(store) == 2, "time-slicing in effect")
    for obj in serving_objects(nodes, **overrides):
        store.create(RESOURCES[obj["kind"]], obj)
    pv = wait_for(lambda: next(iter(store.list(PVS)), None), "the models volume")
    s = validate(default_data(namespace=NAMESPACE))
    for model_path, files in ((s.asr_model_path, ("config.json",)), (s.tts_model_path, TTS_FILES)):
        model_dir = cluster.storage.local_dir(pv) / Path(model_path).relative_to(s.models_mount_path)
        for name in files:
            (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (model_dir / name).write_text("{}")
    for app in APPS:
        wait_for(lambda: deployment_ready(store, "default", app) and ready_replicas(store, app) == nodes,
                 f"{nodes} ready pods of {app}", timeout=90)
    wait_for(lambda: all(len(healthy_targets(cluster, app)) == nodes for app in APPS),
             f"{nodes} healthy ALB targets per app", timeout=60)
    ports = {"asr": s.asr_port, "tts": s.tts_port}
    listeners = cluster.alb.listeners().get(GROUP, {})
    return {kind: listeners[port] for kind, port in ports.items()}


def ready_replicas(store, app: str) -> int:
    return int(((store.get(DEPLOYMENTS, "default", app) or {}).get("status") or {}).get("readyReplicas", 0))


def healthy_targets(cluster, app: str) -> list[str]:
    """The nodes of the pods the ALB sends `app`'s new requests to (healthy targets)."""
    states = cluster.alb.target_health(GROUP).get(f"default/{app}-service:80") or {}
    nodes = []
    for target, state in states.items():
        pod = cluster.store.get(PODS, "default", target.rsplit(":", 1)[0])
        if state == "healthy" and pod is not None:
            nodes.append(pod["spec"].get("nodeName"))
    return nodes


def serving_on(cluster, node: str) -> bool:
    """Both apps have a healthy ALB target on `node`."""
    return all(node in healthy_targets(cluster, app) for app in APPS)


def gpu_nodes(cluster) -> list[str]:
    return sorted(n["metadata"]["name"] for n in cluster.store.list(NODES)
                  if (n["metadata"].get("labels") or {}).get("node-type") == "gpu")


@dataclass
class Sent:
    """One client request: when it was sent, and how it ended (first try, then the one retry)."""

    kind: str
    at: float
    first_ok: bool
    ok: bool
    error: str = ""


@dataclass
class Stream:
    """Client threads sending requests through the ALB one after the other, each retried once on failure.

    + urls: {"asr": URL, "tts": URL} of the ALB listeners
    + text: what TTS speaks; ASR transcribes the speech of it (made once, up front)
    + clients: threads per kind
    + pause: seconds between a thread's requests (a steady stream, not a flood)
    + kinds: what the threads ask: "tts", "asr", "roundtrip" (speak, then transcribe that speech)
    + retry: retry a failed request once
    """

    urls: dict[str, str]
    text: str = "Hello from the Spot test."
    clients: int = 2
    pause: float = 0.01
    kinds: tuple[str, ...] = ("tts", "asr")
    retry: bool = True
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.audio, _ = speak(UrlTransport(self.urls["tts"]), self.text, voice="Vivian", model="tts-1")

    def once(self, kind: str) -> None:
        """One request of `kind`; raises RoundTripError (or AssertionError) on a bad answer."""
        audio = self.audio
        if kind in ("tts", "roundtrip"):
            audio, _ = speak(UrlTransport(self.urls["tts"]), self.text, voice="Vivian", model="tts-1", timeout=60)
            assert decode_speech(audio)[0] == self.text, "the speech is not of the text sent"
        if kind in ("asr", "roundtrip"):
            text, _ = transcribe(UrlTransport(self.urls["asr"]), audio, ASR_MODEL, timeout=60)
            assert strip_asr_prefix(text)[1] == self.text, f"transcribed {text!r}"

    def _attempt(self, kind: str) -> str:
        try:
            self.once(kind)
            return ""
        except (RoundTripError, AssertionError) as err:
            return str(err) or type(err).__name__

    def _run(self, kind: str) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            first = self._attempt(kind)
            second = self._attempt(kind) if first and self.retry else first
            with self._lock:
                self.sent.append(Sent(kind, at, not first, not second, second or first))
            self._stop.wait(self.pause)

    def start(self) -> "Stream":
        for kind in self.kinds:
            for i in range(self.clients):
                thread = threading.Thread(target=self._run, args=(kind,), name=f"stream-{kind}-{i}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def since(self, moment: float) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.at >= moment]
