"""Step 6 (部署 TTS): Deployment + Service, only once ASR runs, on the same GPU node.

pyinfra runs operations in order and step 5 waits until ASR is Ready, so TTS is applied only
after that, as the guide asks (to keep both pods on the one time-sliced GPU).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render, short_image

from .context import context_of
from .serving_nodes import budget_ref, whole_nodes_leave


def desired(ctx) -> list[dict]:
    return render("qwen3-tts-deployment.yaml", ctx.settings, model=ctx.models["tts"], tts_image=ctx.tts_image)


@deploy("6. TTS")
def deploy_tts():
    ctx = context_of(host)
    s = ctx.settings
    whole_nodes_leave(name="Scale-down keeps whole nodes: qwen3-tts pods of the nodes that leave go first",
                      app="qwen3-tts", replicas=s.serving_nodes * s.tts_per_node, label="6. TTS")
    k8s.applied(
        name=f"Deployment + Service ({short_image(ctx.tts_image)})",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        wait=True,
        timeout=s.timeout_tts_ready,
        poll=s.poll_seconds,
        unschedulable_grace=s.unschedulable_grace_seconds,
        label="6. TTS",
    )
    if s.serving_nodes == 1:  # a minAvailable 1 budget over one pod would block every drain
        k8s.absent(
            name="PodDisruptionBudget (none with one serving node)",
            refs=[budget_ref("qwen3-tts", s.namespace)], timeout=60, poll=s.poll_seconds, label="6. TTS",
        )
