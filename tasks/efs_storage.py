"""Step 3 (创建 EFS 存储): the EFS StorageClass and the shared models PVC, waited for until Bound.

The file system is the inventory's (efs_file_system_id), found by its Name tag, or, with
efs_create, created by this step (encrypted, mount targets in the cluster's subnets; never twice,
never deleted). The guide copies its ID into the StorageClass by hand.

A StorageClass's parameters, provisioner and reclaimPolicy cannot be updated (the API server
refuses), so a class that differs from the wanted one is replaced, deleted and created again,
and only with replace_storage_class: true (preflight stops otherwise). Bound PVs keep working:
they carry their access point in the volume handle and never read the class again.
"""

from __future__ import annotations

import time

import click
from pyinfra import host, logger, state
from pyinfra.api import deploy, operation

from kubeops import changes, k8s
from kubeops.kinds import Ref
from qwen_speech.manifests import render

from .context import DeployBlocked, context_of, host_tag

TO_BE_CREATED = "fs-to-be-created"


def desired(ctx) -> list[dict]:
    file_system_id = ctx.file_system_id or (TO_BE_CREATED if ctx.efs_action == "would-create" else None)
    if not file_system_id:
        raise DeployBlocked("3. EFS: no file system id: set efs_file_system_id, or efs_name_tag with AWS access "
                            "(aws_region), or efs_create: true to create one")
    return render("qwen3-speech-efs-pvc.yaml", ctx.settings, file_system_id=file_system_id)


IMMUTABLE = ("provisioner", "reclaimPolicy", "volumeBindingMode")


def storage_class_changes(ctx) -> list[str]:
    """What differs between the live StorageClass and the wanted one, in fields the API server
    will not update: "parameters.uid: (none) -> '1000'". Empty when it is absent or the same."""
    if not ctx.file_system_id:
        return []
    wanted = desired(ctx)[0]
    live = ctx.kube.get(Ref("storage.k8s.io/v1", "StorageClass", wanted["metadata"]["name"]))
    if live is None:
        return []
    changes = [f"{key}: {live.get(key)!r} -> {wanted.get(key)!r}" for key in IMMUTABLE
               if live.get(key) != wanted.get(key)]
    old, new = live.get("parameters") or {}, wanted.get("parameters") or {}
    def shown(params: dict, key: str) -> str:
        return repr(params[key]) if key in params else "(none)"
    changes += [f"parameters.{key}: {shown(old, key)} -> {shown(new, key)}"
                for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return changes


@deploy("3. EFS storage")
def create():
    ctx = context_of(host)
    s = ctx.settings
    if ctx.efs_action == "would-create":
        efs_file_system(name=f"Create the EFS file system Name={s.efs_name_tag} (efs_create)")
    if ctx.storage_class_changes:
        storage_class_replaced(name=f"Replace StorageClass {s.efs_storage_class} (replace_storage_class: "
                                    f"its {', '.join(c.split(':')[0] for c in ctx.storage_class_changes)} "
                                    "cannot be updated in place)")
    k8s.applied(
        name=f"StorageClass {s.efs_storage_class} ({ctx.file_system_id or s.efs_name_tag}) "
             f"+ PVC {s.namespace}/{s.models_pvc}",
        # A class being replaced is created by that operation: a dry-run PATCH of it would be refused.
        manifests=lambda: desired(ctx)[1:] if ctx.storage_class_changes else desired(ctx),
        field_manager=s.field_manager,
        wait=True,
        timeout=s.timeout_pvc_bound,
        poll=s.poll_seconds,
        label="3. EFS",
    )


@operation(is_idempotent=True)
def efs_file_system():
    """
    Create the models' EFS file system when none carries the inventory's Name tag.

    Encrypted, with a creation token derived from the cluster and the name, so a rerun finds it
    instead of making a second one.
    """
    from qwen_speech import aws

    ctx = context_of(host)
    s = ctx.settings
    cluster = s.eks_cluster_name or s.environment
    found = aws.resolve_efs(ctx.aws, name_tag=s.efs_name_tag, create=True, cluster_name=cluster, dry_run=True)
    if found.action != "would-create":
        ctx.file_system_id = found.file_system_id
        host.noop(f"EFS file system {found.file_system_id} exists")
        return
    if state.config.DIFF and not (state.is_executing and state.check_for_changes):
        logger.info(f"    {host_tag()}Will create {click.style('EFS file system Name=' + s.efs_name_tag, bold=True)}: "
                    + ", ".join(f"{k} {v}" for k, v in found.details.items()))

    def create_file_system():
        try:
            made = aws.resolve_efs(ctx.aws, name_tag=s.efs_name_tag, create=True, cluster_name=cluster)
        except aws.AwsProblem as err:
            host.log_styled(f"3. EFS: {err}", fg="red", log_func=logger.error)
            return False
        ctx.file_system_id = made.file_system_id
        logger.info(f"    {host_tag()}3. EFS: {made.action} file system {made.file_system_id}")
        return True

    yield k8s.python_command("3. EFS", create_file_system)


@operation(is_idempotent=False)
def storage_class_replaced():
    """
    Delete the StorageClass whose immutable fields differ and create it as wanted.

    Existing PVs keep their access point and data; only claims made from now on get the new
    parameters (for a new uid/gid: the next recreated models PVC).
    """
    ctx = context_of(host)
    s = ctx.settings
    ref = Ref("storage.k8s.io/v1", "StorageClass", s.efs_storage_class)
    logger.info(f"    Will replace {click.style('StorageClass ' + s.efs_storage_class, bold=True)}: "
                + "; ".join(ctx.storage_class_changes))

    def replace():
        wanted = changes.with_applied_hash(desired(ctx)[0])
        ctx.kube.delete(ref)
        while ctx.kube.get(ref) is not None:  # no finalizers on a StorageClass: gone at once, or nearly
            time.sleep(s.poll_seconds)
        ctx.kube.apply(wanted, field_manager=s.field_manager)
        logger.info(f"    {host_tag()}3. EFS: deleted StorageClass {s.efs_storage_class} to recreate it "
                    f"({'; '.join(ctx.storage_class_changes)}); bound PVs keep their access points")
        return True

    yield k8s.python_command("3. EFS", replace)
