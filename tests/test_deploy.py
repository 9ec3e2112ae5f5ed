"""The playbook end to end: `pyinfra inventories/sandbox.py deploy.py`, as an operator runs it."""

from __future__ import annotations

import pytest

from tests.deploy_helpers import (assert_asr_loaded_before_tts, assert_ok, changed_operations, deploy, deployed,  # noqa: F401
                                  output, run_pyinfra, writes)


def diff_changes(text: str) -> list[tuple[str, str]]:
    """The added and removed lines of every unified diff in pyinfra's output: (marker, content)."""
    found, column = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("@@"):
            column = len(line) - len(stripped)
            continue
        if column is None or len(line) <= column or line[:column].strip():
            column = None if line.strip() and line[:column or 0].strip() else column
            continue
        marker = line[column]
        if marker in "+-":
            found.append((marker, line[column + 1:].strip()))
    return found


def _paths(records, verb=None, contains=""):
    return [r["path"] for r in records if (verb is None or r["verb"] == verb) and contains in r["path"]]


def _first_index(records, predicate):
    return next((i for i, r in enumerate(records) if predicate(r)), None)


def test_deploy_converges_on_a_fresh_sandbox_with_asr_loaded_before_tts_and_a_second_run_writes_nothing(sandbox):
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox)
    assert_ok(result)
    text = output(result)
    assert "Deployment hosthree/qwen3-asr is ready" in text
    assert "round trip" in text and "TTS URL: http://" in text
    # The summary says how to call both services from here: the sandbox ALB's local listeners.
    assert "curl -s http://127.0.0.1:" in text and "/v1/audio/speech" in text and "-F file=@/tmp/speech.wav" in text
    assert "SEED-RESULT" not in text and "ASR @" in text and "12 files, 1.96 MB in /models/Qwen3-ASR-1.7B verified" in text
    too_long = [line for line in text.splitlines() if len(line) > 160 and "curl " not in line]
    assert not too_long, too_long
    # Verify also went through the ALB's listeners (state.json), long synthesis included.
    assert "through the ALB: round trip tts-1/Vivian" in text and "through the ALB: round trip tts-1-en/Ryan" in text
    assert "-character synthesis answered 200" in text
    assert set(sandbox.state["alb_listeners"]) == {"8000", "8880"}
    records = sandbox.control.audit_since(mark)
    tts_created = _first_index(records, lambda r: r["verb"] in ("create", "patch") and not r.get("dry_run")
                               and r["path"].endswith("/deployments/qwen3-tts"))
    asr_created = _first_index(records, lambda r: r["verb"] in ("create", "patch") and not r.get("dry_run")
                               and r["path"].endswith("/deployments/qwen3-asr"))
    assert asr_created is not None and tts_created is not None and asr_created < tts_created
    # Both are applied at once (deploy_order overlapped); ASR still loads first: TTS starts once ASR is
    # Ready (the guide's sequential order: tests/test_deploy_order.py).
    kube = sandbox.control.kube_api_client()
    from kubernetes import client

    (asr_pod,) = client.CoreV1Api(kube).list_namespaced_pod("hosthree", label_selector="app.kubernetes.io/name=qwen3-asr").items
    assert_asr_loaded_before_tts(client.CoreV1Api(kube), asr_pod.spec.node_name)
    # Step 1 found the static device plugin's DaemonSet and the node advertises 2 time-sliced GPUs
    # (the other owners are tests/test_device_plugin_setups.py).
    assert "device plugin: DaemonSet kube-system/nvidia-device-plugin-daemonset" in text
    gpus = [n.status.allocatable.get("nvidia.com/gpu") for n in client.CoreV1Api(kube).list_node(label_selector="node-type=gpu").items]
    assert gpus == ["2"]

    # A second run on the converged sandbox reports no changes and writes nothing.
    mark = sandbox.control.audit_mark()
    again = deploy(sandbox)
    assert_ok(again)
    assert writes(sandbox.control.audit_since(mark)) == []
    assert changed_operations(output(again)) == 0


def test_dry_run_diff_of_a_changed_value_shows_just_that_field_then_the_run_changes_just_that_object(deployed):
    mark = deployed.control.audit_mark()
    dry = run_pyinfra(deployed, "deploy.py", "--dry", "--diff", "--data", "asr_max_model_len=8192")
    assert_ok(dry)
    text = output(dry)
    assert writes(deployed.control.audit_since(mark)) == []
    assert "Will change" in text and "Deployment hosthree/qwen3-asr" in text
    changed_lines = diff_changes(text)
    assert changed_lines == [("-", "- '4096'"), ("+", "- '8192'")], changed_lines
    assert text.count("Will change") == 1 and "Will create" not in text

    mark = deployed.control.audit_mark()
    assert_ok(deploy(deployed, "--data", "asr_max_model_len=8192"))
    written = {r["path"] for r in writes(deployed.control.audit_since(mark))}
    # Besides the one object, only the deploy lock (tasks/lock.py) is written: taken at the first write.
    lock = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/qwen3-speech-deploy"
    assert written - {lock} == {"/apis/apps/v1/namespaces/hosthree/deployments/qwen3-asr"}


def test_rerun_after_spot_interruption_converges_without_reseeding_models(deployed):
    # The replacement joins later than the rerun takes to plan step 5 (about 6 s of pyinfra start and
    # preflight here), so the rerun finds ASR down and waits for the new node; and early enough that
    # ASR is back (about 3.5 s after the join) within its progress deadline (1800 s, 18 s in fast mode).
    fault = deployed.control.fault("spot-interruption", replacement_delay=9)["result"]
    mark = deployed.control.audit_mark()
    result = deploy(deployed)
    assert_ok(result)
    records = deployed.control.audit_since(mark)
    assert not _paths(writes(records), contains="/jobs"), "a seeding Job was created again"
    assert "Deployment hosthree/qwen3-asr is ready" in output(result)  # it had to wait for the new node
    assert f"Running on {fault['replacement']}" in output(result)


@pytest.mark.parametrize("left_out, expected", [
    ("device-plugin", "NVIDIA device plugin"),
    ("efs-csi-driver", "EFS CSI driver"),
    ("alb-controller", "IngressClass 'alb'"),
    ("gpu-node,karpenter-nodepool", "GPU capacity"),
])
def test_a_missing_prerequisite_stops_the_run_with_its_name_and_nothing_written(make_sandbox, left_out, expected):
    sandbox = make_sandbox(**{name.replace("-", "_"): False for name in left_out.split(",")})
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox)
    assert result.returncode != 0
    assert expected in output(result) and "nothing was changed" in output(result)
    assert writes(sandbox.control.audit_since(mark)) == []


@pytest.mark.parametrize("data, expected", [
    ("time_slicing_replicas=0", "time_slicing_replicas = 0: must be an integer from 1 to 32"),
    ("asr_gpu_memory_utilization=1.5", "asr_gpu_memory_utilization = 1.5: must be a number between 0 and 1"),
    ("asr_gpu_memory_utilization=0.75", "tts_gpu_memory_gib = 4.8: ASR takes asr_gpu_memory_utilization 0.75"),
    ("asr_max_model_len=-4", "asr_max_model_len = -4: must be an integer from 1 to 128000"),
    ("namespace=Bad_Name", "namespace = 'Bad_Name': must be a DNS-1123 label"),
    ("asr_image=not an image", "asr_image = 'not an image': must be an image reference"),
    ("asr_max_model_length=8192", "asr_max_model_length: unknown key"),
])
def test_bad_inventory_data_is_rejected_before_the_first_api_call(sandbox, data, expected):
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox, "--data", data)
    assert result.returncode != 0
    assert expected in output(result)
    assert sandbox.control.audit_since(mark) == []


def test_transient_api_errors_are_retried_and_do_not_fail_the_run(sandbox):
    sandbox.control.fault("api-errors", codes=[503, 429, 500], count=6, retry_after=0)
    sandbox.control.fault("api-drop", count=3)
    mark = sandbox.control.audit_mark()
    assert_ok(deploy(sandbox))
    assert any(r["code"] in (429, 500, 503) for r in sandbox.control.audit_since(mark))


@pytest.mark.parametrize("code, reason", [(403, "Forbidden"), (422, "Invalid")])
def test_a_real_api_error_stops_the_run_with_the_servers_message_and_the_objects_name(deployed, code, reason):
    deployed.control.fault("api-errors", codes=[code], count=50, path="/deployments/qwen3-asr")
    result = deploy(deployed, "--data", "asr_max_model_len=8192")
    assert result.returncode != 0
    text = output(result)
    assert f"5. ASR: GET /apis/apps/v1/namespaces/hosthree/deployments/qwen3-asr: {code} {reason}" in text, text[-3000:]
    assert "internal exception" not in text and "Traceback" not in text


def test_spot_interruption_during_the_asr_wait_still_converges(make_sandbox):
    import subprocess
    import sys
    import time

    from kubernetes import client

    from tests.deploy_helpers import ROOT

    sandbox = make_sandbox(cluster_overrides={"model_load": 4})
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env["QWEN3_SANDBOX_DIR"] = str(sandbox.root)
    run = subprocess.Popen([sys.executable, "-m", "pyinfra", "-y", "inventories/sandbox.py", "deploy.py"], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    core = client.CoreV1Api(sandbox.control.kube_api_client())
    deadline = time.monotonic() + 120
    interrupted = None
    while time.monotonic() < deadline and run.poll() is None:
        pods = core.list_namespaced_pod("hosthree", label_selector="app.kubernetes.io/name=qwen3-asr").items \
            if core.list_namespace(field_selector="metadata.name=hosthree").items else []
        if any(p.spec.node_name and p.status.phase == "Running" for p in pods):
            interrupted = sandbox.control.fault("spot-interruption", replacement_delay=1)
            break
        time.sleep(0.2)
    text, _ = run.communicate(timeout=300)
    assert interrupted is not None, "the ASR pod never started running:\n" + text[-3000:]
    assert run.returncode == 0, text[-6000:]
    assert "Deployment hosthree/qwen3-asr is ready" in text
    asr = [p for p in core.list_namespaced_pod("hosthree", label_selector="app.kubernetes.io/name=qwen3-asr").items]
    assert asr and all(p.spec.node_name == interrupted["result"]["replacement"] for p in asr)


def test_an_unschedulable_pod_fails_the_wait_quoting_the_schedulers_reason(sandbox):
    # More CPU than the GPU node has (g4dn.xlarge: 4 vCPUs); the TTS pod needs the ASR pod's node,
    # so Karpenter leaves it to the scheduler, whose reason the wait quotes.
    result = deploy(sandbox, "--data", "tts_cpu=6")
    assert result.returncode != 0
    text = output(result)
    assert "6. TTS" in text and "cannot be scheduled" in text and "Insufficient cpu" in text


def test_an_image_pull_failure_fails_the_asr_wait_with_the_kubelets_reason(sandbox):
    sandbox.control.fault("image-pull-failure", namespace="hosthree", deployment="qwen3-asr")
    result = deploy(sandbox)
    assert result.returncode != 0
    assert "5. ASR" in output(result) and ("ImagePullBackOff" in output(result) or "ErrImagePull" in output(result))


def test_a_crash_loop_fails_the_asr_wait_with_the_containers_last_words(sandbox):
    sandbox.control.fault("crash-loop", namespace="hosthree", deployment="qwen3-asr")
    result = deploy(sandbox)
    assert result.returncode != 0
    assert "CrashLoopBackOff" in output(result)
