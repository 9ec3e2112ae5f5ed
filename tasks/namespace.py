"""Step 2 (创建 Namespace): the namespace both services live in, their ServiceAccounts and the
NetworkPolicies, all before any pod exists (a pod is never unconfined, even briefly)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render

from .context import context_of


HUB = "https://huggingface.co"


def hub_port(endpoint: str | None) -> int:
    """The port the seeding Job reaches the Hub (or its mirror) on."""
    url = urlsplit(endpoint or HUB)
    return url.port or (80 if url.scheme == "http" else 443)


def network_policies(s) -> list[dict]:
    alb_sources = [{"ipBlock": {"cidr": cidr.strip()}} for cidr in s.alb_source_cidrs.split(",")]
    return render("qwen3-speech-network-policy.yaml", s, alb_sources=alb_sources, hub_port=hub_port(s.hf_endpoint))


def desired(ctx) -> list[dict]:
    return render("qwen3-speech-namespace.yaml", ctx.settings) + network_policies(ctx.settings)


@deploy("2. Namespace")
def create():
    ctx = context_of(host)
    s = ctx.settings
    k8s.applied(
        name=f"{s.namespace}",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        label="2. namespace",
    )
