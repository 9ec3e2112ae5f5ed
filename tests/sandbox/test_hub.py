"""The sandbox Hub: the real huggingface_hub client (2.x here, 0.36.2 in a venv) lists and downloads from it."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from sandbox.hub import ASR_REPO, TTS_REPO, HubServer, git_blob_id
from tests.seed_helpers import hub, hub036_python, seed_env  # noqa: F401

ASR_FILES = {".gitattributes", "README.md", "chat_template.json", "config.json", "generation_config.json", "merges.txt",
             "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
             "preprocessor_config.json", "tokenizer_config.json", "vocab.json"}
TTS_FILES = {".gitattributes", "README.md", "config.json", "generation_config.json", "merges.txt", "model.safetensors",
             "preprocessor_config.json", "speech_tokenizer/config.json", "speech_tokenizer/configuration.json",
             "speech_tokenizer/model.safetensors", "speech_tokenizer/preprocessor_config.json",
             "tokenizer_config.json", "vocab.json"}
SHARD = "model-00001-of-00002.safetensors"


def fetch(url: str, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_repo_info_lists_the_real_file_names_with_sizes_and_hashes(hub):
    api = HfApi(endpoint=hub.url)
    for repo, names in ((ASR_REPO, ASR_FILES), (TTS_REPO, TTS_FILES)):
        info = api.model_info(repo, files_metadata=True)
        assert info.id == repo and info.sha == hub.commit_of(repo)
        assert {s.rfilename for s in info.siblings} == names
        for sibling in info.siblings:
            content = hub.blob_path(repo, sibling.rfilename).read_bytes()
            assert sibling.size == len(content)
            if sibling.rfilename.endswith(".safetensors"):
                assert sibling.lfs.sha256 == hashlib.sha256(content).hexdigest()
            else:
                assert sibling.lfs is None and sibling.blob_id == git_blob_id(content)


def test_tree_listing_recursive_and_per_folder(hub):
    api = HfApi(endpoint=hub.url)
    top = list(api.list_repo_tree(TTS_REPO))
    assert {e.path for e in top if not hasattr(e, "blob_id")} == {"speech_tokenizer"}
    everything = {e.path: e for e in api.list_repo_tree(TTS_REPO, recursive=True) if hasattr(e, "blob_id")}
    assert set(everything) == TTS_FILES
    assert everything["model.safetensors"].lfs.sha256 == hashlib.sha256(
        hub.blob_path(TTS_REPO, "model.safetensors").read_bytes()).hexdigest()
    assert all(e.xet_hash is None for e in everything.values()), "no xet: clients must use plain HTTP"
    folder = list(api.list_repo_tree(TTS_REPO, path_in_repo="speech_tokenizer", expand=True))
    assert {e.path for e in folder} == {p for p in TTS_FILES if p.startswith("speech_tokenizer/")}
    assert all(e.last_commit.oid == hub.commit_of(TTS_REPO) for e in folder)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(TTS_REPO, path_in_repo="no_such_folder"))


def test_tree_accepts_the_capitalised_booleans_of_huggingface_hub_036(hub):
    status, _, body = fetch(f"{hub.url}/api/models/{TTS_REPO}/tree/main?recursive=True&expand=False")
    assert status == 200
    assert {e["path"] for e in json.loads(body) if e["type"] == "file"} == TTS_FILES


def test_paths_info_answers_files_and_folders(hub):
    infos = HfApi(endpoint=hub.url).get_paths_info(TTS_REPO, ["config.json", "speech_tokenizer", "absent.txt"])
    assert sorted(i.path for i in infos) == ["config.json", "speech_tokenizer"]


def test_resolve_head_has_the_headers_huggingface_hub_needs(hub):
    url = hf_hub_url(ASR_REPO, SHARD, endpoint=hub.url)
    meta = get_hf_file_metadata(url)
    blob = hub.files_at(ASR_REPO)[SHARD]
    assert meta.commit_hash == hub.commit_of(ASR_REPO)
    assert meta.etag == blob.sha256 and meta.size == blob.size
    status, headers, _ = fetch(url, method="HEAD")
    assert status == 200 and headers["Accept-Ranges"] == "bytes" and headers["X-Linked-Size"] == str(blob.size)
    assert not [h for h in headers if h.lower().startswith("x-xet")]
    small = get_hf_file_metadata(hf_hub_url(ASR_REPO, "config.json", endpoint=hub.url))
    assert small.etag == hub.files_at(ASR_REPO)["config.json"].blob_id


def test_range_requests_answer_206_with_content_range(hub):
    url = hf_hub_url(ASR_REPO, SHARD, endpoint=hub.url)
    content = hub.blob_path(ASR_REPO, SHARD).read_bytes()
    status, headers, body = fetch(url, {"Range": "bytes=1000-"})
    assert status == 206 and body == content[1000:]
    assert headers["Content-Range"] == f"bytes 1000-{len(content) - 1}/{len(content)}"
    status, _, body = fetch(url, {"Range": "bytes=10-19"})
    assert status == 206 and body == content[10:20]
    status, _, body = fetch(url, {"Range": "bytes=-5"})
    assert status == 206 and body == content[-5:]
    status, headers, _ = fetch(url, {"Range": f"bytes={len(content)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(content)}"


def test_errors_map_to_huggingface_hub_exceptions(hub, tmp_path):
    api = HfApi(endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("Qwen/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(ASR_REPO, revision="v0.0-missing")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(ASR_REPO, "tokenizer.json", endpoint=hub.url, local_dir=tmp_path)


def test_gated_repo_needs_the_token_for_files_but_not_for_metadata(hub, tmp_path):
    hub.require_token(ASR_REPO, "hf_right", mode="gated")
    api = HfApi(endpoint=hub.url, token=False)
    assert api.model_info(ASR_REPO).gated == "manual"
    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download(ASR_REPO, "config.json", endpoint=hub.url, local_dir=tmp_path / "a", token=False)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong:
        hf_hub_download(ASR_REPO, "config.json", endpoint=hub.url, local_dir=tmp_path / "b", token="hf_wrong")
    assert wrong.value.response.status_code == 403
    path = hf_hub_download(ASR_REPO, "config.json", endpoint=hub.url, local_dir=tmp_path / "c", token="hf_right")
    assert Path(path).read_bytes() == hub.blob_path(ASR_REPO, "config.json").read_bytes()


def test_private_repo_is_hidden_without_the_token(hub):
    hub.require_token(TTS_REPO, "hf_right", mode="private")
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        HfApi(endpoint=hub.url, token=False).model_info(TTS_REPO)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as wrong:
        HfApi(endpoint=hub.url, token="hf_wrong").model_info(TTS_REPO)
    assert wrong.value.response.status_code == 404
    assert HfApi(endpoint=hub.url, token="hf_right").model_info(TTS_REPO).private is True


def test_cut_fault_drops_the_connection_part_way_through_the_next_get(hub):
    url = hf_hub_url(ASR_REPO, SHARD, endpoint=hub.url)
    size = hub.files_at(ASR_REPO)[SHARD].size
    hub.inject("hub-cut", {"path": SHARD, "at_fraction": "0.25"})
    with pytest.raises(http.client.IncompleteRead) as cut:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
    assert len(cut.value.partial) == size // 4
    assert hub.bytes_served[f"{ASR_REPO}/{SHARD}"] == size // 4
    assert fetch(url)[2] == hub.blob_path(ASR_REPO, SHARD).read_bytes()


def test_429_fault_answers_the_next_requests_with_retry_after(hub):
    hub.inject("hub-429", {"count": 2, "retry_after": 7})
    url = f"{hub.url}/api/models/{ASR_REPO}"
    for _ in range(2):
        status, headers, _ = fetch(url)
        assert status == 429 and headers["Retry-After"] == "7"
    assert fetch(url)[0] == 200


def test_corrupt_fault_flips_one_byte_until_cleared(hub):
    url = hf_hub_url(ASR_REPO, SHARD, endpoint=hub.url)
    good = hub.blob_path(ASR_REPO, SHARD).read_bytes()
    hub.inject("hub-corrupt", {"repo": ASR_REPO, "path": SHARD, "offset": "4096"})
    for _ in range(2):
        served = fetch(url)[2]
        assert len(served) == len(good)
        assert [i for i in range(len(good)) if served[i] != good[i]] == [4096]
    assert fetch(url, {"Range": "bytes=4000-4100"})[2][96] == good[4096] ^ 0xFF
    hub.inject("clear")
    assert fetch(url)[2] == good


def test_new_revision_moves_main_and_keeps_the_old_commit(hub):
    api = HfApi(endpoint=hub.url)
    old = hub.commit_of(ASR_REPO)
    new = hub.inject("hub-new-revision", {"repo": ASR_REPO, "path": "config.json"})["commit"]
    assert api.model_info(ASR_REPO).sha == new != old
    assert api.model_info(ASR_REPO, revision=old).sha == old
    config = json.loads(hub.blob_path(ASR_REPO, "config.json").read_bytes())
    assert config["sandbox_revision"] == 1
    hub.add_tag(ASR_REPO, "v1.0", old)
    assert api.model_info(ASR_REPO, revision="v1.0").sha == old
    changed = {p for p, b in hub.files_at(ASR_REPO, new).items() if b != hub.files_at(ASR_REPO, old).get(p)}
    assert changed == {"config.json"}


def test_restart_on_the_same_root_reuses_weights_and_revisions(tmp_path):
    first = HubServer(tmp_path)
    commit = first.new_revision(TTS_REPO, {"model.safetensors": 600_000})
    weights = first.blob_path(TTS_REPO, "model.safetensors")
    generated_at = weights.stat().st_mtime_ns
    second = HubServer(tmp_path)
    assert second.commit_of(TTS_REPO) == commit
    assert second.blob_path(TTS_REPO, "model.safetensors") == weights
    assert weights.stat().st_mtime_ns == generated_at, "weights were generated again"
    other_sizes = HubServer(tmp_path, repo_sizes={TTS_REPO: 3_000_000})
    assert other_sizes.commit_of(TTS_REPO) != commit


def test_repo_sizes_scale_weights_like_the_real_repos(tmp_path):
    hub = HubServer(tmp_path, repo_sizes={ASR_REPO: 4_000_000, TTS_REPO: {"model.safetensors": 700_000}})
    asr = hub.files_at(ASR_REPO)
    shards = (asr["model-00001-of-00002.safetensors"].size, asr["model-00002-of-00002.safetensors"].size)
    assert sum(shards) == 4_000_000 and shards[0] > 8 * shards[1]  # 4.22 GB + 0.48 GB upstream
    assert hub.files_at(TTS_REPO)["model.safetensors"].size == 700_000
    index = json.loads(hub.blob_path(ASR_REPO, "model.safetensors.index.json").read_bytes())
    assert index["metadata"]["total_size"] == 4_000_000
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


def test_weights_are_valid_safetensors_files(hub):
    data = hub.blob_path(TTS_REPO, "speech_tokenizer/model.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    (tensor,) = [v for k, v in header.items() if k != "__metadata__"]
    assert tensor["dtype"] == "U8" and 8 + header_len + tensor["data_offsets"][1] == len(data)


def test_stats_endpoint_reports_bytes_served_per_file(hub):
    fetch(hf_hub_url(TTS_REPO, "config.json", endpoint=hub.url))
    status, _, body = fetch(f"{hub.url}/_sandbox/stats")
    stats = json.loads(body)
    size = hub.files_at(TTS_REPO)["config.json"].size
    assert status == 200 and stats["bytes_served"] == {f"{TTS_REPO}/config.json": size}
    assert stats["total_bytes_served"] == size


def test_snapshot_download_and_the_hf_cli_download_whole_repos(hub, tmp_path):
    local = snapshot_download(TTS_REPO, endpoint=hub.url, local_dir=tmp_path / "snapshot")
    for path in TTS_FILES:
        assert (Path(local) / path).read_bytes() == hub.blob_path(TTS_REPO, path).read_bytes()
    cli = Path(sys.executable).with_name("hf")
    done = subprocess.run([str(cli), "download", ASR_REPO, "--local-dir", str(tmp_path / "cli")],
                          env=seed_env(hub.url), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for path in ASR_FILES:
        assert (tmp_path / "cli" / path).read_bytes() == hub.blob_path(ASR_REPO, path).read_bytes()


def test_huggingface_hub_036_snapshot_download_resumes_a_cut_file_on_the_next_call(tmp_path, hub036_python):
    # 0.36 writes in 10 MB chunks, so the cut must come after the first one for anything to be kept
    hub = HubServer(tmp_path / "sandbox", repo_sizes={TTS_REPO: {"model.safetensors": 24_000_000}})
    hub.start()
    try:
        check_036_resume(hub, tmp_path, hub036_python)
    finally:
        hub.stop()


def check_036_resume(hub, tmp_path, hub036_python):
    script = f"""
import sys
from huggingface_hub import snapshot_download
print(snapshot_download({TTS_REPO!r}, local_dir=sys.argv[1], endpoint={hub.url!r}))
"""
    command = [hub036_python, "-c", script, str(tmp_path / "old")]
    hub.inject("hub-cut", {"path": "model.safetensors", "at_fraction": 0.5})
    cut = subprocess.run(command, env=seed_env(hub.url), capture_output=True, text=True, timeout=120)
    assert cut.returncode != 0 and "IncompleteRead" in cut.stderr  # 0.36 resumes on the next call, not in-process
    done = subprocess.run(command, env=seed_env(hub.url), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for path in TTS_FILES:
        assert (tmp_path / "old" / path).read_bytes() == hub.blob_path(TTS_REPO, path).read_bytes()
    size = hub.files_at(TTS_REPO)["model.safetensors"].size
    commit = hub.commit_of(TTS_REPO)
    assert [r["range"] for r in hub.requests if r["path"] == f"/{TTS_REPO}/resolve/{commit}/model.safetensors"
            and r["method"] == "GET"] == [None, f"bytes={10 * 1024 * 1024}-"]  # the one 10 MiB chunk it had kept
    assert size == 24_000_000
