"""The sandbox's Hugging Face Hub: a loopback HTTP server speaking the Hub's download API.

It serves generated repos shaped like the real Qwen ones (same file names, a sharded ASR
checkpoint with its index, a TTS checkpoint with its `speech_tokenizer/` subfolder), with
the HTTP surface that huggingface_hub 0.36.x and 2.x use to list and fetch a model repo:

- `GET /api/models/{repo}[/revision/{rev}]` (repo info; `?blobs=true` adds size, blobId, lfs),
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=` (accepts True/true),
- `POST /api/models/{repo}/paths-info/{rev}` (form or JSON `paths`, `expand`),
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag` (sha256 for LFS files,
  git blob sha1 otherwise), `X-Linked-Etag`/`X-Linked-Size` for LFS files, `Accept-Ranges` and
  `Range` -> 206. No `X-Xet-*` headers and no `xetHash`, so every client uses plain HTTP.
- `GET /_sandbox/stats`: bytes served per file and the request log (for tests and the bench).

Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) as the
real Hub sends them, so huggingface_hub raises its usual exception classes.

Content is deterministic: weights are seeded pseudo-random bytes wrapped in a valid
safetensors header, generated once into `ROOT/hub/blobs/` (named by sha256) and reused across
restarts; `ROOT/hub/state.json` keeps the commits, so revisions added with `new_revision`
survive a restart as long as the repo sizes are unchanged (`python -m sandbox down` drops them,
so the next `up` serves the generated commits, unless it is given --keep-hub-revisions).

Faults (`inject`): `hub-cut` (the next GET of a file stops after a fraction of its body and
drops the connection), `hub-429` (the next N requests get 429 with Retry-After), `hub-corrupt`
(a file is served with one byte flipped, until `clear` or for `count` GETs), `hub-new-revision`
(a new commit changing one file moves `main`), `clear`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ASR_REPO = "Qwen/Qwen3-ASR-1.7B"
TTS_REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"

# Real weight sizes (upstream-facts.md sections 1 and 2): an int in `repo_sizes` is split in
# these proportions, so a scaled-down repo keeps the real shape (one big shard, one small).
REAL_WEIGHT_SIZES = {
    ASR_REPO: {"model-00001-of-00002.safetensors": 4_220_320_824, "model-00002-of-00002.safetensors": 478_200_688},
    TTS_REPO: {"model.safetensors": 3_833_402_552, "speech_tokenizer/model.safetensors": 682_293_092},
}
# Small by default so tests are fast, but several chunks long so resume can be exercised.
DEFAULT_WEIGHT_SIZES = {
    ASR_REPO: {"model-00001-of-00002.safetensors": 1_500_000, "model-00002-of-00002.safetensors": 400_000},
    TTS_REPO: {"model.safetensors": 1_200_000, "speech_tokenizer/model.safetensors": 300_000},
}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores big files in LFS whatever their extension
GENERATION_VERSION = 1  # bump when generated content changes, so cached blobs are not reused
SEND_BLOCK = 8 * 1024 * 1024
SCHEMA_VERSION = 1
BASE_DATE = datetime(2025, 1, 29, 12, 0, 0, tzinfo=timezone.utc)


class HubError(Exception):
    """An HTTP error answered the way the Hub answers it (status, X-Error-Code, message)."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Blob:
    """One file version: where its bytes are and the hashes the Hub reports for it."""

    sha256: str
    size: int
    blob_id: str  # git oid: of the content for git files, of the LFS pointer for LFS files
    lfs: bool

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size, "blob_id": self.blob_id, "lfs": self.lfs}

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    # "gated" or "private" with the token that grants access; None = public
    access: dict | None = None


def git_blob_id(content: bytes) -> str:
    """The git object id of a file: sha1 of `blob <len>\\0` + content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs_path(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


class BlobStore:
    """Content-addressed files under ROOT/hub/blobs, named by sha256."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.directory / sha256

    def put_bytes(self, path: str, content: bytes) -> Blob:
        sha256 = hashlib.sha256(content).hexdigest()
        target = self.path(sha256)
        if not target.exists():
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(content)
            os.replace(tmp, target)
        return self._blob(path, sha256, len(content), content)

    def put_generated_weights(self, path: str, size: int, seed: str) -> Blob:
        """A valid safetensors file of exactly `size` bytes: one U8 tensor of seeded random bytes."""
        tensor = "weights." + re.sub(r"[^A-Za-z0-9]+", "_", path)
        header = safetensors_header(tensor, size)
        rng = random.Random(seed)
        sha = hashlib.sha256(header)
        tmp = self.directory / f"generating-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "wb") as out:
            out.write(header)
            remaining = size - len(header)
            while remaining > 0:
                block = rng.randbytes(min(remaining, 16 * 1024 * 1024))
                sha.update(block)
                out.write(block)
                remaining -= len(block)
        sha256 = sha.hexdigest()
        os.replace(tmp, self.path(sha256))
        return self._blob(path, sha256, size, None)

    def _blob(self, path: str, sha256: str, size: int, content: bytes | None) -> Blob:
        if is_lfs_path(path, size):
            return Blob(sha256, size, git_blob_id(lfs_pointer(sha256, size)), True)
        if content is None:
            content = self.path(sha256).read_bytes()
        return Blob(sha256, size, git_blob_id(content), False)


def safetensors_header(tensor: str, size: int) -> bytes:
    """8-byte little-endian length + JSON header (space-padded to a multiple of 8, as the format
    allows) for one U8 tensor filling the rest of a `size`-byte file."""
    header_len = 0
    while True:  # the header's length depends on the digits of the payload length: iterate to a fixpoint
        payload = size - 8 - header_len
        if payload < 0:
            raise ValueError(f"weight size {size} is too small for a safetensors header")
        text = json.dumps({"__metadata__": {"format": "pt"},
                           tensor: {"dtype": "U8", "shape": [payload], "data_offsets": [0, payload]}},
                          separators=(",", ":"))
        needed = len(text) + (-len(text) % 8)
        if needed <= header_len:
            return header_len.to_bytes(8, "little") + text.ljust(header_len).encode()
        header_len = needed


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def _word_list(seed: str, count: int) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(count)]


GITATTRIBUTES = "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in (
    "7z", "arrow", "bin", "bz2", "ckpt", "ftz", "gz", "h5", "joblib", "lfs", "mlmodel", "model", "msgpack",
    "npy", "npz", "onnx", "ot", "parquet", "pb", "pickle", "pkl", "pt", "pth", "rar", "safetensors", "tar",
    "tflite", "tgz", "wasm", "xz", "zip", "zst")) + "*tfevents* filter=lfs diff=lfs merge=lfs -text\n"


def text_files(repo_id: str, weights: dict[str, int]) -> dict[str, bytes]:
    """The small files of a repo: realistic names and shapes, deterministic content."""
    words = _word_list(repo_id, 3000)
    vocab = {w + str(i): i for i, w in enumerate(words)}
    merges = "#version: 0.2\n" + "".join(f"{a[:2]} {b[:3]}\n" for a, b in zip(words[::2], words[1::2]))
    tokenizer_config = {"model_max_length": 131072, "tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>",
                        "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False}
    common = {
        ".gitattributes": GITATTRIBUTES.encode(),
        "merges.txt": merges.encode(),
        "vocab.json": json.dumps(vocab, separators=(",", ":")).encode(),
        "tokenizer_config.json": _json_bytes(tokenizer_config),
    }
    if repo_id == ASR_REPO:
        shard_names = sorted(weights)
        index = {"metadata": {"total_size": sum(weights.values())},
                 "weight_map": {"weights." + re.sub(r"[^A-Za-z0-9]+", "_", name): name for name in shard_names}}
        return {**common,
                "README.md": (f"---\nlicense: apache-2.0\npipeline_tag: automatic-speech-recognition\n---\n\n"
                              f"# {repo_id} (sandbox stand-in)\n\nGenerated by the qwen3-speech sandbox hub.\n").encode(),
                "chat_template.json": _json_bytes({"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n"
                                                                   "{{ m.content }}<|im_end|>\n{% endfor %}"}),
                "config.json": _json_bytes({"architectures": ["Qwen3ASRForConditionalGeneration"],
                                            "model_type": "qwen3_asr", "torch_dtype": "bfloat16",
                                            "transformers_version": "4.57.6"}),
                "generation_config.json": _json_bytes({"do_sample": False, "max_new_tokens": 4096}),
                "model.safetensors.index.json": _json_bytes(index),
                "preprocessor_config.json": _json_bytes({"feature_extractor_type": "WhisperFeatureExtractor",
                                                          "sampling_rate": 16000, "chunk_length": 30})}
    if repo_id == TTS_REPO:
        return {**common,
                "README.md": (f"---\nlicense: apache-2.0\npipeline_tag: text-to-speech\n---\n\n"
                              f"# {repo_id} (sandbox stand-in)\n\nGenerated by the qwen3-speech sandbox hub.\n").encode(),
                "config.json": _json_bytes({"architectures": ["Qwen3TTSForConditionalGeneration"],
                                            "model_type": "qwen3_tts", "tts_model_type": "custom_voice",
                                            "torch_dtype": "bfloat16"}),
                "generation_config.json": _json_bytes({"do_sample": True, "temperature": 0.9, "top_k": 50}),
                "preprocessor_config.json": _json_bytes({"padding_side": "left"}),
                "speech_tokenizer/config.json": _json_bytes({"model_type": "qwen3_tts_tokenizer_12hz",
                                                             "sampling_rate": 24000, "frame_rate": 12.5}),
                "speech_tokenizer/configuration.json": _json_bytes({"framework": "pytorch"}),
                "speech_tokenizer/preprocessor_config.json": _json_bytes({"sampling_rate": 24000,
                                                                          "feature_size": 1})}
    raise ValueError(f"unknown sandbox repo {repo_id!r}; known: {ASR_REPO}, {TTS_REPO}")


def weight_sizes(repo_id: str, wanted: int | dict | None) -> dict[str, int]:
    """Weight file sizes for a repo: defaults, an explicit {path: size}, or a total split like the real repo."""
    if wanted is None:
        return dict(DEFAULT_WEIGHT_SIZES[repo_id])
    if isinstance(wanted, dict):
        unknown = set(wanted) - set(REAL_WEIGHT_SIZES[repo_id])
        if unknown:
            raise ValueError(f"repo_sizes[{repo_id!r}] names {sorted(unknown)}; its weight files are "
                             f"{sorted(REAL_WEIGHT_SIZES[repo_id])}")
        return {**DEFAULT_WEIGHT_SIZES[repo_id], **{k: int(v) for k, v in wanted.items()}}
    real = REAL_WEIGHT_SIZES[repo_id]
    total_real = sum(real.values())
    names = sorted(real, key=real.get, reverse=True)
    sizes = {name: max(4096, int(int(wanted) * real[name] / total_real)) for name in names[1:]}
    sizes[names[0]] = max(4096, int(wanted) - sum(sizes.values()))
    return sizes


def _commit_oid(parent: str | None, message: str, files: dict[str, Blob]) -> str:
    listing = json.dumps({"parent": parent, "message": message,
                          "files": {p: b.blob_id for p, b in sorted(files.items())}}, sort_keys=True)
    return hashlib.sha1(listing.encode()).hexdigest()


def _tree_oid(commit: str, directory: str) -> str:
    return hashlib.sha1(f"tree {commit} {directory}".encode()).hexdigest()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class HubServer:
    """The sandbox Hub: generated Qwen repos served over HTTP on 127.0.0.1.

    + root: sandbox root dir; data lives in ROOT/hub/
    + repo_sizes: {repo_id: total weight bytes (split like the real repo) or {weight path: bytes}}
    + access: {repo_id: {"mode": "gated"|"private", "token": "hf_..."}} to require a token
    + time_scale: serve weight files at the profile's Hub -> EFS bandwidth for their real size,
      this many times faster than life (None: as fast as loopback goes)

    Use: `hub = HubServer(tmp); url = hub.start(); ...; hub.stop()`; `hub.bytes_served` counts
    body bytes sent per "repo/path".
    """

    def __init__(self, root: Path, *, repo_sizes: dict | None = None, access: dict | None = None,
                 time_scale: float | None = None):
        self.root = Path(root)
        # With a time scale, weights take as long as their real size at the Hub -> EFS bandwidth
        # (sandbox/cluster/profile.py), divided by the scale; downloads running at once share it.
        self.time_scale = time_scale
        self._link_lock = threading.Lock()
        self._link_free_at = 0.0
        self.data_dir = self.root / "hub"
        self.blobs = BlobStore(self.data_dir / "blobs")
        self.repo_sizes = dict(repo_sizes or {})
        self.repos: dict[str, Repo] = {}
        self._lock = threading.RLock()
        self._faults: dict[str, list[dict]] = {"hub-cut": [], "hub-corrupt": []}
        self._stalled: list[dict] = []
        self._throttle_count = 0
        self._throttle_retry_after = 1
        self._throttle_scope = "all"
        self.bytes_served: dict[str, int] = {}
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._load_or_build()
        for repo_id, rule in (access or {}).items():
            self.require_token(repo_id, rule["token"], mode=rule.get("mode", "gated"))

    # ---- content -------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        sizes = {repo: weight_sizes(repo, self.repo_sizes.get(repo)) for repo in REAL_WEIGHT_SIZES}
        return hashlib.sha1(json.dumps({"v": GENERATION_VERSION, "sizes": sizes}, sort_keys=True).encode()).hexdigest()

    def _load_or_build(self) -> None:
        fingerprint = self._fingerprint()
        state_path = self.data_dir / "state.json"
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                if state.get("fingerprint") == fingerprint and self._load_state(state):
                    return
            except (OSError, ValueError, KeyError):
                pass  # unreadable state: rebuild from the (cached) blobs
        self.repos = {}
        for repo_id in REAL_WEIGHT_SIZES:
            self.repos[repo_id] = self._build_repo(repo_id)
        self._save_state()

    def _load_state(self, state: dict) -> bool:
        repos = {}
        for repo_id, data in state["repos"].items():
            repo = Repo(repo_id, branches=data["branches"], tags=data["tags"])
            for oid, c in data["commits"].items():
                files = {p: Blob(**b) for p, b in c["files"].items()}
                if not all(self.blobs.path(b.sha256).exists() for b in files.values()):
                    return False
                repo.commits[oid] = Commit(oid, c["parent"], c["message"], c["date"], files)
            repos[repo_id] = repo
        self.repos = repos
        return True

    def _save_state(self) -> None:
        state = {"schema": SCHEMA_VERSION, "fingerprint": self._fingerprint(), "repos": {
            repo_id: {"branches": r.branches, "tags": r.tags, "commits": {
                oid: {"parent": c.parent, "message": c.message, "date": c.date,
                      "files": {p: b.to_json() for p, b in c.files.items()}} for oid, c in r.commits.items()}}
            for repo_id, r in self.repos.items()}}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.data_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.data_dir / "state.json")

    def _generated_index(self) -> dict:
        path = self.data_dir / "generated.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _weights_blob(self, path: str, size: int, seed: str) -> Blob:
        """Generated weights, reused from the blob cache when the same (seed, size) was made before."""
        key = f"v{GENERATION_VERSION}|{seed}|{path}|{size}"
        index = self._generated_index()
        known = index.get(key)
        if known and self.blobs.path(known["sha256"]).exists():
            return Blob(**known)
        blob = self.blobs.put_generated_weights(path, size, seed)
        index = self._generated_index()
        index[key] = blob.to_json()
        tmp = self.data_dir / f"generated.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.data_dir / "generated.json")
        return blob

    def _build_repo(self, repo_id: str) -> Repo:
        weights = weight_sizes(repo_id, self.repo_sizes.get(repo_id))
        files: dict[str, Blob] = {}
        for path, content in text_files(repo_id, weights).items():
            files[path] = self.blobs.put_bytes(path, content)
        for path, size in weights.items():
            files[path] = self._weights_blob(path, size, f"{repo_id}/{path}")
        message = "Upload model (sandbox)"
        oid = _commit_oid(None, message, files)
        repo = Repo(repo_id, branches={"main": oid})
        repo.commits[oid] = Commit(oid, None, message, BASE_DATE.isoformat().replace("+00:00", "Z"), files)
        return repo

    def new_revision(self, repo_id: str, files: dict[str, bytes | int | None], message: str | None = None) -> str:
        """Add a commit on top of `main` changing the given files and move `main` to it.

        + files: {path: new content (bytes) | size of fresh random weights (int) | None to delete}
        Returns the new commit id.
        """
        with self._lock:
            repo = self._repo(repo_id)
            parent = repo.branches["main"]
            current = dict(repo.commits[parent].files)
            for path, content in files.items():
                if content is None:
                    current.pop(path, None)
                elif isinstance(content, int):
                    current[path] = self._weights_blob(path, content, f"{repo_id}/{path}@{parent}")
                else:
                    current[path] = self.blobs.put_bytes(path, bytes(content))
            message = message or "Update " + ", ".join(sorted(files))
            oid = _commit_oid(parent, message, current)
            date = (BASE_DATE.timestamp() + 86400 * len(repo.commits))
            repo.commits[oid] = Commit(oid, parent, message,
                                       datetime.fromtimestamp(date, timezone.utc).isoformat().replace("+00:00", "Z"),
                                       current)
            repo.branches["main"] = oid
            self._save_state()
            return oid

    def add_tag(self, repo_id: str, tag: str, commit: str | None = None) -> str:
        """Point tag `tag` at `commit` (default: main's commit); returns the commit."""
        with self._lock:
            repo = self._repo(repo_id)
            repo.tags[tag] = commit or repo.branches["main"]
            self._save_state()
            return repo.tags[tag]

    def require_token(self, repo_id: str, token: str | None, *, mode: str = "gated") -> None:
        """Make a repo gated (files need the token) or private (everything needs it); token None = public."""
        if mode not in ("gated", "private"):
            raise ValueError(f"access mode {mode!r} for {repo_id}: use 'gated' or 'private'")
        with self._lock:
            self._repo(repo_id).access = {"mode": mode, "token": token} if token else None

    def commit_of(self, repo_id: str, revision: str = "main") -> str:
        """The commit a branch, tag or commit id names (raises HubError 404 like the Hub)."""
        return self._resolve(self._repo(repo_id), revision).oid

    def files_at(self, repo_id: str, revision: str = "main") -> dict[str, Blob]:
        return dict(self._resolve(self._repo(repo_id), revision).files)

    def blob_path(self, repo_id: str, path: str, revision: str = "main") -> Path:
        """Where the sandbox keeps the bytes of a file (tests compare downloads against it)."""
        return self.blobs.path(self.files_at(repo_id, revision)[path].sha256)

    def pacer(self, repo_id: str, path: str, served_size: int):
        """For a weight file under a time scale: pace(n) sleeps as long as n served bytes take at the
        profile's bandwidth, scaled to the file's real size; None otherwise."""
        real = REAL_WEIGHT_SIZES.get(repo_id, {}).get(path)
        if not self.time_scale or not real or not served_size:
            return None
        from sandbox.cluster import profile

        seconds_per_byte = real / served_size / (profile.model_download_bandwidth() * self.time_scale)

        def pace(count: int) -> None:
            # One link for every download: each block books its slot after the previous one.
            with self._link_lock:
                now = time.monotonic()
                self._link_free_at = max(now, self._link_free_at) + count * seconds_per_byte
                until = self._link_free_at
            time.sleep(max(0.0, until - time.monotonic()))
        return pace

    def _repo(self, repo_id: str) -> Repo:
        try:
            return self.repos[repo_id]
        except KeyError:
            raise HubError(404, "RepoNotFound", "Repository not found") from None

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> Commit:
        oid = repo.branches.get(revision) or repo.tags.get(revision)
        if oid is None and revision in repo.commits:
            oid = revision
        if oid is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[oid]

    # ---- faults and counters ------------------------------------------------------------

    def inject(self, fault: str, params: dict | None = None) -> dict:
        """Inject a fault: hub-cut {path, repo?, at_fraction=0.5, count=1, stall_seconds=0 (hang there first,
        until `clear`)}; hub-429 {count=1, retry_after=1,
        scope=all|api|files};
        hub-corrupt {path, repo?, offset=0, count? (default: until clear)}; hub-new-revision {repo, path?, size?};
        clear. Values may be strings (from the CLI)."""
        params = dict(params or {})
        with self._lock:
            if fault == "hub-cut":
                self._faults["hub-cut"].append({"repo": params.get("repo"), "path": self._need(params, "path", fault),
                                                "at_fraction": float(params.get("at_fraction", 0.5)),
                                                "count": int(params.get("count", 1)),
                                                "stall_seconds": float(params.get("stall_seconds", 0)),
                                                "released": threading.Event()})
            elif fault == "hub-429":
                scope = params.get("scope") or "all"
                if scope not in ("all", "api", "files"):
                    raise ValueError(f"hub-429 scope={scope!r}: use all, api (repo info, tree) or files (resolve)")
                self._throttle_count = int(params.get("count", 1))
                self._throttle_retry_after = int(params.get("retry_after", 1))
                self._throttle_scope = scope
            elif fault == "hub-corrupt":
                count = params.get("count")
                self._faults["hub-corrupt"].append({"repo": params.get("repo"), "path": self._need(params, "path", fault),
                                                    "offset": int(params.get("offset", 0)),
                                                    "count": int(count) if count not in (None, "") else None})
            elif fault == "hub-new-revision":
                repo_id = self._need(params, "repo", fault)
                path = params.get("path") or "config.json"
                commit = self.new_revision(repo_id, {path: self._changed_content(repo_id, path, params.get("size"))})
                return {"commit": commit}
            elif fault == "clear":
                self._release_stalls()
                self._faults = {"hub-cut": [], "hub-corrupt": []}
                self._throttle_count = 0
            else:
                raise ValueError(f"unknown hub fault {fault!r}: use hub-cut, hub-429, hub-corrupt, hub-new-revision, clear")
        return {}

    def _release_stalls(self) -> None:
        for rule in self._faults["hub-cut"] + self._stalled:
            rule["released"].set()
        self._stalled = []

    @staticmethod
    def _need(params: dict, key: str, fault: str) -> str:
        if not params.get(key):
            raise ValueError(f"fault {fault} needs parameter {key}=...")
        return str(params[key])

    def _changed_content(self, repo_id: str, path: str, size: Any) -> bytes | int:
        files = self.files_at(repo_id)
        current = files.get(path)
        if path.endswith(".safetensors") or size:
            return int(size or (current.size if current else 1_000_000))
        old = self.blobs.path(current.sha256).read_bytes() if current else b"{}"
        if path.endswith(".json"):
            data = json.loads(old)
            data["sandbox_revision"] = int(data.get("sandbox_revision", 0)) + 1
            return _json_bytes(data)
        return old + b"\n"

    def total_bytes_served(self) -> int:
        with self._lock:
            return sum(self.bytes_served.values())

    def reset_stats(self) -> None:
        with self._lock:
            self.bytes_served = {}
            self.requests = []

    def stats(self) -> dict:
        with self._lock:
            return {"bytes_served": dict(self.bytes_served), "total_bytes_served": sum(self.bytes_served.values()),
                    "requests": list(self.requests)}

    def _count(self, key: str, sent: int) -> None:
        with self._lock:
            self.bytes_served[key] = self.bytes_served.get(key, 0) + sent

    def _take_throttle(self, is_api: bool) -> int | None:
        with self._lock:
            if self._throttle_scope != "all" and (self._throttle_scope == "api") != is_api:
                return None
            if self._throttle_count > 0:
                self._throttle_count -= 1
                return self._throttle_retry_after
            return None

    @staticmethod
    def _matches(rule: dict, repo_id: str, path: str) -> bool:
        if rule["repo"]:
            return rule["repo"] == repo_id and rule["path"] == path
        return rule["path"] in (path, f"{repo_id}/{path}")

    def _take_cut(self, repo_id: str, path: str) -> dict | None:
        with self._lock:
            for rule in self._faults["hub-cut"]:
                if self._matches(rule, repo_id, path):
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self._faults["hub-cut"].remove(rule)
                    if rule["stall_seconds"]:
                        self._stalled.append(rule)
                    return rule
            return None

    def _take_corruption(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            for rule in self._faults["hub-corrupt"]:
                if self._matches(rule, repo_id, path):
                    if rule["count"] is not None:
                        rule["count"] -= 1
                        if rule["count"] <= 0:
                            self._faults["hub-corrupt"].remove(rule)
                    return rule["offset"]
            return None

    # ---- access ---------------------------------------------------------------------------

    def check_access(self, repo: Repo, authorization: str | None, *, for_files: bool) -> None:
        """Gated: metadata is public, files need the token (401 without, 403 with another one),
        X-Error-Code GatedRepo. Private: everything needs it; 401 without a token, 404 with a
        token that has no access, X-Error-Code RepoNotFound (the Hub does not reveal private repos)."""
        rule = repo.access
        if not rule:
            return
        token = None
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if token == rule["token"]:
            return
        if rule["mode"] == "gated":
            if not for_files:
                return
            if token is None:
                raise HubError(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have access "
                                                 "to it and be authenticated to access it. Please log in.")
            raise HubError(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are not in the "
                                             "authorized list. Visit the model page to ask for access.")
        if token is None:
            raise HubError(401, "RepoNotFound", "Repository Not Found for url: the repo is private or does not exist. "
                                                "Please make sure you are authenticated.")
        raise HubError(404, "RepoNotFound", "Repository not found")

    # ---- server ---------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving on a free 127.0.0.1 port; returns the base URL (HF_ENDPOINT)."""
        if self._server is not None:
            return self.url
        handler = type("BoundHubHandler", (HubRequestHandler,), {"hub": self})
        self._server = HubHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-hub", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("HubServer is not started: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving (bounded: waits at most a few seconds for the server thread)."""
        if self._server is None:
            return
        with self._lock:
            self._release_stalls()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


REPO_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/(.*))?$")


class HubRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler; the `hub` class attribute is the HubServer it serves."""

    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "sandbox-hub"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access log
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    # ---- dispatch ---------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        self._status = 0
        self._body_bytes = 0
        # Logged before answering, and counters updated before bytes leave: a client that has its
        # answer always finds it in the stats (no race with this thread's bookkeeping).
        self._log = {"method": method, "path": url.path, "status": 0, "body_bytes": 0,
                     "range": self.headers.get("Range")}
        if not url.path.startswith("/_sandbox/"):
            with self.hub._lock:
                self.hub.requests.append(self._log)
        retry_after = None
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if url.path == "/_sandbox/stats":
                self._send_json(200, self.hub.stats())
                return
            query = parse_qs(url.query)
            api = REPO_API.match(url.path)
            retry_after = self.hub._take_throttle(is_api=api is not None)
            if retry_after is not None:
                raise HubError(429, None, "You have been rate-limited; retry later")
            if api:
                self._api(method, api, query, body)
            else:
                self._serve_file(method, url.path)
        except HubError as err:
            headers = {"Retry-After": str(retry_after)} if err.status == 429 else {}
            self._send_error(err, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug in the stand-in: answer 500 rather than hang the client
            self.close_connection = True
            if not self._status:
                self._send_error(HubError(500, None, f"sandbox hub error: {type(err).__name__}: {err}"), {})

    def _api(self, method: str, match: re.Match, query: dict, body: bytes) -> None:
        kind, org, name, rest = match.group(1), unquote(match.group(2)), unquote(match.group(3)), match.group(4) or ""
        if kind != "models":
            raise HubError(404, "RepoNotFound", "Repository not found")
        repo = self.hub._repo(f"{org}/{name}")
        self.hub.check_access(repo, self.headers.get("Authorization"), for_files=False)
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        if method == "GET" and not parts:
            return self._send_json(200, self._model_info(repo, "main", query))
        if method == "GET" and len(parts) == 2 and parts[0] == "revision":
            return self._send_json(200, self._model_info(repo, parts[1], query))
        if method == "GET" and len(parts) >= 2 and parts[0] == "tree":
            commit = self.hub._resolve(repo, parts[1])
            return self._send_json(200, self._tree(repo, commit, "/".join(parts[2:]).strip("/"),
                                                   _truthy((query.get("recursive") or [""])[0]),
                                                   _truthy((query.get("expand") or [""])[0])))
        if method == "POST" and len(parts) == 2 and parts[0] == "paths-info":
            commit = self.hub._resolve(repo, parts[1])
            paths, expand = self._paths_info_form(body)
            return self._send_json(200, self._paths_info(commit, paths, expand))
        raise HubError(404, None, f"Sorry, we can't find the page you are looking for ({method} {self.path})")

    def _paths_info_form(self, body: bytes) -> tuple[list[str], bool]:
        if "json" in (self.headers.get("Content-Type") or ""):
            data = json.loads(body or b"{}")
            paths = data.get("paths") or []
            return ([paths] if isinstance(paths, str) else list(paths)), _truthy(str(data.get("expand", "")))
        form = parse_qs(body.decode())
        return form.get("paths", []), _truthy((form.get("expand") or [""])[0])

    # ---- API bodies -------------------------------------------------------------------------

    def _model_info(self, repo: Repo, revision: str, query: dict) -> dict:
        commit = self.hub._resolve(repo, revision)
        blobs = _truthy((query.get("blobs") or [""])[0])
        siblings = []
        for path, blob in sorted(commit.files.items()):
            entry: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry.update(size=blob.size, blobId=blob.blob_id)
                if blob.lfs:
                    entry["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
            siblings.append(entry)
        gated = repo.access["mode"] == "gated" if repo.access else False
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
            "createdAt": BASE_DATE.isoformat().replace("+00:00", "Z"),
            "private": bool(repo.access and repo.access["mode"] == "private"), "gated": "manual" if gated else False,
            "disabled": False, "downloads": 0, "likes": 0, "library_name": "transformers",
            "tags": ["transformers", "safetensors", "sandbox"], "siblings": siblings,
            "usedStorage": sum(b.size for b in commit.files.values()),
        }

    def _entry(self, commit: Commit, path: str, expand: bool) -> dict:
        blob = commit.files[path]
        entry: dict[str, Any] = {"type": "file", "oid": blob.blob_id, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.message, "date": commit.date}
            entry["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                           "pickleImportScan": None}
        return entry

    def _directory_entry(self, commit: Commit, path: str, expand: bool) -> dict:
        entry: dict[str, Any] = {"type": "directory", "oid": _tree_oid(commit.oid, path), "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.message, "date": commit.date}
        return entry

    @staticmethod
    def _directories(commit: Commit) -> set[str]:
        dirs = set()
        for path in commit.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _tree(self, repo: Repo, commit: Commit, base: str, recursive: bool, expand: bool) -> list[dict]:
        directories = self._directories(commit)
        if base and base not in directories:
            if base in commit.files:
                return [self._entry(commit, base, expand)]
            raise HubError(404, "EntryNotFound", f"{base} does not exist on \"{commit.oid}\"")
        prefix = base + "/" if base else ""

        def wanted(path: str) -> bool:
            if not path.startswith(prefix) or path == base:
                return False
            return recursive or "/" not in path[len(prefix):]

        entries = [self._directory_entry(commit, d, expand) for d in sorted(directories) if wanted(d)]
        entries += [self._entry(commit, p, expand) for p in sorted(commit.files) if wanted(p)]
        return entries

    def _paths_info(self, commit: Commit, paths: list[str], expand: bool) -> list[dict]:
        directories = self._directories(commit)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._entry(commit, path, expand))
            elif path in directories:
                out.append(self._directory_entry(commit, path, expand))
        return out

    # ---- file download ----------------------------------------------------------------------

    def _serve_file(self, method: str, raw_path: str) -> None:
        segments = raw_path.split("/")
        # /{org}/{name}/resolve/{rev}/{path...}
        if method not in ("GET", "HEAD") or len(segments) < 6 or segments[3] != "resolve":
            raise HubError(404, None, f"Sorry, we can't find the page you are looking for ({raw_path})")
        repo = self.hub._repo(f"{unquote(segments[1])}/{unquote(segments[2])}")
        self.hub.check_access(repo, self.headers.get("Authorization"), for_files=True)
        commit = self.hub._resolve(repo, unquote(segments[4]))
        path = unquote("/".join(segments[5:]))
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path} at {commit.oid}")
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{blob.sha256 if blob.lfs else blob.blob_id}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream" if blob.lfs else "text/plain; charset=utf-8",
            "Cache-Control": "public, max-age=0",
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        start, end, status = 0, blob.size - 1, 200
        requested = self.headers.get("Range")
        if requested:
            start, end = self._parse_range(requested, blob.size)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        self._set_status(status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        key = f"{repo.repo_id}/{path}"
        cut = self.hub._take_cut(repo.repo_id, path)
        corrupt_offset = self.hub._take_corruption(repo.repo_id, path)
        limit = length if cut is None else int(length * cut["at_fraction"])
        with open(self.hub.blobs.path(blob.sha256), "rb") as source:
            if corrupt_offset is None:
                self._sendfile(source, start, limit, key, self.hub.pacer(repo.repo_id, path, blob.size))
            else:
                self._send_corrupted(source, start, limit, corrupt_offset, key)
        if cut is not None:
            # The connection drops in the middle of the body, as a network cut would; with
            # stall_seconds it first hangs there (a test can kill the client at a known point).
            if cut["stall_seconds"]:
                cut["released"].wait(cut["stall_seconds"])
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _parse_range(self, value: str, size: int) -> tuple[int, int]:
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*(?:,.*)?", value)
        if not match or (not match.group(1) and not match.group(2)):
            raise self._unsatisfiable(size)
        first, last = match.group(1), match.group(2)
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        if start >= size or end < start:
            raise self._unsatisfiable(size)
        return start, end

    @staticmethod
    def _unsatisfiable(size: int) -> HubError:
        err = HubError(416, None, f"Requested range not satisfiable (size {size})")
        err.content_range = f"bytes */{size}"  # type: ignore[attr-defined]
        return err

    def _set_status(self, status: int) -> None:
        self._status = status
        self._log["status"] = status

    def _counted_send(self, key: str, planned: int, send) -> int:
        """Count `planned` bytes before sending them, then take back what did not leave."""
        self.hub._count(key, planned)
        sent = 0
        try:
            sent = send()
        finally:
            if sent != planned:
                self.hub._count(key, sent - planned)
            self._body_bytes += sent
            self._log["body_bytes"] = self._body_bytes
        return sent

    def _sendfile(self, source, offset: int, count: int, key: str, pace=None) -> None:
        """Zero-copy from the page cache to the socket (os.sendfile, 8 MiB at a time); `pace(n)`
        first waits as long as n bytes take at the simulated bandwidth."""
        out_fd, in_fd = self.connection.fileno(), source.fileno()
        block = SEND_BLOCK if pace is None else 64 * 1024  # paced: small blocks share the link fairly
        while self._body_bytes < count:
            position, planned = offset + self._body_bytes, min(block, count - self._body_bytes)
            if pace is not None:
                pace(planned)
            if not self._counted_send(key, planned, lambda: os.sendfile(out_fd, in_fd, position, planned)):
                break

    def _send_corrupted(self, source, offset: int, count: int, corrupt_at: int, key: str) -> None:
        source.seek(offset)
        while self._body_bytes < count:
            position = offset + self._body_bytes
            block = bytearray(source.read(min(1024 * 1024, count - self._body_bytes)))
            if not block:
                break
            if position <= corrupt_at < position + len(block):
                block[corrupt_at - position] ^= 0xFF

            def send_block(block=block) -> int:
                self.wfile.write(block)
                return len(block)

            self._counted_send(key, len(block), send_block)

    # ---- responses --------------------------------------------------------------------------

    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self._set_status(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, err: HubError, headers: dict) -> None:
        headers = dict(headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message
        content_range = getattr(err, "content_range", None)
        if content_range:
            headers["Content-Range"] = content_range
        self._send_json(err.status, {"error": err.message}, headers)
