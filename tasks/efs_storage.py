"""Step 3 (创建 EFS 存储): the EFS StorageClass and the shared models PVC, waited for until Bound."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from kubeops import k8s
from qwen_speech.manifests import render

from .context import DeployBlocked, context_of


@deploy("3. EFS storage")
def create():
    ctx = context_of(host)
    s = ctx.settings
    if not ctx.file_system_id:
        raise DeployBlocked("3. EFS: no file system id: set efs_file_system_id, or efs_name_tag with AWS access "
                            "(aws_region), or efs_create: true to create one")
    k8s.applied(
        name=f"3. EFS StorageClass {s.efs_storage_class} ({ctx.file_system_id}) + PVC {s.namespace}/{s.models_pvc}",
        manifests=render("qwen3-speech-efs-pvc.yaml", s, file_system_id=ctx.file_system_id),
        field_manager=s.field_manager,
        wait=True,
        timeout=s.timeout_pvc_bound,
        poll=s.poll_seconds,
        label="3. EFS",
    )
