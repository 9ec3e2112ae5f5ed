"""Who may write and when a run stops: Ctrl-C, and one deploy at a time per cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from kubernetes import client

from tests.deploy_helpers import ROOT, assert_ok, deploy, output, run_pyinfra, writes

LEASE = ("qwen3-speech-deploy", "kube-system")


def start_deploy(sandbox, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update(QWEN3_SANDBOX_DIR=str(sandbox.root), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "pyinfra", "-y", "inventories/sandbox.py", "deploy.py", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(run: subprocess.Popen, text: str) -> str:
    """The run's output up to the first line containing `text` (the run keeps going)."""
    seen = []
    assert run.stdout is not None
    for line in run.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never came; the run ended with {run.wait()}:\n" + "".join(seen)[-4000:])


def asr_args(sandbox) -> list[str]:
    asr = client.AppsV1Api(sandbox.control.kube_api_client()).read_namespaced_deployment("qwen3-asr", "hosthree")
    return asr.spec.template.spec.containers[0].args


def hold_lease(sandbox, holder: str, renewed_ago: timedelta, lease_seconds: int = 60) -> None:
    """Make the deploy lock look held by another run, renewed `renewed_ago`, for `lease_seconds`."""
    stamp = (datetime.now(timezone.utc) - renewed_ago).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": LEASE[0], "namespace": LEASE[1]},
             "spec": {"holderIdentity": holder, "leaseDurationSeconds": lease_seconds, "acquireTime": stamp, "renewTime": stamp}}
    client.CoordinationV1Api(sandbox.control.kube_api_client()).create_namespaced_lease(LEASE[1], lease)


def test_ctrl_c_during_the_asr_wait_ends_the_run_with_130_writes_nothing_more_and_a_rerun_converges(make_sandbox):
    sandbox = make_sandbox(cluster_overrides={"model_load": 4})
    run = start_deploy(sandbox)
    before = read_until(run, "5. ASR: qwen3-asr-")  # the wait's first progress line
    mark = sandbox.control.audit_mark()
    run.send_signal(signal.SIGINT)
    rest, _ = run.communicate(timeout=60)
    text = before + rest
    assert run.returncode == 130, text[-4000:]
    assert "Interrupted (Ctrl-C) during 5. ASR" in rest and "a rerun resumes" in rest
    assert "Exiting upon user request" not in text and "6. TTS" not in rest
    # Only the deploy lock is given back (so the rerun need not wait for it to expire).
    after = [r for r in writes(sandbox.control.audit_since(mark)) if r["resource"] != "leases"]
    assert after == []
    # The overlapped order applied TTS with ASR, before the waits; the interrupted run waited for neither.
    assert client.AppsV1Api(sandbox.control.kube_api_client()).list_namespaced_deployment(
        "hosthree", field_selector="metadata.name=qwen3-tts").items
    rerun = deploy(sandbox)
    assert_ok(rerun)
    assert "8. verify: ASR /health: 200" in output(rerun)


def test_a_second_deploy_while_one_runs_stops_naming_the_holder_and_only_the_first_ones_values_go_live(make_sandbox):
    sandbox = make_sandbox(cluster_overrides={"model_load": 4})
    first = start_deploy(sandbox)
    before = read_until(first, "5. ASR: qwen3-asr-")
    # Hold the first run still while the second one runs, however long the second takes to start.
    first.send_signal(signal.SIGSTOP)
    mark = sandbox.control.audit_mark()
    try:
        second = deploy(sandbox, "--data", "asr_max_model_len=8192")
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode != 0, output(second)
    assert "another deploy holds the lock Lease kube-system/qwen3-speech-deploy" in output(second)
    assert f"pid {first.pid} (sandbox), since 20" in output(second)
    assert not [r for r in writes(sandbox.control.audit_since(mark)) if r["path"].endswith("/deployments/qwen3-asr")]
    rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0, (before + rest)[-4000:]
    assert "--max-model-len" in asr_args(sandbox) and "4096" in asr_args(sandbox)
    assert "8192" not in asr_args(sandbox)


def test_a_held_lock_stops_a_deploy_but_not_a_dry_run_and_an_expired_one_is_taken_over(make_sandbox):
    sandbox = make_sandbox()
    # Renewed now, for an hour: still held however slowly this machine runs the two runs below.
    hold_lease(sandbox, "alice@laptop pid 4242 (production)", renewed_ago=timedelta(0), lease_seconds=3600)
    mark = sandbox.control.audit_mark()
    dry = run_pyinfra(sandbox, "deploy.py", "--dry")
    assert_ok(dry)
    blocked = deploy(sandbox)
    assert blocked.returncode != 0
    assert "alice@laptop pid 4242 (production), since" in output(blocked) and "nothing was written" in output(blocked)
    assert [r["resource"] for r in writes(sandbox.control.audit_since(mark))] == []

    leases = client.CoordinationV1Api(sandbox.control.kube_api_client())
    leases.delete_namespaced_lease(*LEASE)
    hold_lease(sandbox, "alice@laptop pid 4242 (production)", renewed_ago=timedelta(minutes=5))  # alice's run died
    taken = deploy(sandbox)
    assert_ok(taken)
    assert "took over the deploy lock from alice@laptop pid 4242 (production)" in output(taken)
    released = leases.read_namespaced_lease(*LEASE).spec
    assert not released.holder_identity and released.lease_transitions == 1  # given back at the end of the run
