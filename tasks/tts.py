"""Step 6 (部署 TTS): Deployment + Service, on the ASR pod's node, loading only once ASR runs.

The guide applies TTS after ASR runs, to keep both pods on the one time-sliced GPU and their
loads apart. Here the pod keeps both itself, after every restart too: required pod affinity puts
it next to ASR, and its wait-for-asr init container lets it load only once ASR on its node
answers. So with deploy_order "overlapped" it is applied right after ASR and pulls its image
while ASR loads; with "guide" it is applied once step 5 has waited until ASR is Ready.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render, short_image

from .context import context_of
from .serving_nodes import no_budget_with_one_node, whole_nodes_leave


def desired(ctx) -> list[dict]:
    return render("qwen3-tts-deployment.yaml", ctx.settings, model=ctx.models["tts"], tts_image=ctx.tts_image,
                  asr_image=ctx.asr_pod_image)


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
        wait=ctx.wait_for("6. TTS"),
        timeout=s.timeout_tts_ready,
        poll=s.poll_seconds,
        unschedulable_grace=s.unschedulable_grace_seconds,
        label="6. TTS",
    )
    no_budget_with_one_node("qwen3-tts", label="6. TTS")


@deploy("6. TTS")
def wait_ready():
    """deploy_order overlapped: wait until TTS is Ready (its pull, ASR Ready on its node, its load)."""
    s = context_of(host).settings
    k8s.awaited(
        name="Ready: image, ASR Ready on its node, then its own load",
        step="6. TTS",
        timeout=s.timeout_tts_ready,
        poll=s.poll_seconds,
        unschedulable_grace=s.unschedulable_grace_seconds,
    )
