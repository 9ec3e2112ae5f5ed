"""files/check_model_manifest.py: the init-container guard that keeps pods off incomplete or stale weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox.hub import ASR_REPO, TTS_REPO
from tests.seed_helpers import (GUARD_SCRIPT, MANIFEST_NAME, flip_byte_keeping_mtime, guard_command, hub,  # noqa: F401
                                run_guard, run_seed)

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


def _audit(dest, repo, commit) -> dict:
    proc = subprocess.run([sys.executable, str(GUARD_SCRIPT), "--model-dir", str(dest), "--repo", repo,
                           "--commit", commit, "--audit"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [line for line in proc.stdout.splitlines() if line.startswith("MODEL-AUDIT ")][-1]
    return json.loads(line[len("MODEL-AUDIT "):])


def test_guard_blocks_a_flipped_byte_whose_size_and_mtime_were_kept(seeded_tts):
    hub, dest = seeded_tts
    flip_byte_keeping_mtime(dest / "model.safetensors")
    run = run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert run.returncode == 1
    assert "model.safetensors changed since it was verified" in run.output and FIX in run.output
    assert len(run.output.strip().splitlines()) == 1


def test_guard_hashes_nothing_when_no_file_changed_and_only_what_changed_otherwise(seeded_tts):
    hub, dest = seeded_tts
    commit = hub.commit_of(TTS_REPO)
    report = _audit(dest, TTS_REPO, commit)
    assert report["ok"] and report["rehashed"] == []
    os.chmod(dest / "config.json", 0o600)  # a change of ctime, not of content
    report = _audit(dest, TTS_REPO, commit)
    assert report["ok"] and report["rehashed"] == ["config.json"]
    assert run_guard(dest, TTS_REPO, commit).returncode == 0


def test_the_audit_lists_every_missing_truncated_and_corrupt_file_at_once(seeded_tts):
    hub, dest = seeded_tts
    flip_byte_keeping_mtime(dest / "model.safetensors")
    (dest / "speech_tokenizer" / "model.safetensors").unlink()
    vocab = dest / "vocab.json"
    vocab.write_bytes(vocab.read_bytes()[:10])
    report = _audit(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert not report["ok"] and report["manifest"] is None
    assert report["corrupt"] == ["model.safetensors"]
    assert report["missing"] == ["speech_tokenizer/model.safetensors"]
    assert report["truncated"] == ["vocab.json"]
    assert len(report["problems"]) == 3


@pytest.mark.parametrize("manifest_text, expected", [
    (None, "no completion manifest"),
    ("{not json", "unreadable completion manifest"),
    ('{"repo": "x", "files": [{"path": "config.json"}]}', "malformed file entry"),
])
def test_the_audit_reports_a_deleted_or_invalid_manifest(seeded_tts, manifest_text, expected):
    hub, dest = seeded_tts
    if manifest_text is None:
        (dest / MANIFEST_NAME).unlink()
    else:
        (dest / MANIFEST_NAME).write_text(manifest_text)
    report = _audit(dest, TTS_REPO, hub.commit_of(TTS_REPO))
    assert not report["ok"] and expected in report["manifest"]
    assert run_guard(dest, TTS_REPO, hub.commit_of(TTS_REPO)).returncode == 1


# ---- waiting for a seed: the serving pods are created while the models download ------------------

WAIT = ("--wait-seconds", "120", "--poll-seconds", "0.1", "--progress-seconds", "60")


def test_a_guard_started_before_the_seed_waits_saying_so_and_passes_once_the_seed_is_complete(hub, tmp_path):
    dest = tmp_path / "Qwen3-TTS-CustomVoice"
    commit = hub.commit_of(TTS_REPO)
    guard = subprocess.Popen(guard_command(dest, TTS_REPO, commit, *WAIT), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        first = guard.stdout.readline()
        assert "waiting for the seed" in first and "no model directory yet" in first and TTS_REPO in first
        assert guard.poll() is None
        seeded = run_seed(hub.url, TTS_REPO, commit, dest)
        assert seeded.returncode == 0, seeded.output
        rest, _ = guard.communicate(timeout=60)
    finally:
        if guard.poll() is None:
            guard.kill()
    assert guard.returncode == 0, first + rest
    assert "complete in " in rest.strip().splitlines()[-1]


def test_a_guard_waits_for_a_new_commit_over_a_stale_seed_but_not_for_damage_at_its_commit(seeded_tts):
    hub, dest = seeded_tts
    new = hub.inject("hub-new-revision", {"repo": TTS_REPO, "path": "config.json"})["commit"]
    waiting = run_guard(dest, TTS_REPO, new, "--wait-seconds", "1", "--poll-seconds", "0.1")
    assert waiting.returncode == 1
    assert "waiting for the seed" in waiting.output and "is there" in waiting.output
    assert "after waiting" in waiting.last_line and FIX in waiting.last_line
    flip_byte_keeping_mtime(dest / "model.safetensors")
    old = json.loads((dest / MANIFEST_NAME).read_text())["commit"]
    damaged = run_guard(dest, TTS_REPO, old, *WAIT)  # would wait two minutes if it waited at all
    assert damaged.returncode == 1 and "waiting" not in damaged.output
    assert "model.safetensors changed since it was verified" in damaged.output


def test_an_order_only_wait_goes_on_with_exit_0_when_the_model_before_never_comes(tmp_path):
    # The TTS seeding Job waits this way for ASR's seed: a failed ASR seed must not hold TTS's back.
    run = run_guard(tmp_path / "nothing-here", ASR_REPO, "a" * 40, "--wait-seconds", "0.3", "--poll-seconds", "0.1",
                    "--order-only")
    assert run.returncode == 0, run.output
    assert run.output.strip().splitlines()[-1].endswith("; going on")
    assert "waiting for the seed" in run.output
