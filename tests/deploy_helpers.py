"""Run the real playbook (the pyinfra CLI, as an operator runs it) against a sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def run_pyinfra(sandbox, deploy_file: str = "deploy.py", *args: str, timeout: float = 300,
                env: dict | None = None, inventory: str = "inventories/sandbox.py") -> subprocess.CompletedProcess:
    """`pyinfra INVENTORY <deploy_file> ARGS`, pointed at this test's sandbox."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    full_env.update({"QWEN3_SANDBOX_DIR": str(sandbox.root), "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyinfra", inventory, deploy_file, *args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def deploy(sandbox, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_pyinfra(sandbox, "deploy.py", "-y", *args, **kwargs)


# Reviews are POSTs that store nothing (preflight asks them: tasks/permissions.py).
REVIEW_RESOURCES = {"selfsubjectrulesreviews", "selfsubjectaccessreviews", "selfsubjectreviews"}


def writes(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("verb") in WRITE_VERBS and not r.get("dry_run")
            and r.get("resource") not in REVIEW_RESOURCES]


def managed_objects(records: list[dict]) -> set[str]:
    """The objects a full deploy manages: the paths it applied (server-side apply, not a dry run), its
    seeding Jobs aside (they run once per model commit; a rerun does not look at them)."""
    return {r["path"] for r in records if r.get("verb") == "patch" and r.get("fieldManager")
            and not r.get("dry_run") and r.get("resource") != "jobs"}


def creations(records: list[dict], resource: str) -> list[dict]:
    """The requests that created an object of `resource` (plural, e.g. "jobs"): a POST or an apply, answered 201."""
    return [r for r in writes(records) if r.get("resource") == resource and r.get("code") == 201]


def changed_operations(text: str) -> int:
    """The Success column of pyinfra's results table: operations that changed something."""
    for line in text.splitlines():
        if line.strip().startswith("Grand total"):
            success = line.split()[3]
            return 0 if success == "-" else int(success)
    raise AssertionError("no results table in the output:\n" + text[-3000:])


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, output(result)[-6000:]


@pytest.fixture
def deployed(sandbox):
    """A sandbox with the whole deploy converged once, for one test that may change it."""
    result = deploy(sandbox)
    assert_ok(result)
    return sandbox


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """One converged sandbox shared by a module's tests that only read it (a deploy costs ~10 s).

    Its tests must leave it as they found it: at the end, any write since the deploy fails the module,
    so a test that changes the sandbox is caught and moved to `deployed`. Mark the module's tests that
    use it with `pytest.mark.xdist_group` so they share one worker, and one deploy, under `-n`.
    """
    from sandbox.fixtures import start_sandbox_process

    handle = start_sandbox_process(tmp_path_factory.mktemp("converged"))
    try:
        assert_ok(deploy(handle))
        mark = handle.control.audit_mark()
        yield handle
        written = [f"{r['verb']} {r['path']}" for r in writes(handle.control.audit_since(mark))
                   if not r["path"].endswith("/leases/qwen3-speech-deploy")]
        assert not written, f"tests sharing the converged sandbox wrote to it: {written}"
    finally:
        handle.stop()


def serving_pods(core, app: str) -> list:
    """The pods of qwen3-asr or qwen3-tts, through the official client."""
    return core.list_namespaced_pod("hosthree", label_selector=f"app.kubernetes.io/name={app}").items


def ready_at(pod):
    return next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready" and c.status == "True")


def _started_at(pod, container: str):
    return next(s.state.running.started_at for s in pod.status.container_statuses if s.name == container)


def assert_asr_loaded_before_tts(core, node: str) -> None:
    """Both Ready on `node`, ASR never restarted (a TTS load during its start would make it exit),
    and the TTS server started only once ASR on that node was Ready."""
    (asr,) = [p for p in serving_pods(core, "qwen3-asr") if not p.metadata.deletion_timestamp]
    (tts,) = [p for p in serving_pods(core, "qwen3-tts") if not p.metadata.deletion_timestamp]
    assert asr.spec.node_name == tts.spec.node_name == node
    assert all(s.restart_count == 0 for s in asr.status.container_statuses)
    assert ready_at(asr) <= _started_at(tts, "tts")
    waited = core.read_namespaced_pod_log(tts.metadata.name, "hosthree", container="wait-for-asr")
    assert "ASR on this node is ready" in waited
