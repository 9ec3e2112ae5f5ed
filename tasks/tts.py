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


def desired(ctx) -> list[dict]:
    return render("qwen3-tts-deployment.yaml", ctx.settings, model=ctx.models["tts"], tts_image=ctx.tts_image)


@deploy("6. TTS")
def deploy_tts():
    ctx = context_of(host)
    s = ctx.settings
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
