"""Inventory data for the Qwen3 speech playbook: one schema, checked before the first API call.

Every value the guide hard-codes is a key here; the guide's value is the default and lives in
`inventories/group_data/all.py`. Keys are flat (`asr_max_model_len`, not `asr: {max_model_len}`)
because pyinfra replaces nested dicts wholesale when it merges group and host data, and because
`--data asr_max_model_len=8192` should just work.

A bad value is reported with the key, the value and what would be right, all problems at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
# name[:tag][@sha256:digest], registry host optional: the grammar of docker/distribution's reference.
IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
GROUP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
MODEL_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# git check-ref-format: no control characters, space, ~ ^ : ? * [ \, no "..", no "@{", no "//".
GIT_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")

# An EBS snapshot id (the EC2 API's form: snap- and 8 or 17 hex digits).
SNAPSHOT_ID = re.compile(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$")

# Kubernetes' own API limits (k8s.io/apimachinery: int32 fields such as progressDeadlineSeconds).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Namespaces a deploy must not take over: Kubernetes reserves the kube- prefix for its own
# (kube-system, kube-public, kube-node-lease), and `default` holds whatever else runs in the
# cluster; destroy.py removes everything of ours in the namespace and a purge the namespace's
# claim, so both belong in a namespace of their own.
SYSTEM_NAMESPACES = ("default",)
SYSTEM_NAMESPACE_PREFIX = "kube-"
# Directories a volume mount must neither be, nor sit inside, nor contain: mounting there would
# hide the image's own files. System directories of a Linux image (FHS), the scripts mount of
# every pod (/opt/qwen3-speech), the ASR image's WORKDIR (QwenLM/Qwen3-ASR
# docker/Dockerfile-qwen3-asr-cu128: /data/shared/Qwen3-ASR) and the TTS image's (groxaxo/
# Qwen3-TTS-Openai-Fastapi Dockerfile: /app, built in /build).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run",
               "/sbin", "/sys", "/tmp", "/usr", "/var")
IMAGE_DIRS = ("/opt/qwen3-speech", "/data/shared/Qwen3-ASR", "/app", "/build")
# Qwen3-ASR's text decoder context (QwenLM/Qwen3-ASR qwen_asr/core/transformers_backend/
# configuration_qwen3_asr.py, Qwen3ASRTextConfig max_position_embeddings=128000): vLLM refuses a
# --max-model-len above the model's max_position_embeddings.
ASR_MAX_CONTEXT = 128000
# The NVIDIA device plugin has no upper bound for replicas (api/config/v1/replicas.go only checks
# the lower one), but each replica is one more process with its own CUDA context on the same
# GPU; beyond this no pod could hold a model, so a larger value is a typo.
MAX_TIME_SLICING_REPLICAS = 32
# EC2's per-region GPU quotas make thousands of GPU nodes for one service a typo (a NodePool's
# nvidia.com/gpu limit, when there is one, is checked by preflight); with tts_per_node at most 32
# the TTS Deployment's replicas stay far inside Kubernetes' int32.
MAX_SERVING_NODES = 1000
# The EFS API's rule for an access point's root directory (botocore data/efs/2015-02-01 shape
# Path: at most 100 characters, at most four directories, none starting with '.').
EFS_AP_PATH = re.compile(r"^(/|(/(?!\.)+[^$#<>;`|&?{}^*/\n]+){1,4})$")
EFS_AP_PATH_MAX = 100


class SettingsError(Exception):
    """Inventory data that cannot be deployed; the message lists every problem."""


# ---------------------------------------------------------------------------------------------
# Checkers: each returns None when the value is fine, else what would be right.

Checker = Callable[[Any], "str | None"]


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def _optional(check: Checker) -> Checker:
    def optional_check(v: Any) -> str | None:
        if v is None:
            return None
        problem = check(v)
        return None if problem is None else f"{problem}, or None"
    return optional_check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _positive_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 0 < v <= INT32_MAX
    return None if ok else f"a positive integer (at most {INT32_MAX}, Kubernetes' int32)"


def _port(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535
    return None if ok else "a port number from 1 to 65535"


def _fraction(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "a number between 0 and 1, both excluded (the guide uses 0.45)"


def _dns_label(v: Any) -> str | None:
    ok = isinstance(v, str) and len(v) <= 63 and DNS_LABEL.match(v)
    return None if ok else "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumeric"


def _dns_subdomain(v: Any) -> str | None:
    ok = isinstance(v, str) and len(v) <= 253 and DNS_SUBDOMAIN.match(v)
    return None if ok else "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 characters"


def _quantity(v: Any) -> str | None:
    ok = isinstance(v, (str, int)) and not isinstance(v, bool) and QUANTITY.match(str(v))
    return None if ok else "a Kubernetes quantity such as \"1\", \"500m\" or \"6Gi\""


def _image(v: Any) -> str | None:
    ok = isinstance(v, str) and IMAGE_REF.match(v)
    return None if ok else "an image reference such as \"qwenllm/qwen3-asr:latest\" or \"repo@sha256:<64 hex>\""


def _repo_id(v: Any) -> str | None:
    ok = isinstance(v, str) and HF_REPO_ID.match(v)
    return None if ok else "a Hugging Face repo id \"owner/name\", e.g. \"Qwen/Qwen3-ASR-1.7B\""


def _model_dir(v: Any) -> str | None:
    ok = isinstance(v, str) and MODEL_DIR.match(v)
    return None if ok else "a directory name under the models mount, without '/' (e.g. \"Qwen3-ASR-1.7B\")"


def _one_of(*allowed: str) -> Checker:
    def check(v: Any) -> str | None:
        return None if v in allowed else "one of " + ", ".join(repr(a) for a in allowed)
    return check


def _string_map(v: Any) -> str | None:
    ok = isinstance(v, dict) and v and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
    return None if ok else "a non-empty mapping of strings, e.g. {\"node-type\": \"gpu\"}"


def _node_selector(v: Any) -> str | None:
    """A nodeSelector that may be empty (any node whose taints the pod tolerates)."""
    ok = isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
    return None if ok else "a mapping of strings, e.g. {\"node-type\": \"system\"}, or {} for any node without a taint"


def _toleration_ok(t: Any) -> bool:
    if not isinstance(t, dict) or not set(t) <= {"key", "operator", "value", "effect", "tolerationSeconds"}:
        return False
    seconds = t.get("tolerationSeconds")
    return (all(isinstance(t.get(k, ""), str) for k in ("key", "value"))
            and t.get("operator", "Equal") in ("Exists", "Equal")
            and t.get("effect", "") in ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
            and (seconds is None or isinstance(seconds, int) and not isinstance(seconds, bool)
                 and -INT64_MAX - 1 <= seconds <= INT64_MAX))


def _tolerations(v: Any) -> str | None:
    ok = isinstance(v, list) and all(_toleration_ok(t) for t in v)
    return None if ok else ("a list of Kubernetes tolerations: key and value strings, operator Exists or Equal, "
                            "effect NoSchedule, PreferNoSchedule or NoExecute, tolerationSeconds an integer")


def _string_list(v: Any) -> str | None:
    return None if isinstance(v, list) and all(isinstance(x, str) for x in v) else "a list of strings"


def _group_name(v: Any) -> str | None:
    ok = isinstance(v, str) and GROUP_NAME.match(v)
    return None if ok else "lowercase letters, digits, '-' and '.', at most 63 characters (an ALB IngressGroup name)"


# Bounded numbers: every numeric key has a range, because a value outside what Kubernetes or the
# servers accept is written and fails later (an int32 field), or hangs a run (poll_seconds=inf).

def _int_range(low: int, high: int, why: str = "") -> Checker:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        return None if ok else f"an integer from {low} to {high}" + (f" ({why})" if why else "")
    return check


def _number_in(low: float, high: float, why: str = "", low_open: bool = False) -> Checker:
    def check(v: Any) -> str | None:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (low < v if low_open else low <= v) and v <= high)
        lower = f"above {low}" if low_open else f"from {low}"
        return None if ok else f"a finite number {lower} to {high}{' (' + why + ')' if why else ''}"
    return check


def _seconds(high: int = 7 * 24 * 3600) -> Checker:
    return _int_range(1, high, "seconds; a week at most" if high == 7 * 24 * 3600 else "seconds")


# Names and paths, by the rule of whatever they end up in.

def _namespace(v: Any) -> str | None:
    problem = _dns_label(v)
    if problem:
        return problem
    if v in SYSTEM_NAMESPACES or v.startswith(SYSTEM_NAMESPACE_PREFIX):
        return (f"a namespace of this deploy's own, not {v!r}: Kubernetes reserves the {SYSTEM_NAMESPACE_PREFIX} prefix "
                "and 'default' is shared with everything else in the cluster (the guide uses \"hosthree\")")
    return None


def _abs_path(v: Any) -> str | None:
    if not isinstance(v, str) or not v.startswith("/") or "\n" in v or "\x00" in v:
        return "an absolute path such as \"/models\""
    parts = v.split("/")[1:]
    if v != "/" and (v.endswith("/") or "" in parts or "." in parts or ".." in parts):
        clean = posixpath.normpath(v)
        return f"a normalised absolute path without '.', '..', '//' or a trailing '/' (e.g. {clean!r})"
    return None


def _overlaps(path: str, reserved: tuple[str, ...]) -> str | None:
    """The reserved directory that `path` is, is inside of, or would hide by containing it."""
    for r in reserved:
        if path == r or path.startswith(r + "/") or r.startswith(path.rstrip("/") + "/"):
            return r
    return None


def _mount_dir(v: Any) -> str | None:
    """A directory to mount a volume at in the pods: clean, and hiding none of the image's files."""
    problem = _abs_path(v)
    if problem:
        return problem
    clash = _overlaps(v, SYSTEM_DIRS + IMAGE_DIRS)
    if clash:
        return (f"a directory of its own such as \"/models\": {v} {'is' if v == clash else 'overlaps'} {clash}, "
                "which the mount would hide in the containers")
    return None


def _config_file_path(v: Any) -> str | None:
    """The device plugin's config file: its directory becomes the ConfigMap's mount."""
    problem = _abs_path(v)
    if problem or v == "/":
        return problem or "an absolute file path such as \"/config/config.yaml\""
    directory, name = posixpath.split(v)
    if not CONFIG_MAP_KEY.match(name):
        return f"a file name of letters, digits, '-', '_' and '.' (a ConfigMap key), not {name!r}"
    clash = _overlaps(directory, SYSTEM_DIRS) if directory != "/" else "/"
    if clash:
        return (f"a file in a directory of its own such as \"/config/config.yaml\": the ConfigMap is mounted at "
                f"{directory}, which would hide {clash} in the device plugin's container")
    return None


def _efs_base_path(v: Any) -> str | None:
    """Where the access points live inside the EFS file system: it cannot leave the root."""
    problem = _abs_path(v)
    if problem:
        return problem + " inside the file system, e.g. \"/qwen3-speech\""
    return None


def _git_revision(v: Any) -> str | None:
    ok = (isinstance(v, str) and v and len(v) <= 255 and not GIT_REF_BAD.search(v) and not v.startswith(("-", "/", "."))
          and not v.endswith(("/", ".", ".lock")))
    return None if ok else ("a branch, tag or 40-hex commit (git ref rules: no spaces, newlines, '..', '~', '^', ':', "
                            "'?', '*', '[' or '\\'), e.g. \"main\" or \"7278e1e70fe206f11671096ffdd38061171dd6e5\"")


def _cidr_list(v: Any) -> str | None:
    """The ALB controller's inbound-cidrs annotation: comma-separated IPv4/IPv6 networks."""
    if not isinstance(v, str) or not v.strip():
        return "comma-separated CIDRs such as \"10.0.0.0/8, 203.0.113.0/24\""
    for item in (part.strip() for part in v.split(",")):
        try:
            ipaddress.ip_network(item, strict=True)
        except ValueError as err:
            hint = ""
            try:
                hint = f" (did you mean {ipaddress.ip_network(item, strict=False)}?)"
            except ValueError:
                pass
            return f"comma-separated CIDRs such as \"203.0.113.0/24\"; {item!r} is not one: {err}{hint}"
    return None


# arn:aws:acm:<region>:<account>:certificate/<id> (ACM's ARN form; the partition may be aws-cn, aws-us-gov).
ACM_ARN = re.compile(r"^arn:aws(-[a-z]+)*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9A-Za-z-]+$")


def _snapshot_id(v: Any) -> str | None:
    ok = isinstance(v, str) and SNAPSHOT_ID.match(v)
    return None if ok else ("an EBS snapshot id, snap- and 17 hex digits (e.g. \"snap-0123456789abcdef0\"), as "
                            "`python -m qwen_speech image-cache build INVENTORY` prints it")


def _acm_arn(v: Any) -> str | None:
    ok = isinstance(v, str) and ACM_ARN.match(v)
    return None if ok else "an ACM certificate ARN, arn:aws:acm:REGION:ACCOUNT:certificate/ID"


def _host_name(v: Any) -> str | None:
    """A host an Ingress rule may name: a DNS subdomain, no wildcard (the rule routes one service)."""
    return _dns_subdomain(v) and "a DNS name such as \"asr.example.com\" (lowercase, no wildcard)"


# ---------------------------------------------------------------------------------------------
# The schema: key -> checker. Defaults are in inventories/group_data/all.py.

SCHEMA: dict[str, Checker] = {
    # Where the cluster is
    "environment": _dns_label,
    "kubeconfig": _optional(_string),
    "kube_context": _optional(_string),
    "eks_cluster_name": _optional(_string),
    "aws_region": _optional(_string),
    "aws_profile": _optional(_string),
    "aws_role_arn": _optional(_string),
    "aws_endpoint_url": _optional(_string),
    "eks_token_refresh_seconds": _number_in(1, 840, "seconds; EKS accepts a token for 15 minutes, refresh before"),
    "field_manager": _dns_subdomain,
    "poll_seconds": _number_in(0.01, 60, "seconds between polls of a wait", low_open=False),
    "progress_interval_seconds": _number_in(0.01, 3600, "seconds between a wait's progress lines", low_open=False),
    "stall_seconds": _number_in(1, 86400, "seconds without a downloaded byte before seeding says stalled"),
    # Riding out faults and sharing the cluster (kubeops/retry.py, tasks/lock.py)
    "api_retry_seconds": _number_in(0, 3600, "seconds of retrying transient API errors"),
    "timeout_verify": _int_range(1, 604800, "seconds; a week at most"),
    "deploy_lock_seconds": _int_range(5, 3600, "seconds a deploy lock lives unless renewed"),
    "deploy_lock_wait_seconds": _number_in(0, 86400, "seconds to wait for another deploy's lock"),
    # Serving nodes: how many GPU nodes serve, and TTS pods per node (files/qwen3-*-deployment.yaml)
    "serving_nodes": _int_range(1, MAX_SERVING_NODES, "GPU nodes with one ASR and tts_per_node TTS pods each"),
    "tts_per_node": _int_range(1, MAX_TIME_SLICING_REPLICAS, "TTS pods beside each ASR pod"),
    # Step 1: time-slicing
    "time_slicing_replicas": _int_range(1, MAX_TIME_SLICING_REPLICAS, "processes sharing one GPU"),
    "time_slicing_config_name": _dns_subdomain,
    "time_slicing_config_path": _config_file_path,
    "gpu_node_selector": _string_map,
    "gpu_tolerations": _tolerations,
    "gpu_node_gpus": _int_range(1, 16, "physical GPUs per GPU node; g4dn.xlarge has 1 T4"),
    "gpu_memory_total_gib": _number_in(0, 1024, "memory of one GPU; a T4 shows 15 GiB", low_open=True),
    # Step 0: the GPU NodePool and EC2NodeClass, when the playbook manages them (tasks/gpu_nodepool.py)
    "manage_gpu_nodepool": _boolean,
    "gpu_image_cache_snapshot_id": _optional(_snapshot_id),
    # Step 2: namespace
    "namespace": _namespace,
    # Step 3: EFS
    "efs_storage_class": _dns_subdomain,
    "efs_file_system_id": _optional(_string),
    "efs_name_tag": _optional(_string),
    "efs_create": _boolean,
    "efs_base_path": _efs_base_path,
    "models_pvc": _dns_subdomain,
    "models_pvc_size": _quantity,
    "efs_posix_uid": _optional(_int_range(0, 4294967295, "EFS access point PosixUser.Uid")),
    "efs_posix_gid": _optional(_int_range(0, 4294967295, "EFS access point PosixUser.Gid")),
    "replace_storage_class": _boolean,
    "models_mount_path": _mount_dir,
    # Step 4: models
    "hf_endpoint": _optional(_string),
    "hf_token_secret": _optional(_dns_subdomain),
    "seed_image": _optional(_image),
    "seed_workers": _int_range(1, 64, "parallel downloads per model"),
    "seed_active_deadline_seconds": _seconds(),
    "seed_node_selector": _node_selector,
    "seed_tolerations": _tolerations,
    "model_guard_wait_seconds": _seconds(),
    "asr_model_repo": _repo_id,
    "asr_model_revision": _git_revision,
    "asr_model_dir": _model_dir,
    "tts_model_repo": _repo_id,
    "tts_model_revision": _git_revision,
    "tts_model_dir": _model_dir,
    "model_upgrade_policy": _one_of("pinned", "follow"),
    # Step 5: ASR
    "api_key_secret": _optional(_dns_subdomain),
    "asr_image": _image,
    "asr_ecr_repository": _optional(_string),
    "asr_image_tag": _string,
    "asr_port": _port,
    "asr_gpu_memory_utilization": _fraction,
    "asr_max_model_len": _int_range(1, ASR_MAX_CONTEXT, "tokens; Qwen3-ASR's max_position_embeddings"),
    "asr_extra_args": _string_list,
    "asr_cpu": _quantity,
    "asr_memory": _quantity,
    "asr_gpus": _int_range(1, 16 * MAX_TIME_SLICING_REPLICAS, "nvidia.com/gpu slots; see gpu_node_gpus"),
    "asr_shm_size": _quantity,
    "asr_dtype": _one_of("auto", "half", "float16", "bfloat16", "float", "float32"),
    "asr_served_model_aliases": _string_list,
    "asr_max_audio_filesize_mb": _positive_int,  # vLLM reads it with int() (envs.py)
    # Step 6: TTS
    "tts_image": _optional(_image),
    "tts_ecr_repository": _optional(_string),
    "tts_image_tag": _string,
    "tts_port": _port,
    "tts_backend": _one_of("official", "vllm_omni", "pytorch", "openvino"),
    "tts_dtype": _optional(_one_of("bfloat16", "float16", "float32")),
    "tts_cpu": _quantity,
    "tts_memory": _quantity,
    "tts_gpus": _int_range(1, 16 * MAX_TIME_SLICING_REPLICAS, "nvidia.com/gpu slots; see gpu_node_gpus"),
    "tts_gpu_memory_gib": _number_in(0, 1024, "what the loaded TTS model holds on the GPU", low_open=True),
    # Step 5: metrics (a ServiceMonitor when the Prometheus Operator is installed)
    "metrics_monitor_labels": _string_map,
    "metrics_scrape_interval_seconds": _int_range(1, 3600),
    # Step 7: ingress
    "ingress_group": _group_name,
    "ingress_scheme": _one_of("internal", "internet-facing"),
    "ingress_inbound_cidrs": _optional(_cidr_list),
    "ingress_allow_all_sources": _boolean,
    "alb_source_cidrs": _cidr_list,
    "ingress_idle_timeout_seconds": _int_range(1, 4000),
    "ingress_deregistration_delay_seconds": _int_range(20, 3600, "also the serving pods' grace period: their "
                                                       "15 s preStop sleep, then time to finish requests"),
    "backend_keep_alive_seconds": _positive_int,
    "ingress_listener_urls_file": _optional(_string),
    "ingress_certificate_arn": _optional(_acm_arn),
    "ingress_asr_host": _optional(_host_name),
    "ingress_tts_host": _optional(_host_name),
    # The order of steps 4-7: side by side, or one after the other as the guide has them
    "deploy_order": _one_of("overlapped", "guide"),
    # Timeouts, seconds
    "timeout_time_slicing": _seconds(),
    "timeout_pvc_bound": _seconds(),
    "timeout_seed": _seconds(),
    "timeout_asr_ready": _seconds(),
    "timeout_tts_ready": _seconds(),
    "timeout_ingress": _seconds(),
    "progress_deadline_seconds": _int_range(1, INT32_MAX, "seconds; Deployment.spec.progressDeadlineSeconds is an int32"),
    "unschedulable_grace_seconds": _number_in(0, 24 * 3600, "seconds"),
    # Verify, status, teardown
    "verify_max_cer": _number_in(0, 1, "a character error rate"),
    "verify_long_request": _boolean,
    "karpenter_interruption_queue": _optional(_string),
    "karpenter_do_not_disrupt": _boolean,
    "purge_models": _boolean,
    "purge_time_slicing": _boolean,
}

# Keys pyinfra itself puts into host data; they are not ours to check.
PYINFRA_KEY = re.compile(r"^(_|ssh_|local_|docker_|chroot_|winrm_|terraform_)")


@dataclass(frozen=True)
class Settings:
    """The validated inventory: attribute access by key name (settings.asr_max_model_len)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def asr_model_path(self) -> str:
        return f"{self.models_mount_path}/{self.asr_model_dir}"

    @property
    def tts_model_path(self) -> str:
        return f"{self.models_mount_path}/{self.tts_model_dir}"

    @property
    def uses_eks(self) -> bool:
        """Connect through EKS by cluster name; a kubeconfig, when given, wins (the cluster name
        is then still used to find the cluster's AWS resources)."""
        return bool(self.eks_cluster_name) and not self.kubeconfig


def validate(data: Mapping[str, Any]) -> Settings:
    """Check inventory data against the schema; raise SettingsError listing every problem."""
    problems: list[str] = []
    ours = {k: v for k, v in data.items() if not PYINFRA_KEY.match(k)}
    for key in sorted(set(ours) - set(SCHEMA)):
        close = difflib.get_close_matches(key, SCHEMA, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        problems.append(f"{key}: unknown key{hint}; remove it or fix its spelling")
    for key, check in SCHEMA.items():
        if key not in ours:
            problems.append(f"{key}: missing; it has a default in inventories/group_data/all.py, "
                            "so this inventory probably does not load that file")
            continue
        problem = check(ours[key])
        if problem:
            problems.append(f"{key} = {ours[key]!r}: must be {problem}")
    if not problems:
        problems.extend(_cross_checks(ours))
    if problems:
        raise SettingsError("inventory data is not valid:\n  - " + "\n  - ".join(problems))
    return Settings(dict(ours))


def _cross_checks(d: Mapping[str, Any]) -> list[str]:
    problems = []
    if not d["kubeconfig"] and not d["eks_cluster_name"]:
        problems.append("kubeconfig / eks_cluster_name: both empty; set eks_cluster_name (with aws_region) "
                        "or kubeconfig (with kube_context) so the playbook knows which cluster to use")
    if d["eks_cluster_name"] and not d["aws_region"]:
        problems.append(f"aws_region = None: eks_cluster_name = {d['eks_cluster_name']!r} needs the cluster's region, e.g. \"us-west-2\"")
    needs_aws = not d["efs_file_system_id"] or not d["tts_image"] or d["asr_ecr_repository"]
    if needs_aws and not d["aws_region"]:
        problems.append("aws_region = None: the EFS file system (efs_file_system_id), the TTS image (tts_image) or "
                        "the ASR image (asr_ecr_repository) is looked up in AWS, which needs a region; set aws_region, "
                        "or give efs_file_system_id and tts_image directly and leave asr_ecr_repository None")
    if not d["efs_file_system_id"] and not d["efs_name_tag"]:
        problems.append("efs_file_system_id / efs_name_tag: both empty; name the EFS file system by id (fs-...) or by its Name tag")
    if not d["tts_image"] and not d["tts_ecr_repository"]:
        problems.append("tts_image / tts_ecr_repository: both empty; give the TTS image reference, or the ECR repository "
                        "(with tts_image_tag) the playbook resolves to a digest")
    if d["gpu_image_cache_snapshot_id"] and not d["manage_gpu_nodepool"]:
        problems.append(f"gpu_image_cache_snapshot_id = {d['gpu_image_cache_snapshot_id']!r}: the snapshot reaches new "
                        "GPU nodes through the EC2NodeClass the playbook manages; set manage_gpu_nodepool: true, "
                        "or put the snapshot in your own EC2NodeClass (README, \"Image cache\") and unset this key")
    if d["manage_gpu_nodepool"] and not d["eks_cluster_name"]:
        problems.append("eks_cluster_name = None: manage_gpu_nodepool makes an EC2NodeClass that finds the cluster's "
                        "subnets and security groups by the tag karpenter.sh/discovery=<cluster name> and uses the "
                        "node role KarpenterNodeRole-<cluster name>; set eks_cluster_name")
    if d["gpu_image_cache_snapshot_id"] and not d["aws_region"]:
        problems.append(f"aws_region = None: gpu_image_cache_snapshot_id = {d['gpu_image_cache_snapshot_id']!r} is "
                        "checked in EC2 before the first write, which needs the cluster's region; set aws_region")
    if d["asr_model_dir"] == d["tts_model_dir"]:
        problems.append(f"asr_model_dir = tts_model_dir = {d['asr_model_dir']!r}: the two models need their own directories")
    if d["asr_port"] == d["tts_port"]:
        problems.append(f"asr_port = tts_port = {d['asr_port']}: the shared ALB needs one listener per service")
    if d["backend_keep_alive_seconds"] <= d["ingress_idle_timeout_seconds"]:
        problems.append(f"backend_keep_alive_seconds = {d['backend_keep_alive_seconds']}: must be above "
                        f"ingress_idle_timeout_seconds = {d['ingress_idle_timeout_seconds']}, or the servers close "
                        f"kept-alive connections the ALB still uses and it answers 502; e.g. "
                        f"{d['ingress_idle_timeout_seconds'] + 60}")
    slots = d["gpu_node_gpus"] * d["time_slicing_replicas"]
    slots_text = (f"a GPU node has {slots} nvidia.com/gpu slots (gpu_node_gpus {d['gpu_node_gpus']} x "
                  f"time_slicing_replicas {d['time_slicing_replicas']})")
    for key in ("asr_gpus", "tts_gpus"):
        if d[key] > slots:
            problems.append(f"{key} = {d[key]}: {slots_text}, so the pod could never be scheduled; ask for at most "
                            f"{slots}, or raise time_slicing_replicas")
    # Each serving node holds one ASR pod and tts_per_node TTS pods (the manifests' affinity and
    # spread): together they must fit in the node's slots, or the last TTS pods stay Pending.
    per_node = d["asr_gpus"] + d["tts_per_node"] * d["tts_gpus"]
    if per_node > slots and max(d["asr_gpus"], d["tts_gpus"]) <= slots:
        fit = (slots - d["asr_gpus"]) // d["tts_gpus"]
        lower = f"set tts_per_node to at most {fit}, or " if fit >= 1 else ""
        problems.append(f"tts_per_node = {d['tts_per_node']}: one ASR pod (asr_gpus {d['asr_gpus']}) and "
                        f"{d['tts_per_node']} TTS pod(s) (tts_gpus {d['tts_gpus']} each) ask for {per_node} slots on "
                        f"their node, but {slots_text}; {lower}raise time_slicing_replicas to "
                        f"{-(-per_node // d['gpu_node_gpus'])}")
    # vLLM takes asr_gpu_memory_utilization of the whole GPU (vllm v1/worker/gpu_worker.py); the
    # node's TTS pods share the same GPU, so they must fit in what is left or one of them fails to load.
    left = d["gpu_memory_total_gib"] * (1 - d["asr_gpu_memory_utilization"])
    tts_total = d["tts_per_node"] * d["tts_gpu_memory_gib"]
    if tts_total > left:
        pods = (f" x tts_per_node {d['tts_per_node']} = {tts_total:.2f} GiB" if d["tts_per_node"] > 1 else "")
        fits = int(left // d["tts_gpu_memory_gib"])
        fix = (f"set tts_per_node to at most {fits}, or " if d["tts_per_node"] > 1 and fits >= 1 else "")
        problems.append(f"tts_gpu_memory_gib = {d['tts_gpu_memory_gib']!r}{pods}: ASR takes asr_gpu_memory_utilization "
                        f"{d['asr_gpu_memory_utilization']} x gpu_memory_total_gib {d['gpu_memory_total_gib']}, "
                        f"leaving {left:.2f} GiB on the shared GPU; {fix}lower asr_gpu_memory_utilization to at most "
                        f"{max(0.0, 1 - tts_total / d['gpu_memory_total_gib']):.2f}")
    if d["ingress_scheme"] == "internet-facing" and not d["ingress_inbound_cidrs"] and not d["ingress_allow_all_sources"]:
        problems.append("ingress_inbound_cidrs = None: ingress_scheme 'internet-facing' opens both services to the "
                        "internet; list the networks that may call them (e.g. ingress_inbound_cidrs: "
                        "\"203.0.113.0/24\"), or set ingress_allow_all_sources: true to open them to everyone on purpose")
    if d["ingress_certificate_arn"] and not (d["ingress_asr_host"] and d["ingress_tts_host"]):
        problems.append("ingress_asr_host / ingress_tts_host: with ingress_certificate_arn both services share the "
                        "HTTPS listener 443 (HTTP 80 redirects to it, and the redirect is group-wide), so they are "
                        "told apart by host name; set both to names the certificate covers, e.g. "
                        "\"asr.example.com\" and \"tts.example.com\", and point them at the ALB in DNS")
    if d["ingress_asr_host"] and d["ingress_asr_host"] == d["ingress_tts_host"]:
        problems.append(f"ingress_asr_host = ingress_tts_host = {d['ingress_asr_host']!r}: each service needs its own host")
    access_point = d["efs_base_path"].rstrip("/") + f"/{d['namespace']}/{d['models_pvc']}"
    if not EFS_AP_PATH.match(access_point) or len(access_point) > EFS_AP_PATH_MAX:
        problems.append(f"efs_base_path = {d['efs_base_path']!r}: the access point directory would be {access_point!r}, "
                        f"which EFS refuses (at most {EFS_AP_PATH_MAX} characters and four directories, none starting "
                        "with '.'); use one or two short directories, e.g. \"/qwen3-speech\"")
    return problems


def settings_warnings(s: Settings) -> list[str]:
    """Values that deploy but do not do what they say."""
    out = []
    if s.tts_dtype is not None and s.tts_backend != "pytorch":
        # groxaxo/Qwen3-TTS-Openai-Fastapi api/backends/factory.py hands TTS_DTYPE to the pytorch
        # backend only; official_qwen3_tts.py picks bfloat16 on CUDA itself.
        out.append(f"tts_dtype = {s.tts_dtype!r} has no effect with tts_backend = {s.tts_backend!r} (only the "
                   f"'pytorch' backend reads TTS_DTYPE; the official one always runs bfloat16 on a GPU); "
                   f"set tts_dtype = None")
    return out
