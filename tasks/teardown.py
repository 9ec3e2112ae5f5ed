"""Teardown, the deploy in reverse: Ingress (and its ALB), TTS, ASR, seeding Jobs, then the pods'
ServiceAccounts and NetworkPolicies.

What took long to build stays unless the inventory (or `--data`) asks to purge it: the PVC and
the model data on EFS (`purge_models`), the time-slicing config (`purge_time_slicing`). An EFS
file system is never deleted here. A deploy after a teardown finds the models recorded and
seeded, so it does not download them again.
"""

from __future__ import annotations

import time

from pyinfra import host, logger
from pyinfra.api import deploy, operation

from kubeops import k8s
from kubeops.kinds import Ref
from kubeops.waiter import job_failed, job_ready
from qwen_speech.manifests import labels

from .context import context_of, host_tag
from .metrics import monitor_ref, operator_installed
from .models import RECORD

PART_OF = "app.kubernetes.io/part-of=qwen3-speech"


def _refs(kube, namespace: str, kinds: list[tuple[str, str]], selector: str) -> list[Ref]:
    refs = []
    for api_version, kind in kinds:
        for obj in kube.list(api_version, kind, namespace, label_selector=selector):
            refs.append(Ref(api_version, kind, obj["metadata"]["name"], namespace))
    return refs


@deploy("Teardown")
def tear_down():
    ctx = context_of(host)
    s, kube = ctx.settings, ctx.kube
    if kube.get(Ref("v1", "Namespace", s.namespace)) is None:
        logger.info(f"    {host_tag()}namespace {s.namespace} does not exist: nothing to tear down")
        return
    k8s.absent(
        name="7. Remove the Ingresses (the controller deletes the shared ALB)",
        refs=_refs(kube, s.namespace, [("networking.k8s.io/v1", "Ingress")], PART_OF),
        timeout=s.timeout_ingress, poll=s.poll_seconds, label="7. ingress",
    )
    if ctx.aws is not None:
        load_balancer_gone(name=f"7. ALB of group {s.ingress_group} is gone")
    if operator_installed(kube):  # without the Operator's CRDs there can be no ServiceMonitor to remove
        k8s.absent(
            name="5. Remove the ASR ServiceMonitor",
            refs=[monitor_ref(s.namespace)], timeout=60, poll=s.poll_seconds, label="5. ASR metrics",
        )
    for step, app in (("6. TTS", "qwen3-tts"), ("5. ASR", "qwen3-asr")):
        k8s.absent(
            name=f"{step}: remove Deployment + Service + PodDisruptionBudget",
            refs=_refs(kube, s.namespace, [("apps/v1", "Deployment"), ("v1", "Service"),
                                           ("policy/v1", "PodDisruptionBudget")],
                       f"{PART_OF},app.kubernetes.io/name={app}"),
            timeout=s.timeout_tts_ready, poll=s.poll_seconds, label=step,
        )
    k8s.absent(
        name="4. Remove the seeding and audit Jobs (model data and record kept)",
        refs=[ref for job in ("qwen3-model-seed", "qwen3-model-audit")
              for ref in _refs(kube, s.namespace, [("batch/v1", "Job")], f"{PART_OF},app.kubernetes.io/name={job}")],
        timeout=300, poll=s.poll_seconds, label="4. models",
    )
    if s.purge_models:
        models_purged(name="4. PURGE the model data on EFS, the record and the PVC")
    k8s.absent(
        name="2. Remove the pods' ServiceAccounts and NetworkPolicies (no pod of ours is left)",
        refs=_refs(kube, s.namespace, [("networking.k8s.io/v1", "NetworkPolicy"), ("v1", "ServiceAccount")], PART_OF),
        timeout=60, poll=s.poll_seconds, label="2. namespace",
    )
    if s.purge_time_slicing and ctx.device_plugin is not None:
        time_slicing_removed(name="1. PURGE the time-slicing config from the device plugin")


@operation(is_idempotent=True)
def load_balancer_gone():
    """
    Wait until the AWS Load Balancer Controller has deleted the group's ALB.
    """
    from qwen_speech import aws

    ctx = context_of(host)
    s = ctx.settings
    try:
        aws.find_load_balancer(ctx.aws, cluster_name=s.eks_cluster_name or "", group_name=s.ingress_group,
                               expected_ports=[], wait_seconds=0)
    except aws.AwsProblem:
        host.noop(f"no ALB for group {s.ingress_group}")
        return

    def wait_gone():
        deadline = time.monotonic() + s.timeout_ingress
        while time.monotonic() < deadline:
            try:
                aws.find_load_balancer(ctx.aws, cluster_name=s.eks_cluster_name or "", group_name=s.ingress_group,
                                       expected_ports=[], wait_seconds=0)
            except aws.AwsProblem:
                logger.info(f"    {host_tag()}7. ingress: the ALB of group {s.ingress_group} is gone")
                return True
            time.sleep(s.poll_seconds)
        host.log_styled(f"7. ingress: the ALB of group {s.ingress_group} still exists after {s.timeout_ingress}s; "
                        "check the AWS Load Balancer Controller's logs", fg="red", log_func=logger.error)
        return False

    yield k8s.python_command("7. ingress", wait_gone)


@operation(is_idempotent=True)
def models_purged():
    """
    Delete the model directories on EFS (a Job mounting the PVC), then the record, the PVC, the
    PV it was bound to (reclaimPolicy Retain keeps it otherwise) and that PV's EFS access point.

    The only place model data is ever deleted, and only when ``purge_models`` is true.
    """
    ctx = context_of(host)
    s, kube = ctx.settings, ctx.kube
    pvc = Ref("v1", "PersistentVolumeClaim", s.models_pvc, s.namespace)
    if kube.get(pvc) is None:
        host.noop(f"{pvc} already gone")
        return
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "qwen3-purge-models", "namespace": s.namespace, "labels": labels("qwen3-model-purge")},
        "spec": {"backoffLimit": 2, "template": {"metadata": {"labels": labels("qwen3-model-purge")}, "spec": {
            "restartPolicy": "Never",
            # Where the seeding Jobs run: no GPU node is needed (or launched) to delete files.
            "nodeSelector": s.seed_node_selector, "tolerations": s.seed_tolerations,
            # Confined as the seeding Job is, but as the namespace's default ServiceAccount (no token):
            # a deploy older than the seeder's own ServiceAccount can still be purged.
            "automountServiceAccountToken": False,
            # The TTS image (seed_image None) as its uid-1000 `appuser`, as the seeding Job runs it.
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"},
                                **({} if s.seed_image else {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000})},
            "containers": [{
                "name": "purge", "image": ctx.seed_image,
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "command": ["python3", "-c", "import shutil, sys\nfor d in sys.argv[1:]:\n"
                            "    shutil.rmtree(d, ignore_errors=True)\n    print('deleted', d)",
                            s.asr_model_path, s.tts_model_path],
                "volumeMounts": [{"name": "models", "mountPath": s.models_mount_path}],
            }],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": s.models_pvc}}],
        }}},
    }

    def purge():
        ref = Ref.of(job)
        if kube.get(ref) is not None:
            kube.delete(ref, propagation="Foreground")
            while kube.get(ref) is not None:
                time.sleep(s.poll_seconds)
        kube.apply(job, field_manager=s.field_manager)  # a retried create is a no-op (see tasks/models.py)
        deadline = time.monotonic() + 600
        while True:
            live = kube.get(ref) or {}
            if live and job_ready(live):
                break
            failure = live and job_failed(live)
            if failure or time.monotonic() > deadline:
                host.log_styled(f"4. purge: Job {ref.name} did not complete: {failure or 'timed out'}; "
                                "nothing else was deleted", fg="red", log_func=logger.error)
                return False
            time.sleep(s.poll_seconds)
        volume = ((kube.get(pvc) or {}).get("spec") or {}).get("volumeName")
        for gone in (ref, Ref("v1", "ConfigMap", RECORD, s.namespace), pvc):
            kube.delete(gone)
        logger.info(f"    {host_tag()}4. purge: deleted {s.asr_model_path}, {s.tts_model_path}, the record and {pvc}")
        return _volume_purged(ctx, volume) if volume else True

    yield k8s.python_command("4. purge", purge)


def _volume_purged(ctx, volume: str) -> bool:
    """The retained PV and its access point: nothing else would ever delete them, and each
    recreated claim would leave one more behind."""
    from qwen_speech import aws

    kube = ctx.kube
    pv_ref = Ref("v1", "PersistentVolume", volume)
    pv = kube.get(pv_ref)
    if pv is None:
        return True
    handle = ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle") or ""
    access_point = handle.partition("::")[2]
    kube.delete(pv_ref)
    logger.info(f"    {host_tag()}4. purge: deleted PersistentVolume {volume}")
    if not access_point.startswith("fsap-"):
        return True
    if ctx.aws is None:
        host.log_styled(f"4. purge: EFS access point {access_point} of {volume} is left: no AWS access "
                        "(set aws_region); delete it with aws efs delete-access-point", fg="yellow",
                        log_func=logger.warning)
        return True
    try:
        deleted = aws.delete_access_point(ctx.aws, access_point)
    except aws.AwsProblem as err:
        host.log_styled(f"4. purge: {err}", fg="red", log_func=logger.error)
        return False
    logger.info(f"    {host_tag()}4. purge: {'deleted' if deleted else 'already gone:'} EFS access point {access_point}")
    return True


@operation(is_idempotent=True)
def time_slicing_removed():
    """
    Give the device plugin DaemonSet back as it was installed and delete the time-slicing config.

    Applying an empty configuration under our field manager removes exactly the fields we added.
    """
    ctx = context_of(host)
    s, kube, plugin = ctx.settings, ctx.kube, ctx.device_plugin
    config = Ref("v1", "ConfigMap", s.time_slicing_config_name, plugin.namespace)
    ds = kube.get(Ref("apps/v1", "DaemonSet", plugin.name, plugin.namespace)) or {}
    ours = any(m.get("manager") == s.field_manager for m in ds.get("metadata", {}).get("managedFields") or [])
    if kube.get(config) is None and not ours:
        host.noop("no time-slicing config to remove")
        return

    def remove():
        kube.apply({"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": {"name": plugin.name, "namespace": plugin.namespace}},
                   field_manager=s.field_manager)
        kube.delete(config)
        logger.info(f"    {host_tag()}1. purge: device plugin {plugin.namespace}/{plugin.name} no longer reads "
                    f"{config}; GPU nodes go back to one nvidia.com/gpu per GPU")
        return True

    yield k8s.python_command("1. purge", remove)



