"""Damaged model files on EFS, end to end: `status --models` finds them, the guard blocks the next pod
start, and the next deploy repairs them fetching only the damaged files from the Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from kubernetes import client

from tests.deploy_helpers import REVIEW_RESOURCES, ROOT, assert_ok, deploy, deployed, output, run_pyinfra  # noqa: F401
from tests.seed_helpers import flip_byte_keeping_mtime

ASR_REPO = "Qwen/Qwen3-ASR-1.7B"
TTS_REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
ASR_SHARD = "model-00001-of-00002.safetensors"
TTS_WEIGHTS = "model.safetensors"
MANIFEST = ".qwen3-seed-manifest.json"


def model_dir(sandbox, name: str):
    found = list(sandbox.root.glob(f"efs/**/{name}/{MANIFEST}")) or list(sandbox.root.glob(f"efs/**/{name}"))
    assert len(found) == 1, found
    return found[0].parent if found[0].name == MANIFEST else found[0]


def operate(sandbox, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env["QWEN3_SANDBOX_DIR"] = str(sandbox.root)
    return subprocess.run([sys.executable, "-m", "qwen_speech", *args, "inventories/sandbox.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def hub_bytes(sandbox) -> dict[str, int]:
    with urllib.request.urlopen(sandbox.control.state["hub_url"] + "/_sandbox/stats", timeout=30) as response:
        return json.loads(response.read())["bytes_served"]


def served_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def size_of(directory, path: str) -> int:
    entries = json.loads((directory / MANIFEST).read_text())["files"]
    return next(e["size"] for e in entries if e["path"] == path)


def guard_message_after_restart(sandbox, app: str) -> str:
    """Delete the app's pods; return the log of the replacement's model guard once it fails, or once it
    says it waits for a seed (a model with no manifest is waited for: model_guard_wait_seconds)."""
    core = client.CoreV1Api(sandbox.control.kube_api_client())
    selector = f"app.kubernetes.io/name={app}"
    deleted = set()
    for pod in core.list_namespaced_pod("hosthree", label_selector=selector).items:
        core.delete_namespaced_pod(pod.metadata.name, "hosthree")
        deleted.add(pod.metadata.name)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for pod in core.list_namespaced_pod("hosthree", label_selector=selector).items:
            if pod.metadata.name in deleted:  # still Terminating for its grace period
                continue
            guard = [s for s in (pod.status.init_container_statuses or []) if s.name == "model-guard"]
            if guard and (guard[0].restart_count or (guard[0].state.terminated and guard[0].state.terminated.exit_code)):
                log = core.read_namespaced_pod_log(pod.metadata.name, "hosthree", container="model-guard")
                if not log and guard[0].restart_count:  # restarted already: the failed run is the previous one
                    log = core.read_namespaced_pod_log(pod.metadata.name, "hosthree", container="model-guard",
                                                       previous=True)
                return log
            if guard and guard[0].state.running:
                log = core.read_namespaced_pod_log(pod.metadata.name, "hosthree", container="model-guard")
                if "waiting for the seed" in log:
                    return log
        time.sleep(0.3)
    raise AssertionError(f"the {app} pod's model guard never failed nor waited")


def test_flipped_byte_and_truncated_shard_are_found_by_the_audit_and_the_next_deploy_fetches_only_them(deployed):
    asr, tts = model_dir(deployed, "Qwen3-ASR-1.7B"), model_dir(deployed, "Qwen3-TTS-CustomVoice")
    flip_byte_keeping_mtime(asr / ASR_SHARD, offset=4096)
    weights = tts / TTS_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])

    mark = deployed.control.audit_mark()
    status = operate(deployed, "status", "--models")
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"{ASR_REPO} files on EFS: DAMAGED - corrupt: {ASR_SHARD}" in status.stdout
    assert f"{TTS_REPO} files on EFS: DAMAGED - truncated: {TTS_WEIGHTS}" in status.stdout
    assert "changed since it was verified" in status.stdout
    drift = operate(deployed, "drift", "--models")
    assert drift.returncode == 1 and "files on EFS damaged" in drift.stdout
    writes = [r for r in deployed.control.audit_since(mark) if r["verb"] in ("create", "delete") and not r.get("dry_run")
              and r.get("resource") not in REVIEW_RESOURCES]
    assert {r["path"].rsplit("/", 1)[-1] for r in writes} <= {"jobs", "qwen3-model-audit"}, writes

    dry = run_pyinfra(deployed, "deploy.py", "--dry")
    assert "the last model audit (status --models) found" in output(dry)
    before = hub_bytes(deployed)
    result = deploy(deployed)
    assert_ok(result)
    fetched = served_since(before, hub_bytes(deployed))
    assert fetched == {f"{ASR_REPO}/{ASR_SHARD}": size_of(asr, ASR_SHARD),
                       f"{TTS_REPO}/{TTS_WEIGHTS}": size_of(tts, TTS_WEIGHTS)}, fetched
    healed = operate(deployed, "status", "--models")
    assert "DAMAGED" not in healed.stdout, healed.stdout
    assert_ok(deploy(deployed))  # and nothing is seeded again once repaired
    assert served_since(before, hub_bytes(deployed)) == fetched


# The sandbox's fast time scale turns the default 30-minute progress deadline into 18 s, shorter
# than a guard-blocked pod waits here on a loaded machine; the repair is what is under test.
PATIENT = ("--data", "progress_deadline_seconds=7200")


def test_a_deleted_file_and_a_deleted_or_invalid_manifest_block_the_pods_and_the_next_deploy_repairs_them(deployed):
    asr, tts = model_dir(deployed, "Qwen3-ASR-1.7B"), model_dir(deployed, "Qwen3-TTS-CustomVoice")
    tokenizer = "speech_tokenizer/model.safetensors"
    tokenizer_size = size_of(tts, tokenizer)
    (tts / tokenizer).unlink()
    (asr / MANIFEST).unlink()

    status = operate(deployed, "status", "--models")
    assert status.returncode == 1
    assert f"{TTS_REPO} files on EFS: DAMAGED - missing: {tokenizer}" in status.stdout
    assert f"{ASR_REPO} files on EFS: DAMAGED - manifest: no completion manifest" in status.stdout
    assert "no completion manifest" in guard_message_after_restart(deployed, "qwen3-asr")

    before = hub_bytes(deployed)
    result = deploy(deployed, *PATIENT)
    assert_ok(result)
    assert served_since(before, hub_bytes(deployed)) == {f"{TTS_REPO}/{tokenizer}": tokenizer_size}
    assert "round trip" in output(result)

    (asr / MANIFEST).write_text("{not json")
    status = operate(deployed, "status", "--models")
    assert f"{ASR_REPO} files on EFS: DAMAGED - manifest: unreadable completion manifest" in status.stdout
    assert "unreadable completion manifest" in guard_message_after_restart(deployed, "qwen3-asr")
    before = hub_bytes(deployed)
    assert_ok(deploy(deployed, *PATIENT))
    assert served_since(before, hub_bytes(deployed)) == {}, "an invalid manifest is rebuilt by hashing, not downloading"
    assert json.loads((asr / MANIFEST).read_text())["files"]
