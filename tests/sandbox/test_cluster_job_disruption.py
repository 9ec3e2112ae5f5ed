"""Jobs and disruption: a Spot interruption's eviction marks pods DisruptionTarget; a Job's
podFailurePolicy that ignores it retries without spending backoffLimit; without one the lost
pod counts as a failure; FailJob rules and activeDeadlineSeconds end the Job as upstream."""

from __future__ import annotations

import copy

from sandbox.cluster.common import JOBS, PODS
from tests.cluster_helpers import (GPU_SELECTOR, GPU_TOLERATIONS, events, job, pods, running_cluster, wait_for)
from tests.manifest_helpers import all_manifests
from tests.sandbox.test_cluster_workloads import job_condition

# The shipped seeding Job's policy (files/qwen3-model-seed-job.yaml), so the test follows the manifest.
SEED_JOB = next(m for m in all_manifests() if m["kind"] == "Job"
                and m["metadata"]["labels"]["app.kubernetes.io/name"] == "qwen3-model-seed")
IGNORE_DISRUPTION = SEED_JOB["spec"]["podFailurePolicy"]
GPU_POD = {"nodeSelector": dict(GPU_SELECTOR), "tolerations": copy.deepcopy(GPU_TOLERATIONS)}


def seeding_job(name: str, policy: dict | None) -> dict:
    """A Job on the GPU node, as the seeding Jobs are, that runs long enough to be interrupted."""
    spec = job(name, ["python3", "-c", "import time; time.sleep(1.5)"], spec=GPU_POD)
    if policy:
        spec["spec"]["podFailurePolicy"] = policy
    return spec


def running_pod(store, name: str) -> dict:
    return wait_for(lambda: [p for p in pods(store, selector=f"job-name={name}")
                             if (p.get("status") or {}).get("phase") == "Running"], f"a running pod of {name}")[0]


def test_spot_interruption_fails_a_job_without_a_pod_failure_policy(tmp_path):
    """Today's seeding Job before this change had no policy: an interruption spends backoffLimit."""
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(JOBS, seeding_job("seed-plain", None))
        running_pod(store, "seed-plain")
        cluster.inject("spot-interruption", {"replacement_delay": 0.3})
        failed = wait_for(lambda: job_condition(store, "seed-plain", "Failed"), "the Job to fail")
        assert failed["reason"] == "BackoffLimitExceeded"  # the evicted pod spent backoffLimit: 0


def test_spot_interruption_is_ignored_by_the_seed_jobs_policy_and_the_job_completes(tmp_path):
    assert SEED_JOB["spec"]["activeDeadlineSeconds"] == 7200  # seed_active_deadline_seconds
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(JOBS, seeding_job("seed", IGNORE_DISRUPTION))
        first = running_pod(store, "seed")
        seen = []
        cluster.store.add_listener(lambda e: seen.append(e.object) if e.type == "DELETED"
                                   and e.object["metadata"].get("uid") == first["metadata"]["uid"] else None)
        cluster.inject("spot-interruption", {"replacement_delay": 0.3})
        wait_for(lambda: job_condition(store, "seed", "Complete"), "the Job to complete on the replacement node")
        (gone,) = seen
        target = next(c for c in gone["status"]["conditions"] if c["type"] == "DisruptionTarget")
        assert (target["status"], target["reason"]) == ("True", "EvictionByEvictionAPI")
        status = store.get(JOBS, "default", "seed")["status"]
        assert status["succeeded"] == 1 and "failed" not in status
        assert events(store, "seed", reason="SuccessfulCreate")[1:]  # a second pod was made for it


def test_fail_job_rule_on_an_exit_code_ends_the_job_before_backoff_limit(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        spec = job("bad-repo", ["python3", "-c", "raise SystemExit(42)"], backoff_limit=5)
        spec["spec"]["podFailurePolicy"] = {"rules": [
            IGNORE_DISRUPTION["rules"][0],
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]}
        store.create(JOBS, spec)
        failed = wait_for(lambda: job_condition(store, "bad-repo", "Failed"), "the Job to fail")
        assert failed["reason"] == "PodFailurePolicy"
        assert len(store.list(PODS, "default", label_selector="job-name=bad-repo")) == 1  # no retry


def test_active_deadline_seconds_stops_a_job_that_runs_too_long(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        spec = job("slow", ["python3", "-c", "import time; time.sleep(60)"])
        spec["spec"]["activeDeadlineSeconds"] = 1
        store.create(JOBS, spec)
        failed = wait_for(lambda: job_condition(store, "slow", "Failed"), "the Job to hit its deadline")
        assert failed["reason"] == "DeadlineExceeded"
        wait_for(lambda: not [p for p in pods(store, selector="job-name=slow")
                              if (p.get("status") or {}).get("phase") == "Running"], "the pod to be stopped")
