"""files/check_model_manifest.py: the init-container guard that keeps pods off incomplete or stale weights."""

from __future__ import annotations

import json

import pytest

from sandbox.hub import ASR_REPO, TTS_REPO
from tests.seed_helpers import MANIFEST_NAME, hub, run_guard, run_seed  # noqa: F401

FIX = "pyinfra INVENTORY deploy.py"


@pytest.fixture
def seeded_tts(hub, tmp_path):
    dest = tmp_path / "Qwen3-TTS-CustomVoice"
    run = run_seed(hub.url, TTS_REPO, hub.commit_of(TTS_REPO), dest)
    assert run.returncode == 0, run.output
    return hub, dest


def test_guard_passes_on_a_complete_seed_of_the_wanted_commit(seeded_tts):
    hub, dest = seeded_tts
    run = run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert run.returncode == 0, run.output
    assert "complete" in run.output and len(run.output.strip().splitlines()) == 1


def test_guard_blocks_when_the_manifest_is_missing(seeded_tts):
    hub, dest = seeded_tts
    (dest / MANIFEST_NAME).unlink()
    run = run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert run.returncode == 1
    assert TTS_REPO in run.output and "no completion manifest" in run.output and FIX in run.output
    assert len(run.output.strip().splitlines()) == 1


def test_guard_blocks_a_stale_commit_naming_both(seeded_tts):
    hub, dest = seeded_tts
    old = hub.commit_of(TTS_REPO)
    new = hub.inject("hub-new-revision", {"repo": TTS_REPO, "path": "config.json"})["commit"]
    run = run_guard(dest, TTS_REPO, new)
    assert run.returncode == 1
    assert f"commit {old} is in" in run.output and f"wants {new}" in run.output and FIX in run.output


def test_guard_blocks_a_missing_file(seeded_tts):
    hub, dest = seeded_tts
    (dest / "speech_tokenizer" / "model.safetensors").unlink()
    run = run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert run.returncode == 1
    assert "speech_tokenizer/model.safetensors is missing" in run.output and FIX in run.output


def test_guard_blocks_a_truncated_file(seeded_tts):
    hub, dest = seeded_tts
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    run = run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert run.returncode == 1
    assert "model.safetensors has 1000 bytes" in run.output


def test_guard_blocks_another_models_directory(seeded_tts):
    hub, dest = seeded_tts
    run = run_guard(dest, ASR_REPO, hub.commit_of(TTS_REPO))
    assert run.returncode == 1
    assert f"holds {TTS_REPO}, not {ASR_REPO}" in run.output


def test_guard_blocks_a_directory_that_does_not_exist(tmp_path):
    run = run_guard(tmp_path / "nothing-here", ASR_REPO, "a" * 40)
    assert run.returncode == 1
    assert "does not exist" in run.output and FIX in run.output


def test_guard_blocks_a_corrupt_manifest(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    run = run_guard(tmp_path, ASR_REPO, "a" * 40)
    assert run.returncode == 1
    assert "unreadable completion manifest" in run.output


def test_guard_never_touches_the_network_or_writes(seeded_tts):
    hub, dest = seeded_tts
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    hub.reset_stats()
    assert run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO)).returncode == 0
    assert hub.requests == []
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before
    assert json.loads((dest / MANIFEST_NAME).read_text())["commit"] == hub.commit_of(TTS_REPO)
