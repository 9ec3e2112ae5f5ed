"""The seeder under huggingface_hub 0.36.2 (what the ASR and TTS images carry, transformers 4.57)."""

from __future__ import annotations

import signal
import subprocess

from sandbox.hub import ASR_REPO, TTS_REPO
from tests.seed_helpers import (CHUNK, REPOS, assert_seeded, hub, hub036_python, run_seed, seed_command,  # noqa: F401
                                seed_env, wait_until)

SHARD = "model-00001-of-00002.safetensors"


def test_hub036_venv_really_has_huggingface_hub_036(hub036_python):
    probe = "import sys, huggingface_hub; print(huggingface_hub.__version__, sys.version_info[:2] <= (3, 11))"
    version = subprocess.run([hub036_python, "-c", probe], capture_output=True, text=True, timeout=60).stdout.split()
    assert version == ["0.36.2", "True"]


def test_fresh_seed_of_both_models_with_huggingface_hub_036(hub, tmp_path, hub036_python):
    for repo in (ASR_REPO, TTS_REPO):
        dest = tmp_path / REPOS[repo]
        run = run_seed(hub.url, repo, "main", dest, python=hub036_python)
        assert run.returncode == 0, run.output
        assert "huggingface_hub 0.36.2" in run.output
        assert_seeded(hub, repo, dest)
        rerun = run_seed(hub.url, repo, hub.commit_of(repo), dest, python=hub036_python)
        assert rerun.returncode == 0 and rerun.result["fast_path"] and rerun.result["downloaded_bytes"] == 0


def test_killed_seed_resumes_with_huggingface_hub_036(hub, tmp_path, hub036_python):
    dest = tmp_path / "asr"
    commit = hub.commit_of(ASR_REPO)
    size = hub.files_at(ASR_REPO)[SHARD].size
    hub.inject("hub-cut", {"repo": ASR_REPO, "path": SHARD, "at_fraction": 0.5, "stall_seconds": 60})
    proc = subprocess.Popen(seed_command(hub036_python, ASR_REPO, commit, dest), env=seed_env(hub.url),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        part = dest / ".seed" / (SHARD + ".part")
        wait_until(lambda: part.exists() and part.stat().st_size >= size // 2 - CHUNK, 60, "half the shard on disk")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    hub.inject("clear")
    rerun = run_seed(hub.url, ASR_REPO, commit, dest, python=hub036_python)
    assert rerun.returncode == 0, rerun.output
    assert_seeded(hub, ASR_REPO, dest)
    assert 0 <= hub.bytes_served[f"{ASR_REPO}/{SHARD}"] - size <= CHUNK


def test_gated_repo_and_unknown_revision_messages_with_huggingface_hub_036(hub, tmp_path, hub036_python):
    hub.require_token(ASR_REPO, "hf_sandbox_right_token", mode="gated")
    gated = run_seed(hub.url, ASR_REPO, "main", tmp_path / "a", python=hub036_python, token="hf_sandbox_wrong")
    assert gated.returncode == 3, gated.output
    assert "HTTP 403" in gated.last_line and "hf_token_secret" in gated.last_line
    missing = run_seed(hub.url, TTS_REPO, "v9.9", tmp_path / "b", python=hub036_python)
    assert missing.returncode == 4, missing.output
    assert "revision 'v9.9'" in missing.last_line
