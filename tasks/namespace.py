"""Step 2 (创建 Namespace): the namespace both services live in."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render

from .context import context_of


@deploy("2. Namespace")
def create():
    s = context_of(host).settings
    k8s.applied(
        name=f"2. Namespace {s.namespace}",
        manifests=render("qwen3-speech-namespace.yaml", s),
        field_manager=s.field_manager,
        label="2. namespace",
    )
