"""The per-node image store (sandbox/cluster/images.py): images stay on the node that pulled them,
a node booted with images skips their pulls, images go with their node, and pulls on one node share
its bandwidth while pulls on different nodes do not (EKS's kubelet pulls in parallel)."""

from __future__ import annotations

from sandbox.cluster import ClusterOptions
from sandbox.cluster.common import DEPLOYMENTS, NODES
from sandbox.cluster.images import ImageStore
from tests.cluster_helpers import GPU_NODE, deployment, events, pods, ready_pods, running_cluster, wait_for

ASR_IMAGE = "qwenllm/qwen3-asr@sha256:" + "a" * 64
TTS_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/qwen3-tts@sha256:" + "b" * 64


def _messages(store, pod_name: str) -> list[str]:
    return [e["message"] for e in events(store, pod_name) if e.get("reason") in ("Pulling", "Pulled")]


def _on_gpu_node(name: str, image: str) -> dict:
    return deployment(name, image=image, spec={"nodeSelector": {"kubernetes.io/hostname": GPU_NODE},
                                               "tolerations": [{"operator": "Exists"}]})


def test_a_second_pod_with_an_image_the_node_has_pulled_starts_without_a_pull(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, _on_gpu_node("first", "busybox:1.36"))
        (first,) = wait_for(lambda: ready_pods(store, "default", "app=first", 1), "the first pod ready")
        assert any(m.startswith('Successfully pulled image "busybox:1.36"') for m in _messages(store, first["metadata"]["name"]))
        assert cluster.images.has(GPU_NODE, "busybox:1.36")
        store.create(DEPLOYMENTS, _on_gpu_node("second", "busybox:1.36"))
        (second,) = wait_for(lambda: ready_pods(store, "default", "app=second", 1), "the second pod ready")
        messages = wait_for(lambda: _messages(store, second["metadata"]["name"]), "the second pod's image event")
        assert messages == ['Container image "busybox:1.36" already present on machine']


def test_a_node_booted_with_an_image_on_its_data_volume_pulls_nothing_for_it(tmp_path):
    with running_cluster(tmp_path) as cluster:
        cluster.images.preload(GPU_NODE, [TTS_IMAGE])
        cluster.store.create(DEPLOYMENTS, _on_gpu_node("cached", TTS_IMAGE))
        (pod,) = wait_for(lambda: pods(cluster.store, selector="app=cached"), "the pod")
        messages = wait_for(lambda: _messages(cluster.store, pod["metadata"]["name"]), "its image event")
        assert messages == [f'Container image "{TTS_IMAGE}" already present on machine']


def test_images_go_with_their_node_when_it_is_interrupted(tmp_path):
    with running_cluster(tmp_path) as cluster:
        cluster.images.preload(GPU_NODE, [ASR_IMAGE])
        answer = cluster.inject("spot-interruption", {"node": GPU_NODE, "replacement_delay": 0.1})
        assert not cluster.images.has(GPU_NODE, ASR_IMAGE)
        wait_for(lambda: cluster.store.get(NODES, None, answer["replacement"]), "the replacement node")
        assert not cluster.images.has(answer["replacement"], ASR_IMAGE)


def _took(store: ImageStore, node: str, image: str, start: float = 0.0) -> float | None:
    """Step the store's clock (seconds) from `start` until the pull is done: the seconds it took."""
    now = start
    while now <= start + 3600:
        took = store.pull_progress(node, image, now)
        if took is not None:
            return took
        now += 0.5
    return None


def test_two_pulls_on_one_node_share_its_bandwidth_and_pulls_on_two_nodes_do_not():
    """The store's model of a pull, stepped on an explicit clock (no waiting): the TTS image alone,
    beside the ASR image on the same node, and beside it on another node."""
    alone, shared, apart = (ImageStore(ClusterOptions(time_scale=1.0)) for _ in range(3))
    alone.start_pull("a", TTS_IMAGE, 0.0)
    shared.start_pull("a", TTS_IMAGE, 0.0)
    shared.start_pull("a", ASR_IMAGE, 0.0)
    apart.start_pull("a", TTS_IMAGE, 0.0)
    apart.start_pull("b", ASR_IMAGE, 0.0)
    by_itself = _took(alone, "a", TTS_IMAGE)
    assert _took(apart, "a", TTS_IMAGE) == by_itself
    assert _took(shared, "a", TTS_IMAGE) > 1.9 * by_itself  # half the bandwidth while both run
    assert not alone.has("a", TTS_IMAGE)  # on disk once the kubelet says the pull succeeded
    alone.pulled("a", TTS_IMAGE)
    alone.start_pull("a", TTS_IMAGE, 4000.0)  # pull policy Always, image present: a manifest check
    assert _took(alone, "a", TTS_IMAGE, 4000.0) < by_itself / 10
    alone.forget("a")
    assert not alone.has("a", TTS_IMAGE)


def test_a_node_knows_an_image_by_any_spelling_containerd_gives_the_same_reference():
    store = ImageStore(ClusterOptions(fast=True))
    store.preload("n", ["docker.io/qwenllm/qwen3-asr:latest", "docker.io/library/busybox:1.36"])
    assert store.has("n", "qwenllm/qwen3-asr") and store.has("n", "busybox:1.36")
    assert not store.has("n", "qwenllm/qwen3-asr:v2") and not store.has("other", "busybox:1.36")
