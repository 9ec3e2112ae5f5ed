"""Step 0 (the guide's 前置条件, prerequisites): everything the deploy needs, checked before any write.

Only reads. Every missing piece is reported together, by name, with what installs it; then the
run stops. What is found (the device plugin DaemonSet, GPU nodes, the EFS file system, the
image digests) is kept for the steps that use it. What deploys but may hurt later (a NodePool
that could pick a multi-GPU type, an image on a moving tag) is a warning line.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy

from kubeops.client import KubeApiError, KubeUnreachable
from qwen_speech import nodepool
from qwen_speech.manifests import moving_tag

from .context import DeployBlocked, DevicePlugin, context_of, host_tag
from .models import look_up_commits
from .permissions import check_rights

DEVICE_PLUGIN_IMAGE = "k8s-device-plugin"
EFS_CSI_DRIVER = "efs.csi.aws.com"
ALB_CONTROLLER = "ingress.k8s.aws/alb"


@deploy("0. Preflight: prerequisites")
def check_prerequisites():
    ctx = context_of(host)
    look_up_commits(ctx)  # step 4's question to the Hub, answered while the checks below wait for theirs
    check(ctx)


def check(ctx) -> None:
    """Read what the deploy needs; raise DeployBlocked listing everything missing."""
    s, kube = ctx.settings, ctx.kube
    missing: list[str] = []
    try:
        version = kube.request("GET", "/version")
    except KubeApiError as err:
        if err.status in (401, 403):
            raise DeployBlocked(f"{kube.describe} refused our credentials ({err.status} {err.reason}: {err.message}); "
                                "refresh them (aws sso login, or a new kubeconfig) and rerun") from None
        raise DeployBlocked(f"{kube.describe} answered /version with {err}") from None
    except KubeUnreachable as err:
        raise DeployBlocked(str(err)) from None
    logger.info(f"    {host_tag()}cluster {kube.host}, Kubernetes {version.get('gitVersion', '?')}")
    # Rights first: without them the reads below would fail one by one, and the writes halfway.
    lacking = check_rights(kube, s.namespace,
                           settings_on=frozenset({"manage_gpu_nodepool"} if s.manage_gpu_nodepool else ()))
    if lacking:
        raise DeployBlocked(lacking)

    selector = ",".join(f"{k}={v}" for k, v in sorted(s.gpu_node_selector.items()))
    ctx.gpu_nodes = kube.list("v1", "Node", label_selector=selector)
    if s.manage_gpu_nodepool:
        missing.extend(_check_managed_nodepool(ctx, selector))
    else:
        missing.extend(_check_nodepools(kube, s, selector, ctx.gpu_nodes))

    ctx.device_plugin = find_device_plugin(kube)
    if ctx.device_plugin is None and s.manage_gpu_nodepool and s.gpu_image_cache_snapshot_id:
        # The Bottlerocket EC2NodeClass step 0 applies brings the OS's own plugin, time-slicing in its user data.
        from .gpu_nodepool import NAME

        ctx.device_plugin = DevicePlugin("", NAME, "", owner="bottlerocket")
    if ctx.device_plugin is None:
        missing.append("NVIDIA device plugin: no GPU Operator ClusterPolicy, no DaemonSet runs an image with "
                       "'k8s-device-plugin', and no NodePool boots Bottlerocket; install it "
                       "(helm upgrade -i nvdp nvdp/nvidia-device-plugin -n nvidia-device-plugin --create-namespace, "
                       "or the static manifest deployments/static/nvidia-device-plugin.yml of NVIDIA/k8s-device-plugin)")
    else:
        logger.info(f"    {host_tag()}device plugin: {ctx.device_plugin.describe()} (time-slicing is configured there)")
    if not _exists(kube, "storage.k8s.io/v1", "CSIDriver", EFS_CSI_DRIVER):
        missing.append(f"EFS CSI driver: CSIDriver {EFS_CSI_DRIVER} not found; install the aws-efs-csi-driver add-on")
    ingress_class = kube.get(_ref("networking.k8s.io/v1", "IngressClass", "alb"))
    if ingress_class is None:
        missing.append("AWS Load Balancer Controller: IngressClass 'alb' not found; install the "
                       "aws-load-balancer-controller Helm chart (it creates the IngressClass)")
    elif (ingress_class.get("spec") or {}).get("controller") != ALB_CONTROLLER:
        missing.append(f"IngressClass 'alb' belongs to controller {ingress_class['spec'].get('controller')!r}, "
                       f"not {ALB_CONTROLLER!r}; the shared ALB needs the AWS Load Balancer Controller")

    missing.extend(_aws_prerequisites(ctx))
    for line in _moving_tags(ctx):
        logger.warning(f"    {line}")
    missing.extend(_storage_class_problems(ctx))
    if missing:
        raise DeployBlocked("prerequisites missing, nothing was changed:\n  - " + "\n  - ".join(missing))


@deploy("Find the device plugin")
def find_device_plugin_for_teardown():
    """Teardown needs only this of the preflight: where the time-slicing config went, and the
    pinned ASR image a purge Job runs (not Docker Hub's moving tag)."""
    ctx = context_of(host)
    ctx.device_plugin = find_device_plugin(ctx.kube)
    if ctx.aws is not None:
        problem = _resolve_asr_image(ctx)
        if problem:
            logger.warning(f"    {problem}; a purge Job would run asr_image {ctx.settings.asr_image!r}")


def find_device_plugin(kube) -> DevicePlugin | None:
    """Who owns the device plugin: the GPU Operator, a Helm release, a plain DaemonSet, or Bottlerocket.

    The image also carries config-manager and gpu-feature-discovery, so the plugin container is
    the one of that image whose command is neither.
    """
    policies = _list_optional(kube, "nvidia.com/v1", "ClusterPolicy")
    if policies:
        policy = policies[0]
        namespace = ((policy.get("status") or {}).get("namespace")) or "gpu-operator"
        return DevicePlugin(namespace, policy["metadata"]["name"], "nvidia-device-plugin", owner="gpu-operator")
    for ds in kube.list("apps/v1", "DaemonSet"):
        spec = ds["spec"]["template"]["spec"]
        plugin = next((c for c in spec.get("containers") or [] if _plugin_role(c) == "plugin"), None)
        if plugin is None:
            continue
        meta = ds["metadata"]
        found = DevicePlugin(meta["namespace"], meta["name"], plugin["name"])
        configs = next((v["configMap"]["name"] for v in spec.get("volumes") or []
                        if v.get("name") == "available-configs" and v.get("configMap")), None)
        helm = (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "Helm"
        if helm and configs and any(_plugin_role(c) == "config-manager" for c in spec.get("containers") or []):
            found.owner, found.config_map = "helm", configs
        return found
    for pool in _list_optional(kube, "karpenter.sh/v1", "NodePool"):
        ref = (((pool.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeClassRef") or {}
        nodeclass = kube.get(_ref("karpenter.k8s.aws/v1", "EC2NodeClass", ref.get("name", ""))) if ref.get("name") else None
        if nodeclass is not None and _bottlerocket(nodeclass):
            return DevicePlugin("", nodeclass["metadata"]["name"], "", owner="bottlerocket")
    return None


def _plugin_role(container: dict) -> str | None:
    if DEVICE_PLUGIN_IMAGE not in container.get("image", ""):
        return None
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    program = str(argv[0]).rsplit("/", 1)[-1] if argv else ""
    return {"config-manager": "config-manager", "gpu-feature-discovery": "feature-discovery"}.get(program, "plugin")


def _bottlerocket(nodeclass: dict) -> bool:
    spec = nodeclass.get("spec") or {}
    return spec.get("amiFamily") == "Bottlerocket" or any(
        str(t.get("alias", "")).startswith("bottlerocket@") for t in spec.get("amiSelectorTerms") or [])


def _list_optional(kube, api_version: str, kind: str) -> list[dict]:
    """Objects of a custom kind; none when its CRD is not installed."""
    try:
        return kube.list(api_version, kind)
    except KubeApiError as err:
        if err.status == 404:
            return []
        raise


def _check_managed_nodepool(ctx, selector: str) -> list[str]:
    """With manage_gpu_nodepool: Karpenter is installed, and the pool we would apply makes the node the pods need."""
    from .gpu_nodepool import NAME, desired

    try:
        ctx.kube.list("karpenter.sh/v1", "NodePool")
    except KubeApiError as err:
        if err.status != 404:
            raise
        return ["manage_gpu_nodepool = True: the cluster has no karpenter.sh/v1 NodePool API, so Karpenter v1 is not "
                "installed; install it (karpenter.sh, \"Getting Started\"), or set manage_gpu_nodepool: false and "
                "give the GPU nodes another way (a NodePool of your own, a managed node group)"]
    pool = next(m for m in desired(ctx) if m["kind"] == "NodePool")
    verdict = nodepool.check_pool(pool, ctx.settings.gpu_node_selector, ctx.settings.gpu_tolerations)
    if verdict.fits:
        logger.info(f"    {host_tag()}NodePool {NAME} (managed here) will make the GPU nodes ({verdict.t4_types[0]}, Spot)")
    return [f"GPU capacity: {problem} (manage_gpu_nodepool builds it from gpu_node_selector and gpu_tolerations)"
            for problem in verdict.problems]


def _check_nodepools(kube, s, selector: str, gpu_nodes: list[dict]) -> list[str]:
    """Some NodePool must be able to make a T4 node for the serving pods, unless GPU nodes are
    there already (a managed node group needs no Karpenter): then what is found is only said.
    And serving_nodes GPU nodes must be possible: the nodes there are, plus what the pools'
    nvidia.com/gpu limits still let Karpenter launch."""
    have_nodes = bool(gpu_nodes)
    pools = _list_optional(kube, "karpenter.sh/v1", "NodePool")
    too_few = _serving_nodes_problem(s, pools, gpu_nodes)
    if too_few:
        return [too_few]
    if not pools:
        if have_nodes:
            return []
        return [f"GPU capacity: no node matches {selector} and there is no Karpenter NodePool; create a Karpenter "
                "NodePool offering T4 instances (g4dn.xlarge, the guide's step 0) or a GPU managed node group"]
    verdicts = [nodepool.check_pool(p, s.gpu_node_selector, s.gpu_tolerations) for p in pools]
    fitting = [v for v in verdicts if v.fits]
    for v in fitting:
        more = f" and {len(v.t4_types) - 1} more T4 types" if len(v.t4_types) > 1 else ""
        logger.info(f"    NodePool {v.name} can make a GPU node for the serving pods ({v.t4_types[0]}{more})")
        if v.multi_gpu:
            logger.warning(f"    {v.multi_gpu}")
    if fitting:
        return []
    problems = [p for v in verdicts for p in v.problems]
    if have_nodes:
        for problem in problems:
            logger.info(f"    (GPU nodes are there, so only a replacement would need it) {problem}")
        return []
    return [f"GPU capacity: no node matches {selector} and no Karpenter NodePool can make one for the serving pods"] + [
        f"GPU capacity: {problem}" for problem in problems]


def _serving_nodes_problem(s, pools: list[dict], gpu_nodes: list[dict]) -> str | None:
    """serving_nodes needs that many GPU nodes; a NodePool's limits cap how many Karpenter makes
    (it counts the instances' physical GPUs against spec.limits, kubernetes-sigs/karpenter
    pkg/controllers/provisioning/scheduling/scheduler.go, "exceeds limits")."""
    if s.serving_nodes <= len(gpu_nodes):
        return None
    fitting = [p for p in pools if nodepool.check_pool(p, s.gpu_node_selector, s.gpu_tolerations).fits]
    if not fitting or any(nodepool.gpu_limit(p) is None for p in fitting):
        return None  # no pool that fits (the checks below say so when it matters), or one without a GPU limit
    pooled = {p["metadata"]["name"] for p in fitting}
    outside = [n for n in gpu_nodes if (n["metadata"].get("labels") or {}).get(nodepool.NODEPOOL_LABEL) not in pooled]
    possible = len(outside) + sum(nodepool.gpu_limit(p) // s.gpu_node_gpus for p in fitting)
    if possible >= s.serving_nodes:
        return None
    limits = ", ".join(f"NodePool {p['metadata']['name']} spec.limits nvidia.com/gpu = {nodepool.gpu_limit(p)}"
                       for p in fitting)
    return (f"serving_nodes = {s.serving_nodes}: at most {possible} GPU node(s) of gpu_node_gpus {s.gpu_node_gpus} "
            f"can run ({limits}, {len(outside)} GPU node(s) outside the pools); raise the NodePool's "
            f"nvidia.com/gpu limit to {s.serving_nodes * s.gpu_node_gpus}, or set serving_nodes to at most {possible}")


def _moving_tags(ctx) -> list[str]:
    """One line per image on a moving tag, naming the setting that pins it."""
    s = ctx.settings
    images = [(ctx.asr_image or s.asr_image, "asr_image", "set asr_ecr_repository (an ECR repository or an ECR "
               "pull-through cache for Docker Hub) or asr_image to <image>@sha256:<digest>"),
              (ctx.tts_image, "tts_image", "set tts_image to <image>@sha256:<digest>, or to None to pin it from "
               "tts_ecr_repository")]
    if s.seed_image:
        images.append((s.seed_image, "seed_image", "set seed_image to <image>@sha256:<digest>, or to None (the TTS image)"))
    return [f"{key} {image!r} is a moving tag (pulled at every start, and may change under us); {fix}"
            for image, key, fix in images if image and moving_tag(image)]


def _ref(api_version, kind, name, namespace=None):
    from kubeops.kinds import Ref

    return Ref(api_version, kind, name, namespace)


def _exists(kube, api_version, kind, name) -> bool:
    return kube.get(_ref(api_version, kind, name)) is not None


def _resolve_asr_image(ctx) -> str | None:
    """Pin the ASR image to the digest asr_image_tag has in asr_ecr_repository (when set); the problem, if any."""
    s = ctx.settings
    if not s.asr_ecr_repository:
        return None
    from qwen_speech import aws

    try:
        ctx.asr_image = aws.resolve_ecr_image(ctx.aws, s.asr_ecr_repository, s.asr_image_tag,
                                              push_fix=aws.ASR_PUSH_FIX).uri_with_digest
    except aws.AwsProblem as err:
        return f"ASR image (asr_ecr_repository): {err}"
    return None


def resolve_images(ctx) -> list[str]:
    """Pin the TTS and ASR images as the pods will run them (ctx.tts_image, ctx.asr_image); the problems."""
    from qwen_speech import aws

    s = ctx.settings
    ctx.tts_image = s.tts_image
    ctx.asr_image = s.asr_image
    problems = []
    if not s.tts_image:
        try:
            ctx.tts_image = aws.resolve_ecr_image(ctx.aws, s.tts_ecr_repository, s.tts_image_tag).uri_with_digest
        except aws.AwsProblem as err:
            problems.append(f"TTS image: {err}")
    problem = _resolve_asr_image(ctx)
    if problem:
        problems.append(problem)
    return problems


def _image_cache_problems(ctx) -> list[str]:
    """The image-cache snapshot exists and is completed; a snapshot without the images the pods run is said."""
    from qwen_speech import aws, image_cache

    snapshot_id = ctx.settings.gpu_image_cache_snapshot_id
    try:
        snapshot = image_cache.describe_snapshot(ctx.aws, snapshot_id)
    except aws.AwsProblem as err:
        return [f"gpu_image_cache_snapshot_id = {snapshot_id!r}: {err}"]
    problem = image_cache.snapshot_problem(snapshot, snapshot_id, ctx.aws.region)
    if problem:
        return [problem]
    ctx.image_cache = snapshot  # step 4 seeds from the nodes' disk what it holds
    for line in image_cache.stale_images(snapshot, {"asr": ctx.asr_image, "tts": ctx.tts_image}):
        logger.warning(f"    {host_tag()}{line}")
    logger.info(f"    {host_tag()}image cache {snapshot_id}: new GPU nodes boot with "
                + ", ".join(f"{k} {v}" for k, v in sorted(snapshot.images.items()))
                + "".join(f", {k} model {v}" for k, v in sorted(snapshot.models.items())))
    return []


def _storage_class_problems(ctx) -> list[str]:
    """A live StorageClass that differs in fields the API server will not update: replaced only
    when replace_storage_class says so (its claims' data stays; new claims get the new class)."""
    from .efs_storage import storage_class_changes

    s = ctx.settings
    try:
        ctx.storage_class_changes = storage_class_changes(ctx)
    except DeployBlocked:
        return []  # no file system id: said by the EFS check already
    if not ctx.storage_class_changes:
        return []
    what = "; ".join(ctx.storage_class_changes)
    if s.replace_storage_class:
        logger.info(f"    StorageClass {s.efs_storage_class} differs ({what}): it will be replaced "
                    "(replace_storage_class: true)")
        return []
    return [f"StorageClass {s.efs_storage_class}: the live class differs from the wanted one ({what}) and "
            "StorageClass parameters cannot be updated; rerun with --data replace_storage_class=true to delete "
            "and recreate it (bound PVs and their data keep working), or set the old values in the inventory"]


def _aws_prerequisites(ctx) -> list[str]:
    """EFS file system and TTS image: found through AWS unless the inventory names them."""
    s = ctx.settings
    problems: list[str] = []
    ctx.file_system_id = s.efs_file_system_id
    ctx.efs_action = "given" if s.efs_file_system_id else None
    ctx.tts_image = s.tts_image
    ctx.asr_image = s.asr_image
    if ctx.aws is None:
        return problems
    from qwen_speech import aws

    try:
        efs = aws.resolve_efs(ctx.aws, file_system_id=s.efs_file_system_id, name_tag=s.efs_name_tag,
                              create=s.efs_create, cluster_name=s.eks_cluster_name or s.environment, dry_run=True)
        ctx.file_system_id = efs.file_system_id
        ctx.efs_action = efs.action
        if efs.action == "would-create":
            ctx.notes.append(f"EFS: no file system tagged Name={s.efs_name_tag}; it will be created")
    except aws.AwsProblem as err:
        problems.append(str(err) if str(err).startswith("EFS:") else f"EFS: {err}")  # said once
    problems.extend(resolve_images(ctx))
    if s.gpu_image_cache_snapshot_id:
        problems.extend(_image_cache_problems(ctx))
    if s.ingress_certificate_arn:
        try:
            aws.check_certificate(ctx.aws, s.ingress_certificate_arn, [s.ingress_asr_host, s.ingress_tts_host])
        except aws.AwsProblem as err:
            problems.append(f"ALB certificate: {err}")
    if s.karpenter_interruption_queue:
        try:
            if not aws.check_interruption_queue(ctx.aws, s.karpenter_interruption_queue):
                logger.warning(f"    {host_tag()}Karpenter interruption queue {s.karpenter_interruption_queue!r} "
                               "not found: Spot interruptions will come without the 2-minute drain")
        except aws.AwsProblem as err:
            problems.append(f"Karpenter interruption queue: {err}")
    return problems
