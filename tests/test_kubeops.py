"""kubeops planning against a real API server (the sandbox's, API only): what counts as a change."""

from __future__ import annotations

import copy

import pytest

from kubeops.changes import plan_apply, with_applied_hash
from kubeops.client import from_kubeconfig
from kubeops.kinds import Ref
from kubeops.waiter import WaitFailed, wait_until_ready

MANAGER = "qwen3-speech-deploy"


def _deployment(args=("--max-model-len", "4096")):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "asr", "namespace": "default", "labels": {"app": "asr"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "asr"}}, "template": {
            "metadata": {"labels": {"app": "asr"}},
            "spec": {"containers": [{"name": "asr", "image": "qwenllm/qwen3-asr:latest", "args": list(args),
                                     "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                                     "resources": {"requests": {"cpu": "1", "memory": "6Gi"}}}]}}},
    }


@pytest.fixture
def kube(api_sandbox):
    return from_kubeconfig(str(api_sandbox.kubeconfig))


def _apply(kube, manifest):
    kube.apply(with_applied_hash(manifest), field_manager=MANAGER)


def test_an_absent_object_is_planned_as_a_create_without_writing(kube):
    plan = plan_apply(kube, with_applied_hash(_deployment()), field_manager=MANAGER)
    assert plan.action == "create" and any("qwen3-asr:latest" in line for line in plan.diff)
    assert kube.get(Ref("apps/v1", "Deployment", "asr", "default")) is None


def test_an_applied_object_is_unchanged_with_a_single_read(kube):
    _apply(kube, _deployment())
    before = copy.copy(kube.counter)
    plan = plan_apply(kube, with_applied_hash(_deployment()), field_manager=MANAGER)
    assert plan.action == "unchanged"
    assert (kube.counter.reads - before.reads, kube.counter.dry_runs - before.dry_runs) == (1, 0)


def test_a_changed_value_diffs_only_that_field(kube):
    _apply(kube, _deployment())
    plan = plan_apply(kube, with_applied_hash(_deployment(("--max-model-len", "8192"))), field_manager=MANAGER)
    changed = [line for line in plan.diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert plan.action == "update" and [line.replace(' ', '') for line in changed] == ["--'4096'", "+-'8192'"]


def test_fields_other_managers_add_to_merged_lists_are_not_drift(kube):
    _apply(kube, _deployment())
    extra = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "asr", "namespace": "default"},
             "spec": {"template": {"spec": {"containers": [{"name": "asr", "env": [{"name": "EXTRA", "value": "x"}]}]}}}}
    kube.apply(extra, field_manager="someone-else", force=False)
    assert plan_apply(kube, with_applied_hash(_deployment()), field_manager=MANAGER).action == "unchanged"


def test_an_edit_to_an_owned_field_behind_our_back_is_drift(kube):
    _apply(kube, _deployment())
    edited = _deployment(("--max-model-len", "1024"))
    kube.apply(edited, field_manager="kubectl-edit", force=True)
    plan = plan_apply(kube, with_applied_hash(_deployment()), field_manager=MANAGER)
    assert plan.action == "update" and any("1024" in line for line in plan.diff)


def test_a_field_dropped_from_the_manifest_is_planned_for_removal(kube):
    _apply(kube, _deployment())
    smaller = _deployment()
    del smaller["spec"]["template"]["spec"]["containers"][0]["env"]
    plan = plan_apply(kube, with_applied_hash(smaller), field_manager=MANAGER)
    assert plan.action == "update" and any(line.startswith("-") and "HF_HUB_OFFLINE" in line for line in plan.diff)


def test_secret_values_are_masked_in_diffs(kube):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": "default"},
              "data": {"HF_TOKEN": "aGZfc2VjcmV0"}}
    plan = plan_apply(kube, with_applied_hash(secret), field_manager=MANAGER)
    assert "aGZfc2VjcmV0" not in "\n".join(plan.diff) and "<secret sha256:" in "\n".join(plan.diff)


def test_waiting_on_a_job_that_failed_stops_with_its_reason(api_sandbox, kube):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "seed", "namespace": "default"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    kube.request("POST", "/apis/batch/v1/namespaces/default/jobs", body=job)
    kube.request("PATCH", "/apis/batch/v1/namespaces/default/jobs/seed/status", content_type="application/merge-patch+json",
                 body={"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                  "message": "Job has reached the specified backoff limit"}]}})
    with pytest.raises(WaitFailed, match="BackoffLimitExceeded"):
        wait_until_ready(kube, Ref("batch/v1", "Job", "seed", "default"), timeout=5, poll=0.1)
