"""What the operator sees: waits that show time, downloads that say stalled, retries that say what
they retry. Against real servers (the sandbox's API server, its Hub), never mocks."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from kubeops.client import KubeApiError, from_kubeconfig
from kubeops.kinds import Ref
from kubeops.waiter import WaitTimedOut, wait_until_ready
from sandbox.hub import ASR_REPO
from tests.seed_helpers import hub, seed_command, seed_env, wait_until  # noqa: F401 (fixture)

SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture
def kube(api_sandbox):
    return from_kubeconfig(str(api_sandbox.kubeconfig))


def _pvc(name: str) -> dict:
    # No storage controller runs in the API-only sandbox: the claim stays Pending for good.
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}


def test_a_wait_of_three_heartbeat_intervals_prints_three_heartbeats_with_elapsed_and_remaining_time(kube):
    kube.apply(_pvc("never-bound"), field_manager="test")
    lines: list[str] = []
    with pytest.raises(WaitTimedOut) as err:
        wait_until_ready(kube, Ref("v1", "PersistentVolumeClaim", "never-bound", "default"), timeout=3.5, poll=0.05,
                         progress=lines.append, heartbeat=1.0)
    beats = [line for line in lines if line.startswith("still waiting for PersistentVolumeClaim default/never-bound")]
    assert len(beats) == 3, lines
    for n, line in enumerate(beats, start=1):
        match = re.search(r": (\d+)s elapsed, (\d+)s left; unchanged for \d+s: .*phase Pending", line)
        assert match, line
        assert (int(match[1]), int(match[2])) in ((n, 4 - n), (n, 3 - n)), line  # rounded to whole seconds
    assert lines[0].endswith("waiting (phase Pending)") and len(lines) == 4, lines
    assert "was not ready after 4s" in str(err.value) or "after 3s" in str(err.value)


def test_a_heartbeat_follows_the_progress_interval_of_the_connection(kube):
    kube.apply(_pvc("slow"), field_manager="test")
    kube.progress_interval = 0.5
    lines: list[str] = []
    with pytest.raises(WaitTimedOut):
        wait_until_ready(kube, Ref("v1", "PersistentVolumeClaim", "slow", "default"), timeout=1.8, poll=0.05,
                         progress=lines.append)
    assert len([line for line in lines if line.startswith("still waiting for")]) == 3, lines


def test_a_request_retried_past_its_budget_says_what_it_retried(kube, api_sandbox):
    from sandbox.control import SandboxControl

    kube.retry.budget_seconds, kube.retry.first_delay, kube.retry.max_delay = 1.5, 0.1, 0.2
    kube.progress_interval = 0.5
    said: list[str] = []
    kube.on_retry = said.append
    SandboxControl(api_sandbox.root).fault("api-errors", codes=[503], count=1000, path="/api/v1/namespaces/default/configmaps")
    with pytest.raises(KubeApiError) as err:
        kube.get(Ref("v1", "ConfigMap", "anything", "default"))
    message = str(err.value)
    assert re.search(r"retried \d+ times over [12]s, api_retry_seconds 1.5: 503 x\d+", message), message
    assert said and all(line.startswith("still retrying GET /api/v1/namespaces/default/configmaps/anything: 503 x")
                        for line in said), said


def test_a_download_that_makes_no_progress_is_reported_as_stalled(hub, tmp_path):  # noqa: F811
    hub.inject("hub-cut", {"repo": ASR_REPO, "path": SHARD, "at_fraction": 0.5, "stall_seconds": 60})
    proc = subprocess.Popen(seed_command(sys.executable, ASR_REPO, hub.commit_of(ASR_REPO), tmp_path / "asr",
                                         "--progress-seconds", "0.2", "--stall-seconds", "1", "--workers", "1"),
                            env=seed_env(hub.url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        wait_until(lambda: _read_line(proc, seen) and "stalled since" in seen[-1], 30, "a stalled line")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        hub.inject("clear")
    line = seen[-1]
    assert re.search(r"stalled since \d\d:\d\d:\d\d UTC, no byte for \d+s; .* of .*files \d+/\d+ done", line), line
    assert "ETA" not in line  # a falling rate and a rising ETA are what made a stall hard to see


def _read_line(proc, seen: list[str]) -> bool:
    line = proc.stdout.readline()
    if line:
        seen.append(line.rstrip("\n"))
    return bool(line)


# ---- the sandbox CLI, as an operator types it -------------------------------------------------

def _sandbox_cli(root, *args: str, pipe_to: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sandbox", *args, "--dir", str(root)]
    if pipe_to:  # through a shell pipe that closes early, as `| head -1` does
        import shlex
        return subprocess.run(f"{shlex.join(command)} | {pipe_to}", shell=True, capture_output=True, text=True,
                              timeout=60, executable="/bin/bash")
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_sandbox_cli_answers_an_operators_mistakes_clearly(sandbox):
    # A crash loop for a Deployment that is not there (the namespace left out) fails, naming it.
    missing = _sandbox_cli(sandbox.root, "fault", "crash-loop", "deployment=qwen3-tts")
    assert missing.returncode == 1
    assert "no Deployment qwen3-tts in namespace default" in missing.stderr, missing.stderr
    # Missing parameters: which ones, and an example.
    bare = _sandbox_cli(sandbox.root, "fault", "image-pull-failure")
    assert bare.returncode == 1
    assert "needs deployment=NAME" in bare.stderr and "namespace=hosthree" in bare.stderr, bare.stderr
    # A reader that closes the pipe early gets no traceback.
    closed = _sandbox_cli(sandbox.root, "status", pipe_to="true")  # `true` exits before the first line
    assert "Traceback" not in closed.stderr and "BrokenPipe" not in closed.stderr, closed.stderr


def test_sandbox_up_with_other_options_than_the_running_one_refuses_and_says_how(sandbox):
    # The fixture's sandbox runs --fast with the default token_ttl; asking for another one is refused,
    # naming the option and the restart command, instead of "already runs" with the old options.
    other = _sandbox_cli(sandbox.root, "up", "--fast", "--options-json", '{"token_ttl": 61}')
    assert other.returncode == 1, other.stdout + other.stderr
    assert "token_ttl runs 900, asked 61" in other.stderr and "python -m sandbox down --dir" in other.stderr, \
        other.stderr
    # The same options as the running sandbox: it already runs, nothing to do.
    same = _sandbox_cli(sandbox.root, "up", "--fast")
    assert same.returncode == 0 and "already runs" in same.stdout, same.stdout + same.stderr


def _hub_main_commit(root) -> str:
    import json
    import urllib.request
    hub_url = json.loads((root / "state.json").read_text())["hub_url"]
    with urllib.request.urlopen(f"{hub_url}/api/models/{ASR_REPO}", timeout=10) as answer:
        return json.load(answer)["sha"]


def test_a_hub_revision_injected_before_down_is_gone_after_the_next_up(tmp_path):
    root = tmp_path / "sandbox"
    lean = ("--fast", "--without", "cluster", "--without", "aws")  # the Hub is what this is about
    try:
        assert _sandbox_cli(root, "up", *lean).returncode == 0
        generated = _hub_main_commit(root)
        injected = _sandbox_cli(root, "fault", "hub-new-revision", f"repo={ASR_REPO}")
        assert injected.returncode == 0, injected.stderr
        assert _hub_main_commit(root) != generated
        # Kept when asked: the injected commit is still main after the restart ...
        assert _sandbox_cli(root, "down", "--keep-hub-revisions").returncode == 0
        assert _sandbox_cli(root, "up", *lean).returncode == 0
        assert _hub_main_commit(root) != generated
        # ... and by default down/up starts from the generated commits.
        assert _sandbox_cli(root, "down").returncode == 0
        assert _sandbox_cli(root, "up", *lean).returncode == 0
        assert _hub_main_commit(root) == generated
    finally:
        _sandbox_cli(root, "down")


def test_the_seeders_closing_line_is_not_relayed_as_progress_since_the_summary_says_it():
    from tasks.models import _seed_line
    closing = ("[seed] Qwen/Qwen3-ASR-1.7B@2c656e3135b5: complete in /models/Qwen3-ASR-1.7B: 12 files, 1.96 MB; "
               "downloaded 1.96 MB in 2s (1.12 MB/s), 12 files fetched, 0 kept, 0 B re-hashed from disk")
    assert _seed_line(closing) == "finished, reading the result"
    assert _seed_line("[seed] Qwen/Qwen3-ASR-1.7B@2c656e3135b5: fetching 12 files (1.96 MB)") == \
        "Qwen/Qwen3-ASR-1.7B@2c656e3135b5: fetching 12 files (1.96 MB)"
