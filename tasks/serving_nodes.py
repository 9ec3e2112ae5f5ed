"""Serving nodes (serving_nodes, tts_per_node): a smaller count removes whole nodes' worth of pods.

The two Deployments scale on their own, and the ReplicaSet controller picks the pods that go by
its own ranking (kubernetes/kubernetes pkg/controller/controller_utils.go ActivePodsWithRanks):
left alone, 2 -> 1 could take ASR off one node and TTS off the other, leaving two halves of a
pair. So before a Deployment shrinks, its pods on the nodes that leave get a lower
`controller.kubernetes.io/pod-deletion-cost`, which the controller deletes first among pods
equally scheduled, running and ready. The nodes that stay are those with a ready ASR pod, the
longest serving first; the others' pods go, so the pairs that stay keep serving throughout.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import operation

from kubeops import k8s
from kubeops.kinds import Ref
from kubeops.waiter import pod_is_ready

from .context import context_of, host_tag

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LEAVING_COST = "-1000"  # below the unset default, 0
MERGE_PATCH = "application/merge-patch+json"
SERVING = "app.kubernetes.io/part-of=qwen3-speech"


def staying_nodes(pods: list[dict], keep: int) -> list[str]:
    """The `keep` nodes whose serving pods stay: a ready ASR pod first, then a ready TTS pod, then
    the oldest ASR pod (the node that has served longest), then the name."""
    nodes: dict[str, list] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or pod["metadata"].get("deletionTimestamp"):
            continue
        app = pod["metadata"]["labels"].get("app.kubernetes.io/name")
        rank = nodes.setdefault(node, [False, False, "~", node])
        if app == "qwen3-asr":
            rank[0] = rank[0] or pod_is_ready(pod)
            rank[2] = min(rank[2], pod["metadata"].get("creationTimestamp") or "~")
        elif app == "qwen3-tts":
            rank[1] = rank[1] or pod_is_ready(pod)
    ordered = sorted(nodes.values(), key=lambda r: (not r[0], not r[1], r[2], r[3]))
    return [r[3] for r in ordered[:keep]]


@operation(is_idempotent=True)
def whole_nodes_leave(app: str, replicas: int, label: str):
    """
    Before the Deployment `app` shrinks to `replicas`, mark its pods on the nodes that leave so
    the ReplicaSet controller deletes those first.

    + app: qwen3-asr or qwen3-tts
    + replicas: the Deployment's replicas after this run
    + label: how progress and errors name this step

    Nothing to do (no write) unless the live Deployment has more replicas than wanted.
    """
    ctx = context_of(host)
    s, kube = ctx.settings, ctx.kube
    try:
        live = kube.get(Ref("apps/v1", "Deployment", app, s.namespace))
    except k8s.API_ERRORS as err:
        yield from k8s.failed(label, err)
        return
    if live is None or int((live.get("spec") or {}).get("replicas", 1)) <= replicas:
        host.noop(f"{app}: not shrinking")
        return

    def mark():
        pods = kube.list("v1", "Pod", s.namespace, label_selector=SERVING)
        staying = set(staying_nodes(pods, s.serving_nodes))
        for pod in pods:
            meta = pod["metadata"]
            leaving = (pod.get("spec") or {}).get("nodeName") not in staying
            if meta["labels"].get("app.kubernetes.io/name") != app or not leaving:
                continue
            if (meta.get("annotations") or {}).get(DELETION_COST) == LEAVING_COST:
                continue
            kube.request("PATCH", Ref("v1", "Pod", meta["name"], s.namespace).path(), content_type=MERGE_PATCH,
                         body={"metadata": {"annotations": {DELETION_COST: LEAVING_COST}}})
        kept = ", ".join(sorted(staying)) or "no node yet"
        logger.info(f"    {host_tag()}{label}: {app}: keeping the pods on {kept}; the others go first")

    yield k8s.python_command(label, mark)


def no_budget_with_one_node(app: str, label: str) -> None:
    """With one serving node the app has no PodDisruptionBudget: minAvailable 1 over one pod
    would block every drain (a Spot notice, a Karpenter disruption) for ever."""
    s = context_of(host).settings
    if s.serving_nodes == 1:
        k8s.absent(
            name="PodDisruptionBudget (none with one serving node)",
            refs=[budget_ref(app, s.namespace)], timeout=60, poll=s.poll_seconds, label=label,
        )


def budget_ref(app: str, namespace: str) -> Ref:
    """The app's PodDisruptionBudget (files/qwen3-*-deployment.yaml, only while serving_nodes > 1)."""
    return Ref("policy/v1", "PodDisruptionBudget", app, namespace)
