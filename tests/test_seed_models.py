"""files/seed_models.py against the sandbox hub, run as the seeding Job runs it (a subprocess with HF_ENDPOINT)."""

from __future__ import annotations

import ast
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from sandbox.hub import ASR_REPO, TTS_REPO
from tests.seed_helpers import (CHUNK, MANIFEST_NAME, REPOS, SEED_SCRIPT, assert_seeded,  # noqa: F401
                                flip_byte_keeping_mtime, hub, manifest_of, run_seed, seed_command, seed_env,
                                wait_until)

SHARD = "model-00001-of-00002.safetensors"


def seeded(hub, tmp_path, repo=ASR_REPO, *extra):
    dest = tmp_path / "models" / REPOS[repo]
    run = run_seed(hub.url, repo, hub.commit_of(repo), dest, *extra)
    assert run.returncode == 0, run.output
    return dest, run


def test_fresh_seed_of_both_models_is_verified_and_has_manifests(hub, tmp_path):
    for repo in (ASR_REPO, TTS_REPO):
        dest, run = seeded(hub, tmp_path, repo)
        manifest = assert_seeded(hub, repo, dest)
        assert run.result["ok"] and run.result["downloaded_bytes"] == manifest["total_bytes"]
        assert run.last_line.startswith("SEED-RESULT ")
    assert (tmp_path / "models" / REPOS[TTS_REPO] / "speech_tokenizer" / "model.safetensors").is_file()
    assert hub.total_bytes_served() == sum(b.size for r in (ASR_REPO, TTS_REPO) for b in hub.files_at(r).values())


def test_rerun_on_complete_seed_downloads_nothing_and_hashes_nothing(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    manifest_before = (dest / MANIFEST_NAME).read_bytes()
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert run.result["fast_path"] is True
    assert run.result["downloaded_bytes"] == 0 and run.result["hashed_bytes"] == 0
    assert hub.requests == [], "a rerun at a pinned commit should not even ask the hub"
    assert (dest / MANIFEST_NAME).read_bytes() == manifest_before
    assert not (dest / ".qwen3-seed.lock").exists()


def test_rerun_with_a_branch_asks_the_hub_once_and_downloads_nothing(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, "main", dest)
    assert run.returncode == 0, run.output
    assert run.result["fast_path"] is True and run.result["hashed_bytes"] == 0
    assert hub.total_bytes_served() == 0
    assert [r["path"] for r in hub.requests] == [f"/api/models/{ASR_REPO}/revision/main"]


def test_verify_full_rehashes_everything_and_downloads_nothing(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, "--verify", "full")
    assert run.returncode == 0, run.output
    assert run.result["hashed_bytes"] == manifest_of(dest)["total_bytes"]
    assert run.result["downloaded_bytes"] == 0 and hub.total_bytes_served() == 0


def test_cut_in_the_middle_of_a_shard_is_resumed_by_the_rerun(hub, tmp_path):
    dest = tmp_path / "asr"
    commit = hub.commit_of(ASR_REPO)
    size = hub.files_at(ASR_REPO)[SHARD].size
    # half the shard arrives, then every resume attempt is cut at once: the run gives up (exit 8)
    hub.inject("hub-cut", {"repo": ASR_REPO, "path": SHARD, "at_fraction": 0.5})
    hub.inject("hub-cut", {"repo": ASR_REPO, "path": SHARD, "at_fraction": 0.0, "count": 10})
    first = run_seed(hub.url, ASR_REPO, commit, dest)
    assert first.returncode == 8, first.output
    assert "rerun to resume" in first.last_line
    assert not (dest / MANIFEST_NAME).exists()
    part = dest / ".seed" / (SHARD + ".part")
    assert part.stat().st_size == size // 2
    hub.inject("clear")
    second = run_seed(hub.url, ASR_REPO, commit, dest)
    assert second.returncode == 0, second.output
    assert_seeded(hub, ASR_REPO, dest)
    assert "resuming at" in second.output
    refetched = hub.bytes_served[f"{ASR_REPO}/{SHARD}"] - size
    assert 0 <= refetched <= CHUNK


def test_seeder_killed_mid_shard_resumes_and_refetches_at_most_one_chunk(hub, tmp_path):
    dest = tmp_path / "asr"
    commit = hub.commit_of(ASR_REPO)
    size = hub.files_at(ASR_REPO)[SHARD].size
    hub.inject("hub-cut", {"repo": ASR_REPO, "path": SHARD, "at_fraction": 0.5, "stall_seconds": 60})
    proc = subprocess.Popen(seed_command(sys.executable, ASR_REPO, commit, dest, "--progress-seconds", "0.05"),
                            env=seed_env(hub.url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        part = dest / ".seed" / (SHARD + ".part")
        wait_until(lambda: part.exists() and part.stat().st_size >= size // 2 - CHUNK, 60, "half the shard on disk")
        time.sleep(0.2)  # let a progress line or two out; correctness does not depend on it
    finally:
        proc.send_signal(signal.SIGKILL)  # a Spot interruption gives no chance to clean up
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert " of " in output and "/s, ETA " in output, f"no progress line:\n{output}"
    hub.inject("clear")
    rerun = run_seed(hub.url, ASR_REPO, commit, dest)
    assert rerun.returncode == 0, rerun.output
    assert_seeded(hub, ASR_REPO, dest)
    refetched = hub.bytes_served[f"{ASR_REPO}/{SHARD}"] - size
    assert 0 <= refetched <= CHUNK


def test_corrupted_byte_on_disk_is_detected_and_repaired(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    shard = dest / SHARD
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))  # same size, new mtime
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert run.result["fetched"] == [SHARD]
    assert run.result["hashed_bytes"] == len(data), "only the changed file should be hashed"
    assert_seeded(hub, ASR_REPO, dest)


def test_a_flipped_byte_with_size_and_mtime_kept_is_found_by_a_plain_rerun_and_only_that_file_fetched(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    shard = dest / SHARD
    stat = shard.stat()
    flip_byte_keeping_mtime(shard)
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert not run.result["fast_path"] and run.result["fetched"] == [SHARD]
    assert run.result["hashed_bytes"] == stat.st_size, "only the file whose ctime changed is hashed"
    assert hub.bytes_served == {f"{ASR_REPO}/{SHARD}": stat.st_size}
    assert_seeded(hub, ASR_REPO, dest)
    rerun = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert rerun.result["fast_path"] and rerun.result["hashed_bytes"] == 0


def test_a_reseed_never_certifies_a_file_it_did_not_verify(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    shard = dest / SHARD
    stat = shard.stat()
    with open(shard, "r+b") as handle:
        handle.seek(5000)
        handle.write(b"\0" * 8)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (dest / MANIFEST_NAME).unlink()  # no manifest to compare with: every kept file must be hashed
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert run.result["fetched"] == [SHARD]
    assert run.result["hashed_bytes"] == manifest_of(dest)["total_bytes"]
    assert_seeded(hub, ASR_REPO, dest)
    for entry in manifest_of(dest)["files"]:
        st = (dest / entry["path"]).stat()
        assert entry["verified"] == {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                     "ctime_ns": st.st_ctime_ns}


def test_deleted_shard_is_fetched_again_and_nothing_else(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    (dest / SHARD).unlink()
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert run.result["fetched"] == [SHARD] and run.result["hashed_bytes"] == 0
    assert hub.bytes_served == {f"{ASR_REPO}/{SHARD}": hub.files_at(ASR_REPO)[SHARD].size}
    assert_seeded(hub, ASR_REPO, dest)


def test_corruption_served_by_the_hub_is_fetched_once_more_then_fails(hub, tmp_path):
    dest = tmp_path / "asr"
    hub.inject("hub-corrupt", {"repo": ASR_REPO, "path": SHARD, "offset": 12345})
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 6, run.output
    assert SHARD in run.last_line and "second full download" in run.last_line
    assert hub.bytes_served[f"{ASR_REPO}/{SHARD}"] == 2 * hub.files_at(ASR_REPO)[SHARD].size
    assert not (dest / MANIFEST_NAME).exists()


def test_corruption_seen_once_is_repaired_by_the_second_download(hub, tmp_path):
    dest = tmp_path / "asr"
    hub.inject("hub-corrupt", {"repo": ASR_REPO, "path": SHARD, "offset": 7, "count": 1})
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert run.result["refetched_after_mismatch"] == [SHARD]
    assert_seeded(hub, ASR_REPO, dest)


def test_new_revision_changing_one_file_fetches_only_that_file(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    old_commit = hub.commit_of(ASR_REPO)
    new_commit = hub.new_revision(ASR_REPO, {"model-00002-of-00002.safetensors": 400_000,
                                             "generation_config.json": None})
    assert new_commit != old_commit
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, new_commit, dest)
    assert run.returncode == 0, run.output
    assert run.result["fetched"] == ["model-00002-of-00002.safetensors"]
    assert run.result["removed"] == ["generation_config.json"]
    assert run.result["hashed_bytes"] == 0, "unchanged files are vouched for by the old manifest"
    assert list(hub.bytes_served) == [f"{ASR_REPO}/model-00002-of-00002.safetensors"]
    assert not (dest / "generation_config.json").exists()
    assert_seeded(hub, ASR_REPO, dest)


def test_new_revision_without_old_manifest_hashes_instead_of_downloading(hub, tmp_path):
    dest, _ = seeded(hub, tmp_path)
    (dest / MANIFEST_NAME).unlink()
    new_commit = hub.inject("hub-new-revision", {"repo": ASR_REPO, "path": "config.json"})["commit"]
    hub.reset_stats()
    run = run_seed(hub.url, ASR_REPO, new_commit, dest)
    assert run.returncode == 0, run.output
    assert run.result["fetched"] == ["config.json"]
    assert list(hub.bytes_served) == [f"{ASR_REPO}/config.json"]
    assert_seeded(hub, ASR_REPO, dest)


def test_gated_repo_without_token_fails_with_the_inventory_fix_and_no_manifest(hub, tmp_path):
    hub.require_token(ASR_REPO, "hf_sandbox_right_token", mode="gated")
    dest = tmp_path / "asr"
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 3, run.output
    assert "gated" in run.last_line and "HF_TOKEN is not set" in run.last_line
    assert "hf_token_secret" in run.last_line
    assert not (dest / MANIFEST_NAME).exists()


def test_gated_repo_with_a_wrong_token_fails_without_printing_it(hub, tmp_path):
    hub.require_token(ASR_REPO, "hf_sandbox_right_token", mode="gated")
    dest = tmp_path / "asr"
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, token="hf_sandbox_wrong_token")
    assert run.returncode == 3, run.output
    assert "HTTP 403" in run.last_line and "refused" in run.last_line
    assert "hf_sandbox_wrong_token" not in run.output
    assert not (dest / MANIFEST_NAME).exists()
    ok = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, token="hf_sandbox_right_token")
    assert ok.returncode == 0, ok.output
    assert "hf_sandbox_right_token" not in ok.output
    assert_seeded(hub, ASR_REPO, dest)


def test_private_repo_without_token_fails_with_401_message(hub, tmp_path):
    hub.require_token(TTS_REPO, "hf_sandbox_right_token", mode="private")
    dest = tmp_path / "tts"
    run = run_seed(hub.url, TTS_REPO, "main", dest)
    assert run.returncode == 3, run.output
    assert "HTTP 401" in run.last_line and "private" in run.last_line
    assert not dest.exists() or not (dest / MANIFEST_NAME).exists()


def test_unknown_repo_fails_with_404_naming_it(hub, tmp_path):
    run = run_seed(hub.url, "Qwen/Qwen3-ASR-9B", "main", tmp_path / "x")
    assert run.returncode == 4, run.output
    assert "Qwen/Qwen3-ASR-9B not found" in run.last_line
    assert not (tmp_path / "x" / MANIFEST_NAME).exists()


@pytest.mark.parametrize("revision", ["no-such-branch", "0123456789abcdef0123456789abcdef01234567"])
def test_unknown_revision_fails_with_404_naming_it(hub, tmp_path, revision):
    run = run_seed(hub.url, ASR_REPO, revision, tmp_path / "asr")
    assert run.returncode == 4, run.output
    assert f"revision {revision!r}" in run.last_line and ASR_REPO in run.last_line
    assert not (tmp_path / "asr" / MANIFEST_NAME).exists()


def test_not_enough_free_space_is_refused_before_downloading(hub, tmp_path):
    # test-only override of the statvfs figure (documented in the script): a test cannot fill a disk
    dest = tmp_path / "asr"
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, env={"QWEN3_SEED_TEST_FREE_BYTES": "100000"})
    assert run.returncode == 5, run.output
    assert "still to download, 100.00 KB free" in run.last_line
    assert hub.total_bytes_served() == 0
    assert not (dest / MANIFEST_NAME).exists()


def test_a_write_failing_for_lack_of_space_stops_with_a_clear_message(hub, tmp_path):
    # A real kernel write error mid-download: RLIMIT_FSIZE makes write() fail with EFBIG (Python
    # ignores SIGXFSZ), the same path as ENOSPC/EDQUOT on a full volume.
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))

    dest = tmp_path / "asr"
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, preexec_fn=limit_file_size)
    assert run.returncode == 5, run.output
    assert "File too large" in run.last_line and "still to download" in run.last_line
    assert not (dest / MANIFEST_NAME).exists()


@pytest.mark.parametrize("scope", ["api", "files"])
def test_rate_limited_hub_is_retried_honouring_retry_after(hub, tmp_path, scope):
    hub.inject("hub-429", {"count": 2, "retry_after": 0, "scope": scope})
    dest = tmp_path / "asr"
    run = run_seed(hub.url, ASR_REPO, "main", dest)
    assert run.returncode == 0, run.output
    assert [r["status"] for r in hub.requests].count(429) == 2
    if scope == "files":  # huggingface_hub retries its own API calls; downloads are the seeder's
        assert "HTTP 429" in run.output and "resuming in 0.0s" in run.output
    assert_seeded(hub, ASR_REPO, dest)


def test_rate_limiting_that_never_ends_fails_with_exit_8(hub, tmp_path):
    hub.inject("hub-429", {"count": 1000, "retry_after": 0, "scope": "files"})
    dest = tmp_path / "asr"
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 8, run.output
    assert "HTTP 429" in run.last_line and "kept failing" in run.last_line
    assert not (dest / MANIFEST_NAME).exists()


def test_a_live_claim_by_another_seeder_is_respected(hub, tmp_path):
    dest = tmp_path / "asr"
    dest.mkdir()
    lock = dest / ".qwen3-seed.lock"
    lock.write_text(json.dumps({"host": "seed-job-pod-on-another-node", "pid": 1}))
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, "--lock-wait-seconds", "0.3")
    assert run.returncode == 7, run.output
    assert "seed-job-pod-on-another-node" in run.last_line and str(lock) in run.last_line
    assert lock.exists() and hub.total_bytes_served() == 0


def test_a_stale_claim_is_broken_and_the_seed_proceeds(hub, tmp_path):
    dest = tmp_path / "asr"
    dest.mkdir()
    lock = dest / ".qwen3-seed.lock"
    lock.write_text(json.dumps({"host": "seed-job-pod-lost-in-spot-interruption", "pid": 1}))
    old = time.time() - 3600
    os.utime(lock, (old, old))
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest, "--lock-stale-seconds", "60")
    assert run.returncode == 0, run.output
    assert "breaking a stale claim" in run.output
    assert_seeded(hub, ASR_REPO, dest)
    assert not lock.exists()


def test_the_claim_of_a_dead_process_on_this_host_is_broken_at_once(hub, tmp_path):
    dest = tmp_path / "asr"
    dest.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    (dest / ".qwen3-seed.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    run = run_seed(hub.url, ASR_REPO, hub.commit_of(ASR_REPO), dest)
    assert run.returncode == 0, run.output
    assert_seeded(hub, ASR_REPO, dest)


def test_unreachable_hub_gives_up_with_a_clear_message(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = run_seed(f"http://127.0.0.1:{port}", ASR_REPO, "main", tmp_path / "asr", "--retries", "1")
    assert run.returncode == 8, run.output
    assert "kept failing" in run.last_line and "HF_ENDPOINT" in run.last_line


def test_seed_script_parses_as_python_3_10(tmp_path):
    for script in (SEED_SCRIPT, SEED_SCRIPT.with_name("check_model_manifest.py")):
        ast.parse(script.read_text(), filename=str(script), feature_version=(3, 10))
        imports = {node.names[0].name.split(".")[0] for node in ast.walk(ast.parse(script.read_text()))
                   if isinstance(node, ast.Import)}
        imports |= {node.module.split(".")[0] for node in ast.walk(ast.parse(script.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module}
        # the seeder shares the guard's file checks (both sit side by side in the scripts ConfigMap)
        allowed = {"huggingface_hub", "check_model_manifest"}
        assert imports - set(sys.stdlib_module_names) <= allowed, f"{script.name} imports {imports}"
        for newer in ("tomllib", "datetime.UTC", "file_digest", "ExceptionGroup", "except*", "TaskGroup"):
            assert newer not in script.read_text(), f"{script.name} uses {newer} (Python 3.11+)"


def other_thread_of(pid: int) -> int:
    """A thread of the process other than its main one: kill() on its id still signals the whole
    process (the kubelet's SIGTERM), but Linux hands the signal to that thread first."""
    return next(int(tid) for tid in sorted(os.listdir(f"/proc/{pid}/task")) if int(tid) != pid)


@pytest.mark.parametrize("received_by", ["main thread", "another thread"])
def test_sigterm_stops_at_once_keeps_the_part_and_releases_the_claim(hub, tmp_path, received_by):
    dest = tmp_path / "asr"
    hub.inject("hub-cut", {"repo": ASR_REPO, "path": SHARD, "at_fraction": 0.5, "stall_seconds": 60})
    proc = subprocess.Popen(seed_command(sys.executable, ASR_REPO, hub.commit_of(ASR_REPO), dest),
                            env=seed_env(hub.url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    part = dest / ".seed" / (SHARD + ".part")
    size = hub.files_at(ASR_REPO)[SHARD].size
    try:
        wait_until(lambda: part.exists() and part.stat().st_size >= size // 2 - CHUNK, 60, "half the shard on disk")
    finally:
        # what the kubelet sends first when a Spot node is drained; the kernel may give it to any thread
        os.kill(proc.pid if received_by == "main thread" else other_thread_of(proc.pid), signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)  # well before the socket timeout: it does not wait for reads
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "rerun resumes them" in output.strip().splitlines()[-1], output
    assert part.exists() and not (dest / MANIFEST_NAME).exists(), output
    assert not (dest / ".qwen3-seed.lock").exists(), output


def local_copy_of(hub, tmp_path, repo=ASR_REPO):
    """The repo at main as `image-cache build` leaves it on a node's disk: the Hub's files, nothing else."""
    local = tmp_path / "node-disk" / REPOS[repo]
    for path, blob in hub.files_at(repo).items():
        (local / path).parent.mkdir(parents=True, exist_ok=True)
        (local / path).write_bytes(hub.blobs.path(blob.sha256).read_bytes())
    return local


def test_a_seed_from_a_local_copy_downloads_no_file_and_verifies_every_copied_file_against_the_hub(hub, tmp_path):
    local = local_copy_of(hub, tmp_path)
    hub.reset_stats()
    dest, run = seeded(hub, tmp_path, ASR_REPO, "--local-source", str(local))
    manifest = assert_seeded(hub, ASR_REPO, dest)
    assert hub.total_bytes_served() == 0, hub.bytes_served
    assert run.result["copied_bytes"] == manifest["total_bytes"] and run.result["downloaded_bytes"] == 0
    assert sorted(run.result["copied"]) == sorted(hub.files_at(ASR_REPO))


def test_a_local_copy_with_a_flipped_byte_or_a_missing_file_costs_those_files_a_download_never_a_wrong_file(hub, tmp_path):
    local = local_copy_of(hub, tmp_path)
    flip_byte_keeping_mtime(local / SHARD)
    (local / "config.json").unlink()
    hub.reset_stats()
    dest, run = seeded(hub, tmp_path, ASR_REPO, "--local-source", str(local))
    assert_seeded(hub, ASR_REPO, dest)
    assert sorted(path.split("/", 2)[-1] for path in hub.bytes_served if hub.bytes_served[path]) == ["config.json", SHARD]
    assert f"{SHARD}: the copy in {local} is not the Hub's file" in run.output
    assert SHARD not in run.result["copied"] and "config.json" not in run.result["copied"]
