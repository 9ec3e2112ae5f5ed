"""Every bad value an operator can type is refused before the first API call: key, value and fix named.

The values are the ones a new user tried (issue 12): each was accepted and written before, some
broke later correct runs. Per value, validate() names it; through the real CLI, one run with all
of them exits non-zero, names every one and sends nothing at all to the API server.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from qwen_speech.settings import SettingsError, validate
from tests.deploy_helpers import ROOT, deploy, output, run_pyinfra
from tests.manifest_helpers import default_data

# (key, value, a piece of the fix the message must carry)
BAD_VALUES = [
    ("namespace", "kube-system", "Kubernetes reserves the kube- prefix"),
    ("namespace", "kube-public", "Kubernetes reserves the kube- prefix"),
    ("namespace", "default", "'default' is shared"),
    ("models_mount_path", "/", "overlaps /bin"),
    ("models_mount_path", "/dev/shm", "overlaps /dev"),
    ("models_mount_path", "/opt/qwen3-speech", "is /opt/qwen3-speech"),
    ("models_mount_path", "/opt", "overlaps /opt/qwen3-speech"),
    ("models_mount_path", "/etc/models", "overlaps /etc"),
    ("models_mount_path", "/app", "is /app"),
    ("models_mount_path", "models", "an absolute path"),
    ("models_mount_path", "/models/", "e.g. '/models'"),
    ("models_mount_path", "/models/../etc", "without '.', '..'"),
    ("efs_base_path", "/../../..", "without '.', '..'"),
    ("efs_base_path", "/qwen3-speech/../..", "without '.', '..'"),
    ("efs_base_path", "qwen3-speech", "inside the file system"),
    ("efs_posix_uid", -1, "an integer from 0 to 4294967295 (EFS access point PosixUser.Uid), or None"),
    ("efs_posix_gid", 2**32, "an integer from 0 to 4294967295 (EFS access point PosixUser.Gid), or None"),
    ("efs_posix_uid", "1000", "an integer from 0 to 4294967295"),
    ("time_slicing_config_path", "/etc/config.yaml", "would hide /etc"),
    ("time_slicing_config_path", "/config.yaml", "would hide /"),
    ("poll_seconds", math.inf, "a finite number"),
    ("poll_seconds", math.nan, "a finite number"),
    ("poll_seconds", 0, "a finite number from 0.01 to 60"),
    ("eks_token_refresh_seconds", 3600, "EKS accepts a token for 15 minutes"),
    ("unschedulable_grace_seconds", math.inf, "a finite number"),
    ("verify_max_cer", 5, "a character error rate"),
    ("asr_max_model_len", 10**23, "max_position_embeddings"),
    ("asr_max_model_len", 1e23, "max_position_embeddings"),
    ("asr_max_model_len", 128001, "from 1 to 128000"),
    ("progress_deadline_seconds", 2**31, "int32"),
    ("timeout_asr_ready", 10**12, "a week at most"),
    ("timeout_seed", math.inf, "an integer from 1 to 604800"),
    ("seed_active_deadline_seconds", 0, "an integer from 1 to 604800"),
    ("time_slicing_replicas", 100000, "processes sharing one GPU"),
    ("seed_workers", 10000, "parallel downloads"),
    ("api_retry_seconds", 10**9, "seconds of retrying transient API errors"),
    ("asr_gpus", 10**6, "see gpu_node_gpus"),
    ("gpu_node_gpus", 0, "physical GPUs per GPU node"),
    ("ingress_inbound_cidrs", "not-a-cidr", "is not one"),
    ("ingress_inbound_cidrs", "10.0.0.0/8, 300.1.2.3/32", "'300.1.2.3/32' is not one"),
    ("ingress_inbound_cidrs", "10.0.0.1/8", "did you mean 10.0.0.0/8"),
    ("alb_source_cidrs", "the-vpc", "is not one"),
    ("alb_source_cidrs", "", "comma-separated CIDRs"),
    ("asr_model_revision", "main\nrm -rf /", "no spaces, newlines"),
    ("tts_model_revision", "v1..v2", "'..'"),
    ("tts_model_revision", "", "a branch, tag or 40-hex commit"),
    ("asr_model_dir", "Qwen3\nASR", "a directory name under the models mount"),
    ("gpu_tolerations", [{"key": "nvidia.com/gpu", "tolerationSeconds": 2**64}], "tolerationSeconds an integer"),
    ("model_upgrade_policy", "sometimes", "'pinned', 'follow'"),
    ("gpu_image_cache_snapshot_id", "snap-xyz", "an EBS snapshot id, snap- and 17 hex digits"),
    ("gpu_image_cache_snapshot_id", "vol-0123456789abcdef0", "image-cache build INVENTORY"),
    ("manage_gpu_nodepool", "yes", "true or false"),
]

# Values that are fine one by one and wrong together: checked once every key is right.
BAD_COMBINATIONS = [
    ({"asr_gpus": 3}, "asr_gpus = 3", "a GPU node has 2 nvidia.com/gpu slots"),
    ({"tts_gpus": 2, "time_slicing_replicas": 1}, "tts_gpus = 2", "ask for at most 1"),
    ({"ingress_scheme": "internet-facing"}, "ingress_inbound_cidrs = None", "ingress_allow_all_sources: true"),
    ({"efs_base_path": "/a/b/c"}, "efs_base_path = '/a/b/c'", "four directories"),
    ({"efs_base_path": "/.hidden"}, "efs_base_path = '/.hidden'", "none starting with '.'"),
    ({"gpu_image_cache_snapshot_id": "snap-0123456789abcdef0"}, "gpu_image_cache_snapshot_id = 'snap-0123456789abcdef0'",
     "set manage_gpu_nodepool: true"),
    ({"manage_gpu_nodepool": True}, "eks_cluster_name = None", "KarpenterNodeRole-<cluster name>"),
]


def problems(**overrides) -> str:
    with pytest.raises(SettingsError) as err:
        validate(default_data(**overrides))
    return str(err.value)


@pytest.mark.parametrize("key, value, fix", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_the_key_the_value_and_the_fix(key, value, fix):
    text = problems(**{key: value})
    assert f"{key} = {value!r}: must be" in text
    assert fix in text


@pytest.mark.parametrize("overrides, named, fix", BAD_COMBINATIONS, ids=[n for _, n, _ in BAD_COMBINATIONS])
def test_values_that_cannot_work_together_are_refused_naming_the_key_and_the_fix(overrides, named, fix):
    text = problems(**overrides)
    assert named in text and fix in text


@pytest.mark.parametrize("overrides", [
    {"ingress_scheme": "internet-facing", "ingress_inbound_cidrs": "203.0.113.0/24, 2001:db8::/32"},
    {"ingress_scheme": "internet-facing", "ingress_allow_all_sources": True},
    {"namespace": "speech", "models_mount_path": "/mnt/models", "efs_base_path": "/"},
    {"asr_gpus": 2, "time_slicing_replicas": 4, "asr_max_model_len": 128000},
    {"asr_model_revision": "refs/pr/1", "tts_model_revision": "7278e1e70fe206f11671096ffdd38061171dd6e5"},
])
def test_sensible_values_next_to_the_bad_ones_are_accepted(overrides):
    validate(default_data(**overrides))


def _cli_args(values) -> list[str]:
    return [arg for key, value in values for arg in ("--data", f"{key}={value}")]


CLI_VALUES = [("namespace", "kube-system"), ("models_mount_path", "/dev/shm"), ("efs_base_path", "/../../.."),
              ("poll_seconds", "Infinity"), ("asr_max_model_len", "1e23"), ("progress_deadline_seconds", 2**31),
              ("time_slicing_replicas", 100000), ("ingress_inbound_cidrs", "not-a-cidr"),
              ("asr_model_revision", "main\nx"), ("efs_posix_gid", -5)]


def test_the_cli_refuses_all_bad_values_at_once_before_any_api_call(sandbox):
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox, *_cli_args(CLI_VALUES))
    text = output(result)
    assert result.returncode != 0
    for key, _ in CLI_VALUES:
        assert f"{key} = " in text, key
    assert "asr_max_model_len = 1e+23" in text and "poll_seconds = inf" in text
    assert "Traceback" not in text
    assert sandbox.control.audit_since(mark) == []

    mark = sandbox.control.audit_mark()
    combined = deploy(sandbox, "--data", "asr_gpus=3", "--data", "ingress_scheme=internet-facing")
    assert combined.returncode != 0
    assert "asr_gpus = 3" in output(combined) and "ingress_allow_all_sources" in output(combined)
    assert sandbox.control.audit_since(mark) == []


def test_an_inventory_with_a_syntax_error_gives_one_line_naming_the_file(sandbox, tmp_path):
    broken = tmp_path / "inventories" / "broken.py"
    broken.parent.mkdir()
    broken.write_text('broken = [("@local", {"environment": "x"}),\n')
    result = run_pyinfra(sandbox, "deploy.py", "--dry", inventory=str(broken))
    text = output(result)
    assert result.returncode != 0
    assert f"inventory file {broken} does not load: SyntaxError at line 1" in text
    assert "Traceback" not in text and "internal exception" not in text
    errors = [line for line in text.splitlines() if "does not load" in line]
    assert len(errors) == 1

    operate = subprocess.run([sys.executable, "-m", "qwen_speech", "status", str(broken)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert operate.returncode == 2
    assert operate.stderr.strip().splitlines() == [
        f"error: inventory file {broken} does not load: SyntaxError at line 1, column 10: '[' was never closed; "
        "fix that line"]


def test_the_readme_commands_work_from_another_directory(sandbox, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG", "PYTHONPATH"))}
    env["QWEN3_SANDBOX_DIR"] = str(sandbox.root)
    for inventory in ("sandbox.py", "production.py"):
        dry = subprocess.run([sys.executable, "-m", "pyinfra", str(ROOT / "inventories" / inventory),
                              str(ROOT / "deploy.py"), "--dry", "--data", "namespace=kube-system"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
        text = dry.stdout + dry.stderr
        assert "No module named" not in text, text[-3000:]
        assert "namespace = 'kube-system'" in text, text[-3000:]  # it got as far as checking the inventory
    status = subprocess.run([sys.executable, str(ROOT / "qwen_speech"), "drift", str(ROOT / "inventories/sandbox.py")],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert "No module named" not in status.stdout + status.stderr
    assert status.returncode in (0, 1), status.stdout + status.stderr
    as_module = subprocess.run([sys.executable, "-m", "qwen_speech", "drift", str(ROOT / "inventories/sandbox.py")],
                               cwd=elsewhere, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                               timeout=120)
    assert as_module.returncode in (0, 1), as_module.stdout + as_module.stderr
    assert not list(elsewhere.iterdir())  # nothing written into the working directory


def test_the_sandbox_refuses_an_efs_access_point_outside_the_file_system_as_efs_does(sandbox):
    """The real failure behind the efs_base_path check: EFS's CreateAccessPoint refuses the path
    (the sandbox used to write the volume outside its file system's directory)."""
    import time

    from kubernetes import client

    api = sandbox.control.kube_api_client()
    fs_id = sandbox.control.state["efs_file_system_id"]
    storage = client.StorageV1Api(api)
    core = client.CoreV1Api(api)
    storage.create_storage_class({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "escape"},
        "provisioner": "efs.csi.aws.com", "parameters": {
            "provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "755", "basePath": "/../../..",
            "subPathPattern": "${.PVC.namespace}/${.PVC.name}", "ensureUniqueDirectory": "false"}})
    core.create_namespaced_persistent_volume_claim("default", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "escape"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "escape",
                 "resources": {"requests": {"storage": "1Gi"}}}})
    deadline = time.monotonic() + 30
    messages: list[str] = []
    while time.monotonic() < deadline and not any("rootDirectory.path" in m for m in messages):
        events = core.list_namespaced_event("default", field_selector="involvedObject.name=escape").items
        messages = [e.message for e in events if e.reason == "ProvisioningFailed"]
        time.sleep(0.2)
    assert any("Value '/../../../default/escape' at 'rootDirectory.path' failed to satisfy constraint" in m
               for m in messages), messages
    assert core.read_namespaced_persistent_volume_claim("escape", "default").status.phase == "Pending"
    assert not (sandbox.root.parent / "default").exists()


def test_a_data_argument_without_an_equals_sign_is_refused_in_one_line_naming_it(sandbox):
    mark = sandbox.control.audit_mark()
    result = run_pyinfra(sandbox, "deploy.py", "--dry", "--data", "asr_max_model_len")
    text = output(result)
    assert result.returncode != 0
    assert "--data 'asr_max_model_len' is not of the form --data key=value" in text
    assert "Traceback" not in text and "internal exception" not in text
    assert sandbox.control.audit_since(mark) == []


def test_a_limit_that_matches_no_host_fails_naming_the_hosts_there_are(sandbox):
    result = run_pyinfra(sandbox, "deploy.py", "--dry", "--limit", "no-such-host")
    text = output(result)
    assert result.returncode != 0
    assert "--limit no-such-host matches no host of inventories/sandbox.py (hosts: @local;" in text
    assert "Traceback" not in text
