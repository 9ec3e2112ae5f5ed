"""Day 2: status, drift check, verify alone, teardown with and without purge."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kubernetes import client

from tests.deploy_helpers import (ROOT, assert_ok, converged, creations, deploy, deployed, output,  # noqa: F401
                                 run_pyinfra, writes)

# Tests that only read a converged sandbox share one (tests/deploy_helpers.py: converged) on one worker.
reads_converged = pytest.mark.xdist_group("operate-converged")


def speechctl(sandbox, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env["QWEN3_SANDBOX_DIR"] = str(sandbox.root)
    return subprocess.run([sys.executable, "-m", "qwen_speech", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


@reads_converged
def test_status_on_a_converged_sandbox_lists_every_object_healthy(converged):
    result = speechctl(converged, "status", "inventories/sandbox.py")
    assert result.returncode == 0, output(result)
    text = result.stdout
    for expected in ("Deployment hosthree/qwen3-asr: ok", "Deployment hosthree/qwen3-tts: ok",
                     "PersistentVolumeClaim hosthree/qwen3-models-pvc: ok", "Ingress hosthree/qwen3-asr-ingress: ok",
                     "allocatable nvidia.com/gpu 2"):
        assert expected in text, text
    assert "MISSING" not in text and "NOT READY" not in text


def _valid(result, schema: str) -> dict:
    import json

    import jsonschema

    document = json.loads(result.stdout)  # stdout is the document alone; the rest went to stderr
    jsonschema.validate(document, json.loads((ROOT / "files" / "schemas" / schema).read_text()))
    return document


@reads_converged
def test_status_and_drift_json_follow_the_schemas_kept_in_the_repository(converged):
    status = speechctl(converged, "status", "--json", "inventories/sandbox.py")
    assert status.returncode == 0, output(status)
    host = _valid(status, "status.schema.json")["hosts"][0]
    assert host["healthy"] and {o["health"] for o in host["objects"]} == {"ok"}
    tts = next(o for o in host["objects"] if o["kind"] == "Deployment" and o["name"] == "qwen3-tts")
    assert any("@sha256:" in image and len(image.split("@sha256:")[1]) == 64 for image in tts["images"])
    assert host["nodes"][0]["gpus"] == 2 and {m["key"] for m in host["models"]} == {"asr", "tts"}
    in_sync = speechctl(converged, "drift", "--json", "inventories/sandbox.py")
    assert in_sync.returncode == 0 and _valid(in_sync, "drift.schema.json")["hosts"][0]["drifted"] == 0
    drifted = speechctl(converged, "drift", "--json", "inventories/sandbox.py", "--data", "asr_max_model_len=8192")
    assert drifted.returncode == 1, output(drifted)
    objects = _valid(drifted, "drift.schema.json")["hosts"][0]["objects"]
    assert [(o["kind"], o["name"], o["action"]) for o in objects] == [("Deployment", "qwen3-asr", "update")]
    assert "+        - '8192'" in objects[0]["diff"]


def test_every_subcommand_has_help_listing_its_options():
    for command, options in (("status", ("--json", "--models", "--data")), ("drift", ("--json", "--models", "--data")),
                             ("verify", ("--data",))):
        result = subprocess.run([sys.executable, "-m", "qwen_speech", command, "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and all(option in result.stdout for option in options), result.stdout
        assert "Exit codes" in result.stdout


def test_status_after_a_spot_interruption_shows_what_is_down(deployed):
    deployed.control.fault("spot-interruption", replacement_delay=30)
    result = speechctl(deployed, "status", "inventories/sandbox.py")
    assert result.returncode == 1, output(result)
    assert "Deployment hosthree/qwen3-asr: NOT READY" in result.stdout


def test_drift_is_0_after_a_deploy_1_after_an_edit_behind_the_playbooks_back_and_2_when_the_api_fails(deployed):
    in_sync = speechctl(deployed, "drift", "inventories/sandbox.py")
    assert in_sync.returncode == 0, output(in_sync)

    apps = client.AppsV1Api(deployed.control.kube_api_client())
    apps.patch_namespaced_deployment("qwen3-tts", "hosthree", {"spec": {"template": {"spec": {"containers": [
        {"name": "tts", "env": [{"name": "TTS_BACKEND", "value": "pytorch"}]}]}}}})
    drifted = speechctl(deployed, "drift", "inventories/sandbox.py")
    assert drifted.returncode == 1, output(drifted)
    assert "Deployment hosthree/qwen3-tts would be updated" in drifted.stdout
    assert "pytorch" in drifted.stdout and "official" in drifted.stdout

    deployed.control.fault("api-errors", codes=[500], count=1000)
    broken = speechctl(deployed, "drift", "inventories/sandbox.py", "--data", "api_retry_seconds=0")
    assert broken.returncode == 2, output(broken)


def test_drift_masks_secret_values(deployed):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token", "namespace": "hosthree"},
              "stringData": {"HF_TOKEN": "hf_old_value_123"}}
    client.CoreV1Api(deployed.control.kube_api_client()).create_namespaced_secret("hosthree", secret)
    env_token = "hf_NEW_secret_value_456"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update({"QWEN3_SANDBOX_DIR": str(deployed.root), "HF_TOKEN": env_token})
    result = subprocess.run([sys.executable, "-m", "qwen_speech", "drift", "inventories/sandbox.py",
                             "--data", "hf_token_secret=hf-token"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 1, output(result)
    assert "Secret hosthree/hf-token" in result.stdout
    assert env_token not in output(result) and "hf_old_value_123" not in output(result)
    assert "<secret sha256:" in result.stdout


def test_verify_fails_clearly_when_the_tts_service_port_is_broken(deployed):
    core = client.CoreV1Api(deployed.control.kube_api_client())
    core.patch_namespaced_service("qwen3-tts-service", "hosthree",
                                  {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9999}]}})
    result = speechctl(deployed, "verify", "inventories/sandbox.py")
    assert result.returncode == 1, output(result)
    assert "TTS /health" in result.stdout and "qwen3-tts-service" in result.stdout


def test_teardown_keeps_the_models_status_says_what_is_missing_and_a_redeploy_does_not_seed_again(deployed):
    assert_ok(run_pyinfra(deployed, "destroy.py", "-y"))
    apps = client.AppsV1Api(deployed.control.kube_api_client())
    assert apps.list_namespaced_deployment("hosthree").items == []
    core = client.CoreV1Api(deployed.control.kube_api_client())
    assert core.read_namespaced_persistent_volume_claim("qwen3-models-pvc", "hosthree")
    ours = "app.kubernetes.io/part-of=qwen3-speech"
    assert core.list_namespaced_service_account("hosthree", label_selector=ours).items == []
    assert client.NetworkingV1Api(deployed.control.kube_api_client()).list_namespaced_network_policy(
        "hosthree", label_selector=ours).items == []
    # Both used to sit out a deploy timeout (timeout_ingress: 10 minutes) looking for what was gone.
    status = speechctl(deployed, "status", "inventories/sandbox.py", "--data", "timeout_verify=3600",
                       "--data", "timeout_ingress=3600")
    assert status.returncode == 1, output(status)
    assert "Deployment hosthree/qwen3-asr: MISSING" in status.stdout
    assert "missing: Ingress hosthree/qwen3-asr-ingress, Ingress hosthree/qwen3-tts-ingress" in status.stdout
    verify = speechctl(deployed, "verify", "inventories/sandbox.py", "--data", "timeout_verify=3600",
                       "--data", "timeout_ingress=3600")
    assert verify.returncode == 1, output(verify)
    assert "FAILED: missing: Deployment hosthree/qwen3-asr, Deployment hosthree/qwen3-tts" in verify.stdout
    mark = deployed.control.audit_mark()
    assert_ok(deploy(deployed))
    assert not [r for r in writes(deployed.control.audit_since(mark)) if "/jobs" in r["path"]]


def test_teardown_with_purge_deletes_the_models_and_a_redeploy_seeds_again(deployed):
    result = run_pyinfra(deployed, "destroy.py", "-y", "--data", "purge_models=true", "--data", "purge_time_slicing=true")
    assert_ok(result)
    manifests = list(deployed.root.glob("efs/**/.qwen3-seed-manifest.json"))
    assert manifests == []
    mark = deployed.control.audit_mark()
    assert_ok(deploy(deployed))
    created_jobs = creations(deployed.control.audit_since(mark), "jobs")
    assert len(created_jobs) == 2


@reads_converged
def test_teardown_dry_run_lists_what_it_would_remove_and_writes_nothing(converged):
    mark = converged.control.audit_mark()
    result = run_pyinfra(converged, "destroy.py", "--dry", "--diff")
    assert_ok(result)
    assert "Will delete Deployment hosthree/qwen3-asr" in output(result)
    assert writes(converged.control.audit_since(mark)) == []


def test_drift_exits_2_when_the_sandbox_is_down_or_the_inventory_file_does_not_exist(make_sandbox):
    sandbox = make_sandbox(with_aws=False, with_hub=False, with_cluster=False)
    missing = speechctl(sandbox, "drift", "inventories/no-such-inventory.py")
    assert missing.returncode == 2, output(missing)
    assert "inventory file inventories/no-such-inventory.py does not exist" in missing.stderr
    sandbox.stop()
    down = speechctl(sandbox, "drift", "inventories/sandbox.py")
    assert down.returncode == 2, output(down)
    assert "no sandbox runs for" in down.stderr
