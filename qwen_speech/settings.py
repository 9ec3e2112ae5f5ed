"""Inventory data for the Qwen3 speech playbook: one schema, checked before the first API call.

Every value the guide hard-codes is a key here; the guide's value is the default and lives in
`inventories/group_data/all.py`. Keys are flat (`asr_max_model_len`, not `asr: {max_model_len}`)
because pyinfra replaces nested dicts wholesale when it merges group and host data, and because
`--data asr_max_model_len=8192` should just work.

A bad value is reported with the key, the value and what would be right, all problems at once.
"""

from __future__ import annotations

import difflib
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
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "a positive integer"


def _int_at_least(low: int) -> Checker:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
        return None if ok else f"an integer >= {low}"
    return check


def _int_range(low: int, high: int) -> Checker:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        return None if ok else f"an integer from {low} to {high}"
    return check


def _port(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535
    return None if ok else "a port number from 1 to 65535"


def _fraction(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "a number between 0 and 1, both excluded (the guide uses 0.45)"


def _non_negative_number(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
    return None if ok else "a number >= 0"


def _positive_number(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    return None if ok else "a number > 0"


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
    ok = isinstance(v, str) and v and "/" not in v and v not in (".", "..")
    return None if ok else "a directory name under the models mount, without '/' (e.g. \"Qwen3-ASR-1.7B\")"


def _abs_path(v: Any) -> str | None:
    return None if isinstance(v, str) and v.startswith("/") else "an absolute path such as \"/models\""


def _one_of(*allowed: str) -> Checker:
    def check(v: Any) -> str | None:
        return None if v in allowed else "one of " + ", ".join(repr(a) for a in allowed)
    return check


def _string_map(v: Any) -> str | None:
    ok = isinstance(v, dict) and v and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
    return None if ok else "a non-empty mapping of strings, e.g. {\"node-type\": \"gpu\"}"


def _toleration_ok(t: Any) -> bool:
    if not isinstance(t, dict) or not set(t) <= {"key", "operator", "value", "effect", "tolerationSeconds"}:
        return False
    seconds = t.get("tolerationSeconds")
    return (all(isinstance(t.get(k, ""), str) for k in ("key", "value"))
            and t.get("operator", "Equal") in ("Exists", "Equal")
            and t.get("effect", "") in ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
            and (seconds is None or isinstance(seconds, int) and not isinstance(seconds, bool)))


def _tolerations(v: Any) -> str | None:
    ok = isinstance(v, list) and all(_toleration_ok(t) for t in v)
    return None if ok else ("a list of Kubernetes tolerations: key and value strings, operator Exists or Equal, "
                            "effect NoSchedule, PreferNoSchedule or NoExecute, tolerationSeconds an integer")


def _string_list(v: Any) -> str | None:
    return None if isinstance(v, list) and all(isinstance(x, str) for x in v) else "a list of strings"


def _group_name(v: Any) -> str | None:
    ok = isinstance(v, str) and GROUP_NAME.match(v)
    return None if ok else "lowercase letters, digits, '-' and '.', at most 63 characters (an ALB IngressGroup name)"


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
    "eks_token_refresh_seconds": _positive_number,
    "field_manager": _dns_subdomain,
    "poll_seconds": _positive_number,
    # Riding out faults and sharing the cluster (kubeops/retry.py, tasks/lock.py)
    "api_retry_seconds": _non_negative_number,
    "timeout_verify": _positive_int,
    "deploy_lock_seconds": _positive_int,
    "deploy_lock_wait_seconds": _non_negative_number,
    # Step 1: time-slicing
    "time_slicing_replicas": _positive_int,
    "time_slicing_config_name": _dns_subdomain,
    "time_slicing_config_path": _abs_path,
    "gpu_node_selector": _string_map,
    "gpu_tolerations": _tolerations,
    # Step 2: namespace
    "namespace": _dns_label,
    # Step 3: EFS
    "efs_storage_class": _dns_subdomain,
    "efs_file_system_id": _optional(_string),
    "efs_name_tag": _optional(_string),
    "efs_create": _boolean,
    "efs_base_path": _abs_path,
    "models_pvc": _dns_subdomain,
    "models_pvc_size": _quantity,
    "models_mount_path": _abs_path,
    # Step 4: models
    "hf_endpoint": _optional(_string),
    "hf_token_secret": _optional(_dns_subdomain),
    "seed_image": _optional(_image),
    "seed_workers": _positive_int,
    "asr_model_repo": _repo_id,
    "asr_model_revision": _string,
    "asr_model_dir": _model_dir,
    "tts_model_repo": _repo_id,
    "tts_model_revision": _string,
    "tts_model_dir": _model_dir,
    # Step 5: ASR
    "asr_image": _image,
    "asr_port": _port,
    "asr_gpu_memory_utilization": _fraction,
    "asr_max_model_len": _positive_int,
    "asr_extra_args": _string_list,
    "asr_cpu": _quantity,
    "asr_memory": _quantity,
    "asr_gpus": _positive_int,
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
    "tts_gpus": _positive_int,
    # Step 7: ingress
    "ingress_group": _group_name,
    "ingress_scheme": _one_of("internal", "internet-facing"),
    "ingress_inbound_cidrs": _optional(_string),
    "ingress_idle_timeout_seconds": _int_range(1, 4000),
    "ingress_deregistration_delay_seconds": _int_range(0, 3600),
    "backend_keep_alive_seconds": _positive_int,
    "ingress_listener_urls_file": _optional(_string),
    # Timeouts, seconds
    "timeout_time_slicing": _positive_int,
    "timeout_pvc_bound": _positive_int,
    "timeout_seed": _positive_int,
    "timeout_asr_ready": _positive_int,
    "timeout_tts_ready": _positive_int,
    "timeout_ingress": _positive_int,
    "progress_deadline_seconds": _positive_int,
    "unschedulable_grace_seconds": _non_negative_number,
    # Verify, status, teardown
    "verify_max_cer": _non_negative_number,
    "verify_long_request": _boolean,
    "karpenter_interruption_queue": _optional(_string),
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
    needs_aws = not d["efs_file_system_id"] or not d["tts_image"]
    if needs_aws and not d["aws_region"]:
        problems.append("aws_region = None: the EFS file system (efs_file_system_id) or the TTS image (tts_image) is "
                        "looked up in AWS, which needs a region; set aws_region, or give both values directly")
    if not d["efs_file_system_id"] and not d["efs_name_tag"]:
        problems.append("efs_file_system_id / efs_name_tag: both empty; name the EFS file system by id (fs-...) or by its Name tag")
    if not d["tts_image"] and not d["tts_ecr_repository"]:
        problems.append("tts_image / tts_ecr_repository: both empty; give the TTS image reference, or the ECR repository "
                        "(with tts_image_tag) the playbook resolves to a digest")
    if d["asr_model_dir"] == d["tts_model_dir"]:
        problems.append(f"asr_model_dir = tts_model_dir = {d['asr_model_dir']!r}: the two models need their own directories")
    if d["asr_port"] == d["tts_port"]:
        problems.append(f"asr_port = tts_port = {d['asr_port']}: the shared ALB needs one listener per service")
    if d["backend_keep_alive_seconds"] <= d["ingress_idle_timeout_seconds"]:
        problems.append(f"backend_keep_alive_seconds = {d['backend_keep_alive_seconds']}: must be above "
                        f"ingress_idle_timeout_seconds = {d['ingress_idle_timeout_seconds']}, or the servers close "
                        f"kept-alive connections the ALB still uses and it answers 502; e.g. "
                        f"{d['ingress_idle_timeout_seconds'] + 60}")
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
