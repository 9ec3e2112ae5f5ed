"""Step 7 (部署 Ingress): the shared ALB, one listener per service, waited for until it has an address.

With deploy_order "overlapped" it is applied before the pods are Ready, so the ALB (2-3 minutes
to become active) provisions while they pull and load; its targets register as they get Ready.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render

from .context import context_of

SERVICES = (
    {"app": "qwen3-asr", "ingress": "qwen3-asr-ingress", "service": "qwen3-asr-service", "port_key": "asr_port",
     "host_key": "ingress_asr_host"},
    {"app": "qwen3-tts", "ingress": "qwen3-tts-ingress", "service": "qwen3-tts-service", "port_key": "tts_port",
     "host_key": "ingress_tts_host"},
)


def ingress_services(s) -> list[dict]:
    """SERVICES with each one's port and host from the settings: what the Ingress template loops over."""
    return [dict(svc, port=getattr(s, svc["port_key"]), host=getattr(s, svc["host_key"])) for svc in SERVICES]


def desired(ctx) -> list[dict]:
    s = ctx.settings
    return render("qwen3-speech-ingress.yaml", s, services=ingress_services(s))


def listeners_summary(s) -> str:
    if s.ingress_certificate_arn:
        return f"HTTPS :443 ASR {s.ingress_asr_host}, TTS {s.ingress_tts_host}; HTTP :80 redirects"
    return f":{s.asr_port} ASR, :{s.tts_port} TTS"


@deploy("7. Ingress")
def deploy_ingress():
    ctx = context_of(host)
    s = ctx.settings
    k8s.applied(
        name=f"group {s.ingress_group} ({listeners_summary(s)}, {s.ingress_scheme})",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        wait=ctx.wait_for("7. Ingress"),
        timeout=s.timeout_ingress,
        poll=s.poll_seconds,
        label="7. ingress",
    )


@deploy("7. Ingress")
def wait_ready():
    """deploy_order overlapped: wait until the ALB has an address."""
    s = context_of(host).settings
    k8s.awaited(name="ALB address", step="7. Ingress", timeout=s.timeout_ingress, poll=s.poll_seconds,
                label="7. ingress")

