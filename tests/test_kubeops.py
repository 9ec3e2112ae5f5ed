"""kubeops planning against a real API server (the sandbox's, API only): what counts as a change."""

from __future__ import annotations

import copy

import pytest

from kubeops.changes import plan_apply, with_applied_hash
from kubeops.client import KubeApiError, from_kubeconfig
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


def test_transient_api_errors_are_retried_for_the_budget_in_seconds_then_fail_with_one_summary(api_sandbox):
    kube = from_kubeconfig(str(api_sandbox.kubeconfig), retry_seconds=1.5)
    api_sandbox.control.fault("api-errors", rate=1.0, codes=[503], path="/configmaps")
    with pytest.raises(KubeApiError) as failed:
        kube.get(Ref("v1", "ConfigMap", "anything", "default"))
    assert failed.value.status == 503
    summary = kube.retries.take_summary()
    count = int(summary.split()[0])
    assert count >= 2 and summary.endswith(f"503 x{count}") and "transient API errors retried over" in summary
    assert kube.retries.take_summary() is None  # reported once
    api_sandbox.control.fault("clear")
    assert kube.get(Ref("v1", "ConfigMap", "anything", "default")) is None


def test_a_create_whose_answer_is_lost_after_the_server_did_it_is_retried_into_one_object(api_sandbox):
    kube = from_kubeconfig(str(api_sandbox.kubeconfig), retry_seconds=10)
    api_sandbox.control.fault("api-drop", count=1, after=True, path="/deployments/asr")
    _apply(kube, _deployment())
    records = [r for r in api_sandbox.control.audit() if r["path"].endswith("/deployments/asr") and not r["dry_run"]]
    assert [r.get("fault") for r in records] == ["api-drop", None]  # done, unheard, asked again
    assert [r["code"] for r in records] == [201, 200]
    assert kube.retries.take_summary().startswith("1 transient API error retried over 0 s: connection ")
