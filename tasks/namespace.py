"""Step 2 (创建 Namespace): the namespace both services live in."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render

from .context import context_of


def desired(ctx) -> list[dict]:
    return render("qwen3-speech-namespace.yaml", ctx.settings)


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
