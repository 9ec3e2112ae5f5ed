"""Workloads in the sandbox cluster: Deployments, rollouts, Jobs running real processes, faults, cleanup."""

from __future__ import annotations

import os
import sys
import time

import pytest

from sandbox.cluster.common import (CONFIGMAPS, DEPLOYMENTS, JOBS, NAMESPACES, PODS, REPLICASETS, SECRETS,
                                    condition, pod_is_ready)
from tests.cluster_helpers import (deployment, deployment_ready, events, job, namespace, pods, ready_pods,
                                   running_cluster, wait_for, waiting_reason)

PYTHON = "python3"


def job_condition(store, name: str, kind: str, namespace: str = "default") -> dict | None:
    obj = store.get(JOBS, namespace, name)
    cond = condition(obj, kind) if obj else None
    return cond if cond and cond.get("status") == "True" else None


def test_deployment_becomes_ready_with_replica_set_status_and_conditions(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web", replicas=2, strategy="RollingUpdate"))
        wait_for(lambda: deployment_ready(store, "default", "web"), "the deployment to be ready")
        d = store.get(DEPLOYMENTS, "default", "web")
        status = d["status"]
        assert (status["replicas"], status["availableReplicas"], status["observedGeneration"]) == (2, 2, 1)
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["Available"]["status"] == "True"
        assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
        (rs,) = store.list(REPLICASETS, "default")
        pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
        assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
        for pod in pods(store, selector="app=web"):
            assert pod["metadata"]["labels"]["pod-template-hash"] == pod_hash
            assert [c["type"] for c in pod["status"]["conditions"] if c["status"] == "True"] == [
                "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
            assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        assert events(store, "web", reason="ScalingReplicaSet")


def test_template_change_rolls_out_new_pods_and_scales_the_old_replica_set_down(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web", replicas=2, strategy="RollingUpdate"))
        old = {p["metadata"]["name"] for p in wait_for(lambda: ready_pods(store, "default", "app=web", 2), "v1 pods")}
        store.mutate(DEPLOYMENTS, "default", "web",
                     lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="busybox:1.37"))
        wait_for(lambda: deployment_ready(store, "default", "web") and
                 store.get(DEPLOYMENTS, "default", "web")["status"]["observedGeneration"] == 2 and
                 not old & {p["metadata"]["name"] for p in pods(store, selector="app=web")}, "the rollout to finish")
        images = {p["spec"]["containers"][0]["image"] for p in pods(store, selector="app=web")}
        assert images == {"busybox:1.37"}
        replica_sets = {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
                        for rs in store.list(REPLICASETS, "default")}
        assert replica_sets == {"busybox:1.36": 0, "busybox:1.37": 2}


def test_image_pull_failure_fault_shows_err_image_pull_then_back_off_until_cleared(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        cluster.inject("image-pull-failure", {"namespace": "default", "deployment": "web"})
        store.create(DEPLOYMENTS, deployment("web", image="registry.example/web:2.0"))
        seen = set()

        def backing_off():
            for pod in pods(store, selector="app=web"):
                seen.add(waiting_reason(pod))
            return "ImagePullBackOff" in seen and "ErrImagePull" in seen
        wait_for(backing_off, "ErrImagePull then ImagePullBackOff")
        failed = [e["message"] for e in events(store, "web-", reason="Failed")]
        pull = [m for m in failed if m.startswith('Failed to pull image "registry.example/web:2.0": ')]
        assert pull and pull[0].endswith("not found") and "Error: ImagePullBackOff" in failed
        assert pods(store, selector="app=web")[0]["status"]["phase"] == "Pending"

        cluster.inject("clear", {})
        wait_for(lambda: deployment_ready(store, "default", "web"), "the deployment to recover after clear")


def test_crash_loop_fault_restarts_containers_with_growing_restart_count(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web"))
        wait_for(lambda: deployment_ready(store, "default", "web"), "the deployment to be ready")
        cluster.inject("crash-loop", {"namespace": "default", "deployment": "web"})

        def crash_looping():
            pod = pods(store, selector="app=web")[0]
            status = pod["status"]["containerStatuses"][0]
            return waiting_reason(pod) == "CrashLoopBackOff" and status["restartCount"] >= 2 and pod
        pod = wait_for(crash_looping, "CrashLoopBackOff with restarts")
        status = pod["status"]["containerStatuses"][0]
        assert status["lastState"]["terminated"]["exitCode"] == 1
        assert not pod_is_ready(pod)
        assert events(store, pod["metadata"]["name"], reason="BackOff")[0]["type"] == "Warning"
        wait_for(lambda: not deployment_ready(store, "default", "web"), "the deployment to report not ready")


def test_job_runs_a_real_python_process_with_mounted_config_and_secret_env(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(CONFIGMAPS, {"metadata": {"name": "scripts", "namespace": "default"},
                                  "data": {"hello.py": "import os, sys\nprint('hello', os.environ['TOKEN'], sys.argv[1])\n"}})
        store.create(SECRETS, {"metadata": {"name": "token", "namespace": "default"},
                               "data": {"TOKEN": "czNjcjN0"}})  # s3cr3t
        spec = job("hello", [PYTHON, "/opt/scripts/hello.py", "/opt/scripts/hello.py"],
                   container={"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "TOKEN"}}}],
                              "volumeMounts": [{"name": "scripts", "mountPath": "/opt/scripts"}]},
                   spec={"volumes": [{"name": "scripts", "configMap": {"name": "scripts"}}]})
        store.create(JOBS, spec)
        wait_for(lambda: job_condition(store, "hello", "Complete"), "the Job to complete")
        (pod,) = pods(store, selector="job-name=hello")
        assert pod["status"]["phase"] == "Succeeded"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
        log = cluster.pod_log_path("default", pod["metadata"]["name"], "main").read_text()
        assert log.startswith("hello s3cr3t ") and log.strip().endswith("/volumes/scripts/hello.py")
        finished = store.get(JOBS, "default", "hello")["status"]
        assert finished["succeeded"] == 1 and finished["completionTime"] and finished["startTime"]
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "hello"


def test_failing_job_retries_up_to_backoff_limit_then_fails_with_the_last_log_line(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(JOBS, job("broken", [PYTHON, "-c", "import sys; print('starting', flush=True); sys.exit('model repo not found')"],
                               backoff_limit=1))
        failed = wait_for(lambda: job_condition(store, "broken", "Failed"), "the Job to fail")
        assert failed["reason"] == "BackoffLimitExceeded"
        assert store.get(JOBS, "default", "broken")["status"]["failed"] == 2
        job_pods = pods(store, selector="job-name=broken")
        assert len(job_pods) == 2 and {p["status"]["phase"] for p in job_pods} == {"Failed"}
        terminated = job_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
        assert terminated["message"] == "model repo not found"
        assert events(store, "broken", reason="BackoffLimitExceeded")


def test_failing_init_container_blocks_the_main_container_in_init_crash_loop(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        guard = {"name": "guard", "image": "python:3.11-slim",
                 "command": [PYTHON, "-c", "raise SystemExit('manifest missing for /models/x: run the seed job')"]}
        store.create(DEPLOYMENTS, deployment("guarded", spec={"initContainers": [guard]}))

        def init_crash_loop():
            for pod in pods(store, selector="app=guarded"):
                init = pod["status"].get("initContainerStatuses") or [{}]
                if waiting_reason(pod, init=True) == "CrashLoopBackOff" and init[0].get("restartCount", 0) >= 1:
                    return pod
        pod = wait_for(init_crash_loop, "Init:CrashLoopBackOff")
        init = pod["status"]["initContainerStatuses"][0]
        assert init["lastState"]["terminated"]["message"] == "manifest missing for /models/x: run the seed job"
        assert pod["status"]["phase"] == "Pending"
        assert waiting_reason(pod) == "PodInitializing"
        assert condition(pod, "Initialized")["status"] == "False"


def test_missing_secret_is_a_create_container_config_error(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web", container={
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}}]}))
        pod = wait_for(lambda: next((p for p in pods(store, selector="app=web")
                                     if waiting_reason(p) == "CreateContainerConfigError"), None), "the config error")
        assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == 'secret "hf" not found'


def test_run_as_non_root_needs_a_numeric_user_for_the_tts_image_and_refuses_a_root_image(tmp_path):
    """As the kubelet's verifyRunAsNonRoot: the TTS image's `appuser` cannot be checked, busybox runs as root."""
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        non_root = {"securityContext": {"runAsNonRoot": True}}
        store.create(DEPLOYMENTS, deployment("tts", image="example.com/qwen3-tts:1", container=non_root))
        store.create(DEPLOYMENTS, deployment("root", container=non_root))
        store.create(DEPLOYMENTS, deployment("uid", image="example.com/qwen3-tts:1",
                                             container={"securityContext": {"runAsNonRoot": True, "runAsUser": 1000}}))

        def config_error(app: str) -> str | None:
            found = [p for p in pods(store, selector=f"app={app}") if waiting_reason(p) == "CreateContainerConfigError"]
            return found and found[0]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        assert "image has non-numeric user (appuser), cannot verify user is non-root" in wait_for(
            lambda: config_error("tts"), "the TTS config error")
        assert "container has runAsNonRoot and image will run as root" in wait_for(
            lambda: config_error("root"), "the root image's config error")
        wait_for(lambda: deployment_ready(store, "default", "uid"), "the numeric user's pod to run")


def test_deleting_a_deployment_removes_its_replica_sets_and_pods(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web", replicas=2))
        wait_for(lambda: deployment_ready(store, "default", "web"), "the deployment to be ready")
        store.delete(DEPLOYMENTS, "default", "web")
        wait_for(lambda: not store.list(REPLICASETS, "default") and not pods(store, selector="app=web"),
                 "replica sets and pods to be collected")


def test_deleting_a_namespace_removes_everything_in_it(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(NAMESPACES, namespace("speech"))
        wait_for(lambda: (store.get(NAMESPACES, None, "speech").get("status") or {}).get("phase") == "Active",
                 "the namespace to be Active")
        store.create(DEPLOYMENTS, deployment("web", namespace="speech"))
        store.create(JOBS, job("once", [PYTHON, "-c", "print('done')"], namespace="speech"))
        wait_for(lambda: deployment_ready(store, "speech", "web"), "the deployment to be ready")
        store.mutate(NAMESPACES, None, "speech", lambda ns: ns["metadata"].update(deletionTimestamp="2025-01-01T00:00:00Z"))
        wait_for(lambda: store.get(NAMESPACES, None, "speech") is None and not store.list(PODS, "speech")
                 and not store.list(JOBS, "speech"), "the namespace and its contents to go")


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_deleting_a_running_pod_stops_its_process(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        marker = tmp_path / "alive"
        code = f"import time, pathlib\nwhile True:\n    pathlib.Path({str(marker)!r}).touch(); time.sleep(0.05)\n"
        store.create(DEPLOYMENTS, deployment("loop", container={"command": [PYTHON, "-c", code]}))
        (pod,) = wait_for(lambda: ready_pods(store, "default", "app=loop", 1), "the process pod to run")
        wait_for(marker.exists, "the process to touch its marker")
        process = cluster.kubelet.runs[pod["metadata"]["uid"]].main[0].process
        store.delete(DEPLOYMENTS, "default", "loop")
        wait_for(lambda: process.poll() is not None, "the process to be stopped")


def test_deployment_that_cannot_progress_reports_progress_deadline_exceeded(tmp_path):
    with running_cluster(tmp_path, karpenter_nodepool=False) as cluster:
        store = cluster.store
        stuck = deployment("stuck", spec={"nodeSelector": {"node-type": "none-such"}})
        stuck["spec"]["progressDeadlineSeconds"] = 60
        store.create(DEPLOYMENTS, stuck)

        def progressing():
            cond = condition(store.get(DEPLOYMENTS, "default", "stuck"), "Progressing")
            return cond if cond and cond.get("reason") == "ProgressDeadlineExceeded" else None
        cond = wait_for(progressing, "ProgressDeadlineExceeded")
        assert cond["status"] == "False"
        assert cond["message"].startswith('ReplicaSet "stuck-') and cond["message"].endswith('" has timed out progressing.')
        available = condition(store.get(DEPLOYMENTS, "default", "stuck"), "Available")
        assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")


@pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet stand-in can switch users only when it runs as root")
def test_a_container_runs_as_its_effective_run_as_user_and_can_write_its_empty_dir(tmp_path):
    code = ("import os, pathlib, sys\npathlib.Path(sys.argv[1]).write_text('ok')\n"
            "print(os.getuid(), os.getgid(), pathlib.Path(sys.argv[1]).read_text())")
    with running_cluster(tmp_path) as cluster:
        cluster.store.create(JOBS, job("ids", ["python3", "-c", code, "/scratch/x"],
                                       container={"securityContext": {"runAsUser": 1001},
                                                  "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                                       spec={"securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
                                             "volumes": [{"name": "scratch", "emptyDir": {}}]}))
        wait_for(lambda: condition(cluster.store.get(JOBS, "default", "ids"), "Complete"), "job ids to complete")
        (pod,) = pods(cluster.store, selector="job-name=ids")
        assert cluster.pod_log_path("default", pod["metadata"]["name"], "main").read_text().split() == ["1001", "2000", "ok"]


def test_scaling_down_deletes_the_pod_with_the_lower_deletion_cost_before_the_newer_one(tmp_path):
    # Without a cost the newest pod goes first (controller_utils.go ActivePodsWithRanks); the
    # playbook's scale-down marks the leaving node's pods with a lower cost to choose them instead.
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web", replicas=1, strategy="RollingUpdate"))
        (old,) = wait_for(lambda: ready_pods(store, "default", "app=web", 1), "the first pod")
        time.sleep(1.1)  # creationTimestamp has whole seconds: the second pod must be strictly newer
        store.mutate(DEPLOYMENTS, "default", "web", lambda d: d["spec"].update(replicas=2))
        wait_for(lambda: ready_pods(store, "default", "app=web", 2), "the second pod")
        store.mutate(PODS, "default", old["metadata"]["name"], lambda p: p["metadata"].setdefault("annotations", {})
                     .update({"controller.kubernetes.io/pod-deletion-cost": "-1000"}))
        store.mutate(DEPLOYMENTS, "default", "web", lambda d: d["spec"].update(replicas=1))
        (kept,) = wait_for(lambda: (lambda live: live if len(live) == 1 else None)(
            [p for p in pods(store, selector="app=web") if not p["metadata"].get("deletionTimestamp")]),
            "the scale-down to one pod")
        assert kept["metadata"]["name"] != old["metadata"]["name"]


def python_pod_with_readiness(name: str, probe: dict, env: list[dict] | None = None) -> dict:
    """A Deployment whose container is a Python process, with `probe` as its exec readiness probe."""
    return deployment(name, image="python:3.11-slim", container={
        "command": ["python3", "-c", "import time; time.sleep(600)"], "env": env or [],
        "readinessProbe": {"exec": {"command": probe["command"]}, "periodSeconds": 1,
                           **{k: v for k, v in probe.items() if k != "command"}}})


def test_a_python_exec_probe_sees_the_containers_environment_and_its_exit_code_decides_readiness(tmp_path):
    flag = tmp_path / "ready-flag"
    check = "import os, sys; sys.exit(0 if os.path.exists(os.environ['READY_FLAG']) else 3)"
    with running_cluster(tmp_path / "cluster") as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, python_pod_with_readiness(
            "checked", {"command": ["python3", "-c", check]}, env=[{"name": "READY_FLAG", "value": str(flag)}]))
        wait_for(lambda: events(store, "checked-", reason="Unhealthy"), "a failed readiness probe while the flag is absent")
        assert not deployment_ready(store, "default", "checked")
        flag.write_text("")
        wait_for(lambda: deployment_ready(store, "default", "checked"), "readiness once the probe exits 0")


def test_a_python_exec_probe_that_outlives_its_timeout_fails_as_timed_out(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, python_pod_with_readiness(
            "slow", {"command": ["python3", "-c", "import time; time.sleep(60)"], "timeoutSeconds": 1}))
        failed = wait_for(lambda: events(store, "slow-", reason="Unhealthy"), "the probe's timeout", timeout=20)
        assert "command timed out" in failed[0]["message"] and "after 1s" in failed[0]["message"]
        assert not deployment_ready(store, "default", "slow")
