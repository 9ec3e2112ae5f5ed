"""Step 4 from the playbook's side: pinned commits, no re-seeding, the model guard, token secrecy."""

from __future__ import annotations

import json
import time

from kubernetes import client

from tests.deploy_helpers import assert_ok, changed_operations, creations, deploy, deployed, output, run_pyinfra, writes  # noqa: F401

ASR_REPO = "Qwen/Qwen3-ASR-1.7B"


def _job_creations(records):
    return creations(records, "jobs")


def test_a_new_upstream_commit_shows_in_the_dry_run_and_only_that_model_is_seeded_again(deployed):
    commit = deployed.control.fault("hub-new-revision", repo=ASR_REPO, path="config.json")["result"]["commit"]
    mark = deployed.control.audit_mark()
    dry = run_pyinfra(deployed, "deploy.py", "--dry", "--diff")
    assert_ok(dry)
    assert writes(deployed.control.audit_since(mark)) == []
    assert f"Will seed {ASR_REPO}" in output(dry) and commit in output(dry)
    assert "Will seed Qwen/Qwen3-TTS" not in output(dry)

    mark = deployed.control.audit_mark()
    assert_ok(deploy(deployed))
    jobs = _job_creations(deployed.control.audit_since(mark))
    assert len(jobs) == 1
    core = client.CoreV1Api(deployed.control.kube_api_client())
    record = core.read_namespaced_config_map("qwen3-speech-models", "hosthree").data
    assert record["asr"] == commit


def test_a_deleted_model_manifest_holds_the_pod_in_its_guard_with_the_guards_message_and_a_rerun_reseeds(deployed):
    manifests = list(deployed.root.glob("efs/**/Qwen3-ASR-1.7B/.qwen3-seed-manifest.json"))
    assert len(manifests) == 1
    manifests[0].unlink()
    core = client.CoreV1Api(deployed.control.kube_api_client())
    for pod in core.list_namespaced_pod("hosthree", label_selector="app.kubernetes.io/name=qwen3-asr").items:
        core.delete_namespaced_pod(pod.metadata.name, "hosthree")
    message = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ASR_REPO not in message:
        for pod in core.list_namespaced_pod("hosthree", label_selector="app.kubernetes.io/name=qwen3-asr").items:
            guard = [s for s in (pod.status.init_container_statuses or []) if s.name == "model-guard"]
            # The guard waits for a seed (model_guard_wait_seconds) and says what it waits for.
            if guard and (guard[0].state.running or guard[0].restart_count or (guard[0].state.terminated
                                                                             and guard[0].state.terminated.exit_code)):
                message = core.read_namespaced_pod_log(pod.metadata.name, "hosthree", container="model-guard")
        time.sleep(0.5)
    assert ASR_REPO in message and "deploy.py" in message, message
    assert not [p for p in core.list_namespaced_pod("hosthree", label_selector="app.kubernetes.io/name=qwen3-asr").items
                if p.status.phase == "Running"]

    mark = deployed.control.audit_mark()
    result = deploy(deployed)
    assert_ok(result)
    assert len(_job_creations(deployed.control.audit_since(mark))) == 1
    assert manifests[0].exists()
    assert "round trip" in output(result)


def test_the_hf_token_reaches_the_job_only_through_a_secret_and_never_a_log_diff_or_manifest(deployed):
    token = "hf_TopSecretValue_0123456789"
    env = {"HF_TOKEN": token}
    result = run_pyinfra(deployed, "deploy.py", "-y", "--diff", "--data", "hf_token_secret=hf-token", env=env)
    assert_ok(result)
    assert token not in output(result)
    core = client.CoreV1Api(deployed.control.kube_api_client())
    assert core.read_namespaced_secret("hf-token", "hosthree").data["HF_TOKEN"]

    other = run_pyinfra(deployed, "deploy.py", "--dry", "--diff", "--data", "hf_token_secret=hf-token",
                        env={"HF_TOKEN": "hf_AnotherSecret_987"})
    assert_ok(other)
    assert "Will change Secret hosthree/hf-token" in output(other)
    assert "hf_AnotherSecret_987" not in output(other) and token not in output(other)
    assert "<secret sha256:" in output(other)

    deployed.control.fault("hub-new-revision", repo=ASR_REPO, path="config.json")
    assert_ok(deploy(deployed, "--data", "hf_token_secret=hf-token", env=env))
    batch = client.BatchV1Api(deployed.control.kube_api_client())
    job = [j for j in batch.list_namespaced_job("hosthree").items if "asr" in j.metadata.name][-1]
    container = job.spec.template.spec.containers[0]
    assert token not in json.dumps(client.ApiClient().sanitize_for_serialization(job))
    hf_env = [e for e in container.env if e.name == "HF_TOKEN"][0]
    assert hf_env.value is None and hf_env.value_from.secret_key_ref.name == "hf-token"
    for path in [deployed.root / "audit.jsonl", *deployed.root.glob("logs/**/*.log")]:
        assert token not in path.read_text(errors="replace"), path
