"""Step 5 (部署 ASR): Deployment + Service, then wait until the pod is Running and Ready.

The first start is long (Spot node 1-3 min, 14.4 GB image ~7 min, model load and CUDA graphs
3-5 min); progress is printed as it changes, and a pod that cannot succeed stops the wait with
its reason instead of running out the timeout. With deploy_order "overlapped" (the default) the
Deployment is applied at once and waited for after TTS and the Ingress are applied too
(`wait_ready`): the node, the pulls, the seeding and the ALB take their minutes side by side,
while the pod's model guard holds it until its model is seeded.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render, short_image

from .context import context_of
from .serving_nodes import no_budget_with_one_node, whole_nodes_leave
from .models import env_secret


def desired(ctx) -> list[dict]:
    """The API key Secret (when api_key_secret is set), then the Deployment + Service that read it."""
    s = ctx.settings
    key = env_secret(ctx, s.api_key_secret, "api-key", "QWEN3_SPEECH_API_KEY", "5. ASR", "api_key_secret")
    return key + render("qwen3-asr-deployment.yaml", s, model=ctx.models["asr"], asr_image=ctx.asr_pod_image)


@deploy("5. ASR")
def deploy_asr():
    ctx = context_of(host)
    s = ctx.settings
    whole_nodes_leave(name="Scale-down keeps whole nodes: qwen3-asr pods of the nodes that leave go first",
                      app="qwen3-asr", replicas=s.serving_nodes, label="5. ASR")
    k8s.applied(
        name=f"Deployment + Service ({short_image(ctx.asr_pod_image)}, max_model_len {s.asr_max_model_len})",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        wait=ctx.wait_for("5. ASR"),
        timeout=s.timeout_asr_ready,
        poll=s.poll_seconds,
        unschedulable_grace=s.unschedulable_grace_seconds,
        label="5. ASR",
    )
    no_budget_with_one_node("qwen3-asr", label="5. ASR")


@deploy("5. ASR")
def wait_ready():
    """deploy_order overlapped: wait until ASR is Ready (its node, pull, model guard, load)."""
    s = context_of(host).settings
    k8s.awaited(
        name="Ready: node, image, model, load and CUDA graphs",
        step="5. ASR",
        timeout=s.timeout_asr_ready,
        poll=s.poll_seconds,
        unschedulable_grace=s.unschedulable_grace_seconds,
    )
