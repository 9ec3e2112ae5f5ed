"""Step 0, GPU nodes (the guide's 前置条件): the Karpenter NodePool and EC2NodeClass, when the playbook manages them.

Off by default (manage_gpu_nodepool): the guide has the NodePool as a prerequisite, and preflight
checks whichever pool is there. On, the playbook applies its own pair, `qwen3-speech-gpu`, before
time-slicing: g4dn Spot with one T4, labelled with gpu_node_selector and tainted for
gpu_tolerations. With gpu_image_cache_snapshot_id the nodes boot Bottlerocket with their data
volume made from that snapshot, so both images are on the node before the pods ask for them
(`python -m qwen_speech image-cache build` makes it; qwen_speech/image_cache.py).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render

from .context import context_of
from .time_slicing import bottlerocket_settings

NAME = "qwen3-speech-gpu"


def taints_for(tolerations: list[dict]) -> list[dict]:
    """One taint per toleration that names a key: the taint the pods tolerate and others do not."""
    taints = []
    for t in tolerations:
        if not t.get("key"):
            continue  # tolerates every taint: nothing of its own to keep others off
        value = t.get("value") if t.get("operator", "Equal") == "Equal" else "true"
        taints.append({"key": t["key"], "value": value or "true", "effect": t.get("effect") or "NoSchedule"})
    return taints


def desired(ctx) -> list[dict]:
    s = ctx.settings
    if not s.manage_gpu_nodepool:
        return []
    # Here, not at the top: it imports boto3 (~0.1 s), which a run without AWS otherwise never needs.
    from qwen_speech.image_cache import DATA_VOLUME_GIB

    snapshot_id = s.gpu_image_cache_snapshot_id
    return render("gpu-nodepool.yaml", s, name=NAME, taints=taints_for(s.gpu_tolerations), snapshot_id=snapshot_id,
                  data_volume_gib=DATA_VOLUME_GIB, user_data=bottlerocket_settings(s) if snapshot_id else "")


@deploy("0. GPU NodePool")
def manage():
    ctx = context_of(host)
    s = ctx.settings
    if not s.manage_gpu_nodepool:
        return
    cache = f", data volume from {s.gpu_image_cache_snapshot_id}" if s.gpu_image_cache_snapshot_id else ""
    k8s.applied(
        name=f"NodePool and EC2NodeClass {NAME} (g4dn Spot{cache})",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        label="0. GPU NodePool",
    )
