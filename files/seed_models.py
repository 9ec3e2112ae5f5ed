#!/usr/bin/env python3
"""Seed one Hugging Face model repo into a directory at a pinned commit: verified, resumable.

Runs in the seeding Job (the TTS image by default: Python 3.11, huggingface_hub 0.x; the ASR image has Python 3.10 and 0.36.x) and locally with
huggingface_hub 2.x; needs nothing beyond huggingface_hub and the standard library.

    HF_TOKEN=... HF_ENDPOINT=... python3 seed_models.py --repo Qwen/Qwen3-ASR-1.7B \\
        --revision 7278e1e70fe206f11671096ffdd38061171dd6e5 --dest /models/Qwen3-ASR-1.7B

What it does:
- lists the files at the commit with their size and sha256 (LFS) or git blob id, through
  huggingface_hub (`HfApi.list_repo_tree(recursive=True)`, same call in 0.36 and 2.x);
- downloads what is missing with its own ranged HTTP GETs (URL from `hf_hub_url`, headers from
  `build_hf_headers`) into `<dest>/.seed/<path>.part`, several files at a time. huggingface_hub
  >= 1.18 deletes a killed download's temp file, so a Spot interruption would restart a 4 GB
  shard from zero; here the `.part` file survives and the next run continues from its size;
- hashes every downloaded byte as it arrives and checks size + sha256 (LFS) or git sha1 before
  moving the file into place with os.replace; a file that fails the check is fetched once more,
  then the run fails;
- writes `<dest>/.qwen3-seed-manifest.json` (repo, commit, and per file its size, hash and the
  stat it had when that hash was verified: size, inode, mtime_ns, ctime_ns) last and atomically;
  it is removed before the first file in `<dest>` changes, so a manifest always describes a
  complete directory, and it certifies only bytes this run verified or that provably did not
  change since (same stat; ctime cannot be set back by a user, see check_model_manifest.py);
- on a rerun, when the manifest names the wanted commit and every file still has its recorded
  stat, it exits 0 at once without contacting the Hub (when --revision is a commit) and without
  hashing; a file whose stat changed is hashed and fetched again only if its bytes differ
  (a flipped byte with the mtime restored, a truncation, a deletion: only that file);
  `--verify full` re-hashes everything. Files whose hash matches the new listing are kept, so a
  new commit that changes one file fetches only that file;
- with --local-source DIR (a copy of the repo at the same commit on the node's own disk, e.g.
  the GPU image cache's data volume mounted read-only), a file found there with the listed size
  is copied from it instead, hashed as it is read and checked against the same Hub hash before it
  is moved into place; a file missing there, or whose copy does not verify, is downloaded from
  the Hub as above, so a bad local copy costs a download, never a wrong file;
- prints a progress line every few seconds (bytes done of total, rate, ETA; "stalled since ..."
  once no byte came for --stall-seconds), a summary line, and a last line `SEED-RESULT {json}`
  on success (for programs: the deploy turns it into one short line); on failure the last line
  is the error.

Single writer: one seeder per directory, claimed by creating `<dest>/.qwen3-seed.lock` with
O_CREAT|O_EXCL (atomic on NFSv4/EFS as on local disks) holding host, pid and start time; the
holder touches it every few seconds and a claim not touched for --lock-stale-seconds (or held by
a dead pid on this host) is broken. flock/fcntl locks are not used: on NFS/EFS they are leases
held by the client node, some mounts only lock locally (`local_lock`), and a lock of a node that
vanished in a Spot interruption lingers until the server expires it; a visible lock file whose
holder and age a person can read works the same everywhere.

Exit codes: 0 done; 1 unexpected error; 2 bad arguments; 3 access refused (401/403: gated or
private repo, HF_TOKEN missing or wrong); 4 repo, revision or file not found (404); 5 not
enough disk space; 6 hash or size mismatch after a second download; 7 another seeder holds the
directory; 8 the Hub kept failing (429/5xx/connection errors) after the retries.

Test-only: QWEN3_SEED_TEST_FREE_BYTES overrides the free-space figure of the disk precheck (a
test cannot fill a real disk), QWEN3_SEED_TEST_COPY_SECONDS_PER_BYTE paces --local-source copies
(the sandbox's simulated disk), QWEN3_SEED_TEST_SETTLE_SECONDS shortens the 1 s settle before the
manifest (the sandbox's time scale); never set them in a deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from urllib.parse import urlsplit

# The guard's file checks (same directory, in the image as in files/): one definition of "this
# file is the one that was verified" for the seeder and the guard.
from check_model_manifest import LOCK_NAME, MANIFEST_FORMAT, MANIFEST_NAME, hash_path, new_hasher, stat_record

SEEDER = "qwen3-seed-models"
VERSION = "1.0.0"
WORK_DIR_NAME = ".seed"
DEFAULT_ENDPOINT = "https://huggingface.co"
TEST_FREE_BYTES_ENV = "QWEN3_SEED_TEST_FREE_BYTES"
# Test-only, set by the sandbox's kubelet under a time scale: wall seconds per byte copied from
# --local-source, so a copy of a scaled-down repo takes as long as the real one would.
TEST_COPY_PACE_ENV = "QWEN3_SEED_TEST_COPY_SECONDS_PER_BYTE"
MAX_READ = 1024 * 1024  # bytes per socket read: what a kill can lose from user space, on top of socket buffers
# A file's stat proves it unchanged only once the clock has moved past its ctime: a write in the
# same timestamp tick would leave ctime as it was (git's "racily clean" entries). The manifest is
# written only when the file system's clock is this far past the newest recorded ctime.
SETTLE_NS = 1_000_000_000
# Test-only, set by the sandbox's kubelet: the settle on the sandbox's time scale, in seconds. The
# probe file still proves the clock has moved past the newest ctime; the sandbox's own disk stamps
# times in milliseconds or finer, so a shorter margin stays sound there.
TEST_SETTLE_ENV = "QWEN3_SEED_TEST_SETTLE_SECONDS"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_DISK_FULL = 5
EXIT_VERIFY = 6
EXIT_LOCKED = 7
EXIT_HUB_UNAVAILABLE = 8


class SeedError(Exception):
    """A failure with its exit code and the one-line message a person reads in `kubectl logs`."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


class Mismatch(Exception):
    """A downloaded file whose size or hash is not the Hub's."""


class Transient(Exception):
    """A failure worth retrying: connection cut, timeout, 429, 5xx."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# The main thread never blocks longer than this at a time. CPython runs a Python signal handler on
# the main thread only, once that thread is back in the interpreter (docs of the signal module), and
# POSIX lets the kernel hand a process's SIGTERM to any thread not blocking it. When a download
# worker gets it, a main thread asleep on a lock with no timeout is not woken, and the handler
# waits as long as that lock does: the seeder went on through a 60 s stalled read after SIGTERM
# (caught with /proc/<pid>/task/*/status: SIGTERM neither pending nor blocked, main thread in
# concurrent.futures.wait).
SIGNAL_LATENCY_SECONDS = 0.25


def stoppable_wait(event: threading.Event, timeout: float) -> bool:
    """event.wait(timeout) in slices, so that a signal's handler runs within SIGNAL_LATENCY_SECONDS."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return event.is_set()
        if event.wait(min(remaining, SIGNAL_LATENCY_SECONDS)):
            return True


def log(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1000.0
    return f"{count:.2f} TB"


def human_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def parse_size(text: str) -> int:
    """'16MiB', '64KiB', '1MB', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 16MiB, 512KiB or a number of bytes")
    number, unit = int(match.group(1)), (match.group(2) or "B").upper()
    factors = {"B": 1, "K": 1000, "KB": 1000, "KI": 1024, "KIB": 1024, "M": 1000 ** 2, "MB": 1000 ** 2,
               "MI": 1024 ** 2, "MIB": 1024 ** 2, "G": 1000 ** 3, "GB": 1000 ** 3, "GI": 1024 ** 3, "GIB": 1024 ** 3}
    value = number * factors[unit]
    if value < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} must be at least 1 byte")
    return value


# ---- files and hashes -----------------------------------------------------------------------

class RemoteFile:
    """A file at the pinned commit: path, size and the hash the Hub publishes for it."""

    def __init__(self, path: str, size: int, sha256: str | None, blob_id: str | None):
        self.path, self.size, self.sha256, self.blob_id = path, size, sha256, blob_id

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "git-sha1"

    @property
    def expected(self) -> str:
        return self.sha256 or self.blob_id or ""

    def hasher(self):
        return new_hasher(bool(self.sha256), self.size)

    def manifest_entry(self, verified: dict) -> dict:
        """The file with its hash and the stat it had when that hash was verified."""
        entry = {"path": self.path, "size": self.size}
        entry["sha256" if self.sha256 else "blob_id"] = self.expected
        entry["verified"] = verified
        return entry


def check_repo_path(path: str, repo: str) -> str:
    """Refuse paths that would land outside the destination or on the seeder's own files."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts)
            or parts[0] in (WORK_DIR_NAME, MANIFEST_NAME, LOCK_NAME)):
        raise SeedError(EXIT_ERROR, f"{repo} lists a file named {path!r}, which this seeder refuses to write "
                                    "(absolute, '..' or its own bookkeeping name)")
    return path


class Progress:
    """Bytes done of total for one model; prints a line every `interval` seconds, and says
    "stalled" (since when) once no byte has arrived for `stall_seconds`."""

    def __init__(self, label: str, total: int, done: int, interval: float, stall_seconds: float = 60.0):
        self.label, self.total, self.done, self.interval = label, total, done, interval
        self.stall_seconds = stall_seconds
        self.downloaded = 0
        self.copied = 0  # from --local-source
        self.resumed_bytes = 0
        self._last_byte_at = time.monotonic()
        self._last_byte_wall = time.time()
        self.files_done = 0
        self.files_total = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, count: int, *, copied: bool = False) -> None:
        """Bytes written into place: downloaded from the Hub, or copied from --local-source."""
        with self._lock:
            self.done += count
            if copied:
                self.copied += count
            else:
                self.downloaded += count
            if count:
                self._last_byte_at, self._last_byte_wall = time.monotonic(), time.time()

    def resumed(self, count: int) -> None:
        """Bytes found in a partial file: done, but not downloaded by this run."""
        with self._lock:
            self.done += count
            self.resumed_bytes += count

    def rewind(self, count: int) -> None:
        with self._lock:
            self.done -= count

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def line(self) -> str:
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = (self.downloaded + self.copied) / elapsed
            remaining = max(self.total - self.done, 0)
            eta = human_seconds(remaining / rate) if rate > 0 else "unknown"
            percent = 100.0 * self.done / self.total if self.total else 100.0
            done = f"{human_bytes(self.done)} of {human_bytes(self.total)} ({percent:.1f}%)"
            files = f"files {self.files_done}/{self.files_total} done"
            quiet = time.monotonic() - self._last_byte_at
            if quiet >= self.stall_seconds:  # a falling rate and a rising ETA would hide this
                since = time.strftime("%H:%M:%S UTC", time.gmtime(self._last_byte_wall))
                return (f"[seed] {self.label}: stalled since {since}, no byte for {human_seconds(quiet)}; "
                        f"{done}, {files}; transfers are retried, or delete the Job to start over")
            return f"[seed] {self.label}: {done} at {human_bytes(rate)}/s, ETA {eta}; {files}"

    def start(self) -> None:
        self.started = self._last_byte_at = time.monotonic()
        self._last_byte_wall = time.time()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            log(self.line())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---- the Hub through huggingface_hub ----------------------------------------------------------

def error_details(err: BaseException) -> tuple[int | None, str | None, float | None]:
    """(HTTP status, X-Error-Code, Retry-After seconds) of a huggingface_hub or urllib error."""
    status, headers = None, None
    if isinstance(err, urllib.error.HTTPError):
        status, headers = err.code, err.headers
    else:
        response = getattr(err, "response", None)
        if response is not None:
            status = getattr(response, "status_code", None)
            headers = getattr(response, "headers", None)
    code = headers.get("X-Error-Code") if headers is not None else None
    retry_after = None
    if headers is not None and headers.get("Retry-After"):
        try:
            retry_after = float(headers.get("Retry-After"))
        except ValueError:
            retry_after = None
    return status, code, retry_after


def is_connection_error(err: BaseException) -> bool:
    if isinstance(err, (OSError, http.client.HTTPException, TimeoutError)):
        return True
    module = type(err).__module__ or ""
    # requests (0.36) and httpx/httpx2 (1.x, 2.x) transport errors, without importing either
    return module.split(".")[0] in ("requests", "urllib3", "httpx", "httpx2", "httpcore") and "HTTPError" not in type(err).__name__


class Hub:
    """What the seeder asks of the Hub, with the errors turned into SeedError messages."""

    def __init__(self, repo: str, endpoint: str, token: str | None, retries: int, stop: threading.Event):
        self.repo, self.endpoint, self.token, self.retries, self.stop = repo, endpoint, token, retries, stop
        try:
            import huggingface_hub
            from huggingface_hub import HfApi, hf_hub_url
            from huggingface_hub.utils import build_hf_headers
        except ImportError as err:
            raise SeedError(EXIT_ERROR, f"huggingface_hub is not importable by {sys.executable} ({err}); "
                                        "use an image that has it (the ASR image does) or pip install huggingface_hub")
        self.library_version = huggingface_hub.__version__
        self.api = HfApi(endpoint=endpoint, token=token or False)
        self._hf_hub_url = hf_hub_url
        self.headers = build_hf_headers(token=token or False, library_name=SEEDER, library_version=VERSION)
        self.headers["Accept-Encoding"] = "identity"  # sizes and hashes are of the raw bytes

    def describe_failure(self, err: BaseException, what: str, revision: str | None = None) -> SeedError | None:
        """A clear SeedError for a permanent HTTP failure, or None when retrying may help."""
        status, code, _ = error_details(err)
        where = f"on {self.endpoint}"
        token_state = "HF_TOKEN is not set" if not self.token else "the token in HF_TOKEN was refused"
        fix_token = ("set the hub token secret in the inventory (hf_token_secret) and export HF_TOKEN when running "
                     "the playbook, with a token whose account has accepted the model's terms on the Hub")
        if code == "GatedRepo" or (status in (401, 403) and code != "RepoNotFound"):
            return SeedError(EXIT_AUTH, f"{what}: the Hub refused access to {self.repo} {where} (HTTP {status}"
                                        f"{', ' + code if code else ''}): the repo is gated or private and "
                                        f"{token_state}; {fix_token}")
        if code == "RepoNotFound" and status == 401:
            return SeedError(EXIT_AUTH, f"{what}: repository {self.repo} is not visible {where} (HTTP 401 "
                                        f"RepoNotFound): it does not exist, or it is private and {token_state}; "
                                        f"check the repo name in the inventory or {fix_token}")
        if code == "RevisionNotFound":
            return SeedError(EXIT_NOT_FOUND, f"{what}: revision {revision!r} of {self.repo} not found {where}; "
                                             "fix the model revision in the inventory (a branch, tag or 40-hex commit)")
        if code == "RepoNotFound" or (status == 404 and code is None and revision is None):
            return SeedError(EXIT_NOT_FOUND, f"{what}: repository {self.repo} not found {where} (or it is private "
                                             "and the token has no access); fix the model repo in the inventory")
        if code == "EntryNotFound" or status == 404:
            return SeedError(EXIT_NOT_FOUND, f"{what}: the Hub {where} answered 404 ({code or 'Not Found'}) for "
                                             f"{self.repo}@{revision}; the listing and the files disagree, rerun later")
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return SeedError(EXIT_ERROR, f"{what}: the Hub {where} answered HTTP {status} for {self.repo}: {err}")
        return None

    def call(self, what: str, fn, revision: str | None = None):
        """Run a huggingface_hub call, retrying 429/5xx/connection errors with backoff (Retry-After honoured)."""
        attempt = 0
        while True:
            try:
                return fn()
            except SeedError:
                raise
            except Exception as err:
                failure = self.describe_failure(err, what, revision)
                if failure is not None:
                    raise failure from None
                status, _, retry_after = error_details(err)
                if status is None and not is_connection_error(err):
                    raise
                if attempt >= self.retries:
                    raise SeedError(EXIT_HUB_UNAVAILABLE, f"{what}: the Hub at {self.endpoint} kept failing after "
                                                          f"{attempt + 1} attempts (last: {describe(err)}); "
                                                          "check HF_ENDPOINT and the network, then rerun")
                delay = backoff(attempt, retry_after)
                log(f"[seed] {what}: {describe(err)}; retrying in {delay:.1f}s")
                if stoppable_wait(self.stop, delay):
                    raise SeedError(EXIT_ERROR, f"{what}: interrupted")
                attempt += 1

    def resolve_commit(self, revision: str) -> str:
        info = self.call(f"resolving {self.repo}@{revision}",
                         lambda: self.api.model_info(self.repo, revision=revision), revision)
        return info.sha

    def list_files(self, commit: str) -> list[RemoteFile]:
        def fetch():
            return list(self.api.list_repo_tree(self.repo, recursive=True, revision=commit))

        files = []
        for entry in self.call(f"listing {self.repo}@{commit[:12]}", fetch, commit):
            if not hasattr(entry, "blob_id"):  # RepoFolder
                continue
            lfs = getattr(entry, "lfs", None)
            sha256 = None
            if lfs is not None:
                sha256 = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
            files.append(RemoteFile(check_repo_path(entry.path, self.repo), int(entry.size), sha256, entry.blob_id))
        if not files:
            raise SeedError(EXIT_NOT_FOUND, f"{self.repo}@{commit} has no files on {self.endpoint}")
        return files

    def url(self, path: str, commit: str) -> str:
        return self._hf_hub_url(self.repo, path, revision=commit, endpoint=self.endpoint)


def describe(err: BaseException) -> str:
    status, code, _ = error_details(err)
    if status is not None:
        return f"HTTP {status}{' ' + code if code else ''}"
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:200]


def backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(max(retry_after, 0.0), 120.0)
    return min(30.0, 0.5 * (2 ** attempt)) * (0.75 + random.random() / 2)


def close_error_response(err: urllib.error.HTTPError) -> None:
    """Close the response an HTTPError carries, now. The raised SeedError still refers to it (as its
    context), so left open it is closed by the collector at exit, after its socket, and the seeder's
    last line became "Exception ignored ... ValueError: I/O operation on closed file" instead of the
    error (seen under load, on a gated repo)."""
    try:
        err.close()
    except (AttributeError, OSError, ValueError):  # no response body (fp None), or already gone
        pass


class _DropAuthOnOtherHost(urllib.request.HTTPRedirectHandler):
    """Follow the Hub's redirects (LFS files go to a CDN) without sending the token to another host:
    presigned CDN URLs reject a second Authorization, and the token must not leak there."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


# ---- the destination directory -----------------------------------------------------------------

class DirectoryClaim:
    """Exclusive claim on a model directory through an O_EXCL-created lock file (see module docstring)."""

    def __init__(self, dest: str, stale_seconds: float, wait_seconds: float, stop: threading.Event):
        self.path = os.path.join(dest, LOCK_NAME)
        self.stale_seconds, self.wait_seconds, self.stop = stale_seconds, wait_seconds, stop
        self.identity = {"host": socket.gethostname(), "pid": os.getpid(),
                         "started_at": utc_now(), "seeder": f"{SEEDER}/{VERSION}",
                         "nonce": "%016x" % random.getrandbits(64)}
        self.lost = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._released = threading.Event()

    def _read_holder(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder: dict) -> tuple[bool, float]:
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return True, 0.0
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True, age  # the holder died on this very host
            except PermissionError:
                pass
        return age > self.stale_seconds, age

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        announced = False
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                stale, age = self._is_stale(holder)
                if stale:
                    log(f"[seed] breaking a stale claim on {os.path.dirname(self.path)} held by "
                        f"{holder.get('host', '?')} pid {holder.get('pid', '?')} (last refreshed {age:.0f}s ago)")
                    self._break()
                    continue
                if time.monotonic() >= deadline:
                    raise SeedError(EXIT_LOCKED, f"{os.path.dirname(self.path)} is being seeded by "
                                                 f"{holder.get('host', '?')} pid {holder.get('pid', '?')} (claim "
                                                 f"refreshed {age:.0f}s ago); wait for it to finish, or if that "
                                                 f"seeder is gone for good, delete {self.path}")
                if not announced:
                    log(f"[seed] waiting for the seeder {holder.get('host', '?')} pid {holder.get('pid', '?')} "
                        f"that holds {self.path}")
                    announced = True
                if stoppable_wait(self.stop, min(2.0, max(deadline - time.monotonic(), 0.05))):
                    raise SeedError(EXIT_ERROR, "interrupted while waiting for the directory claim")
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.identity, handle)
                handle.flush()
                os.fsync(handle.fileno())
            break
        self._heartbeat = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
        self._heartbeat.start()

    def _break(self) -> None:
        # rename is atomic: of two seeders breaking the same stale claim, one rename wins and the
        # other gets ENOENT and goes back to O_EXCL.
        tomb = f"{self.path}.stale-{socket.gethostname()}-{os.getpid()}-{random.getrandbits(32):08x}"
        try:
            os.rename(self.path, tomb)
            os.unlink(tomb)
        except FileNotFoundError:
            pass

    def _beat(self) -> None:
        interval = max(min(self.stale_seconds / 4.0, 15.0), 0.2)
        while not self._released.wait(interval):
            if self._read_holder().get("nonce") != self.identity["nonce"]:
                log(f"[seed] lost the claim on {os.path.dirname(self.path)}: another seeder broke it")
                self.lost.set()
                self.stop.set()
                return
            try:
                os.utime(self.path, None)
            except OSError:
                pass

    def release(self, wait: bool = True) -> None:
        self._released.set()
        if wait and self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self._read_holder().get("nonce") == self.identity["nonce"]:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_manifest(dest: str) -> dict | None:
    try:
        with open(os.path.join(dest, MANIFEST_NAME), encoding="utf-8") as handle:
            manifest = json.load(handle)
        return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), list) else None
    except (OSError, ValueError):
        return None


def manifest_problem(manifest: dict | None, dest: str, repo: str, commit: str) -> str | None:
    """Why the manifest does not prove a complete seed of repo@commit (None = it does), by each
    file's stat at verification (size, inode, mtime, ctime): no hashing, no Hub."""
    if manifest is None:
        return "no completion manifest"
    if manifest.get("repo") != repo or manifest.get("commit") != commit:
        return f"manifest is for {manifest.get('repo')}@{manifest.get('commit')}"
    for entry in manifest["files"]:
        try:
            st = os.stat(os.path.join(dest, entry["path"]))
        except (OSError, KeyError, TypeError):
            return f"{entry.get('path')} is missing"
        if entry.get("verified") != stat_record(st):
            return f"{entry['path']} changed since it was verified (its size, inode, mtime or ctime)"
    return None


def fsync_directory(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not fsync directories; the rename is still atomic
    finally:
        os.close(fd)


def write_json_atomically(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(path))


def free_bytes(path: str) -> int:
    override = os.environ.get(TEST_FREE_BYTES_ENV)
    if override:
        return int(override)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class BackgroundSync:
    """fsync a partial file every `every` bytes on a helper thread, so durability never stalls the
    download. A process kill keeps everything written (page cache); fsync bounds what a lost node
    can tear to the last chunk or so, and the final hash check catches that."""

    def __init__(self, fd: int, every: int):
        self.fd, self.every = fd, every
        self.unsynced = 0
        self.error: OSError | None = None
        self._due = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="fsync", daemon=True)
        self._thread.start()

    def written(self, count: int) -> OSError | None:
        """Note `count` more bytes written; returns an fsync error seen so far, if any."""
        self.unsynced += count
        if self.unsynced >= self.every:
            self.unsynced = 0
            self._due.set()
        return self.error

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._closing:
                return
            try:
                os.fsync(self.fd)
            except OSError as err:
                self.error = err
                return

    def close(self, final_sync: bool = True) -> None:
        self._closing = True
        self._due.set()
        self._thread.join(timeout=60)
        if final_sync and self.error is None:
            try:
                os.fsync(self.fd)
            except OSError as err:
                self.error = err


# ---- seeding ---------------------------------------------------------------------------------

class Seeder:
    """One run for one model directory; see the module docstring for the behaviour."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.repo = args.repo
        self.dest = os.path.abspath(args.dest)
        self.work = os.path.join(self.dest, WORK_DIR_NAME)
        self.token = os.environ.get("HF_TOKEN") or None
        self.endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.hashed_bytes = 0
        self.refetched: list[str] = []
        self.fetched: list[str] = []
        self.copied: list[str] = []  # fetched from --local-source
        self.local_source = os.path.abspath(args.local_source) if args.local_source else None
        self._counter_lock = threading.Lock()
        self._manifest_dropped = False
        self.progress: Progress | None = None
        self.commit = ""
        self._hub: Hub | None = None
        self.hub_headers: dict = {}
        self.claim: DirectoryClaim | None = None

    # -- entry point --

    def run(self) -> dict:
        args = self.args
        commit = args.revision if COMMIT_RE.match(args.revision) else None
        if commit and args.verify == "fast":
            result = self._fast_path(commit)
            if result is not None:
                return result
        hub = Hub(self.repo, self.endpoint, self.token, args.retries, self.stop)
        self._hub, self.hub_headers = hub, hub.headers
        if commit is None:
            commit = hub.resolve_commit(args.revision)
            log(f"[seed] {self.repo}: revision {args.revision} is commit {commit}")
            if args.verify == "fast":
                result = self._fast_path(commit)
                if result is not None:
                    return result
        self.commit = commit
        os.makedirs(self.dest, exist_ok=True)
        claim = DirectoryClaim(self.dest, args.lock_stale_seconds, args.lock_wait_seconds, self.stop)
        claim.acquire()
        self.claim = claim
        try:
            return self._seed(hub, commit, claim)
        except SeedError:
            if claim.lost.is_set():  # the workers stopped because the claim was taken over
                raise SeedError(EXIT_LOCKED, f"another seeder broke this one's claim on {self.dest} (it looked "
                                             "stale); this one stops without a manifest and leaves the directory "
                                             "to it") from None
            raise
        finally:
            self.claim = None
            claim.release()

    def _fast_path(self, commit: str) -> dict | None:
        manifest = read_manifest(self.dest)
        problem = manifest_problem(manifest, self.dest, self.repo, commit)
        if problem is not None:
            log(f"[seed] {self.repo}@{commit[:12]}: {problem}; seeding")
            return None
        total = sum(int(entry["size"]) for entry in manifest["files"])
        seconds = time.monotonic() - self.started
        log(f"[seed] {self.repo}@{commit[:12]} already complete in {self.dest} ({len(manifest['files'])} files, "
            f"{human_bytes(total)}, verified {manifest.get('finished_at')}); nothing to do")
        return self._result(commit, manifest["files"], total, fast_path=True, seconds=seconds, removed=[])

    def _result(self, commit: str, files: list, total: int, *, fast_path: bool, seconds: float,
                removed: list[str]) -> dict:
        downloaded = self.progress.downloaded if self.progress else 0
        copied = self.progress.copied if self.progress else 0
        return {"ok": True, "repo": self.repo, "commit": commit, "dest": self.dest, "files": len(files),
                "total_bytes": total, "downloaded_bytes": downloaded, "copied_bytes": copied,
                "copied": sorted(self.copied), "local_source": self.local_source, "hashed_bytes": self.hashed_bytes,
                "resumed_bytes": self.progress.resumed_bytes if self.progress else 0,
                "fetched": sorted(self.fetched), "refetched_after_mismatch": sorted(self.refetched),
                "removed": removed, "fast_path": fast_path, "verify": self.args.verify,
                "seconds": round(seconds, 3), "seeder": f"{SEEDER}/{VERSION}"}

    def _seed(self, hub: Hub, commit: str, claim: DirectoryClaim) -> dict:
        args = self.args
        label = f"{self.repo}@{commit[:12]}"
        remote = hub.list_files(commit)
        total = sum(f.size for f in remote)
        log(f"[seed] {label}: {len(remote)} files, {human_bytes(total)} (huggingface_hub {hub.library_version}, "
            f"{args.workers} parallel transfers, verify={args.verify})")
        old_manifest = read_manifest(self.dest)
        old_entries = {e.get("path"): e for e in (old_manifest or {}).get("files", []) if isinstance(e, dict)}

        # Phase 1: which files are already right: unchanged since verified (stat), or hashed now.
        keep: dict[str, dict] = {}
        fetch: list[RemoteFile] = []
        to_hash: list[RemoteFile] = []
        for rf in remote:
            reason = self._reusable(rf, old_entries.get(rf.path))
            if reason == "trusted":
                keep[rf.path] = old_entries[rf.path]["verified"]
            elif reason == "hash":
                to_hash.append(rf)
            else:
                if reason != "missing":  # a fresh seed would otherwise print one line per file
                    log(f"[seed] {label}: {rf.path}: {reason}; fetching it")
                fetch.append(rf)
        if to_hash:
            for rf, verified in self._parallel(self._hash_local, to_hash):
                if verified is not None:
                    keep[rf.path] = verified
                else:
                    log(f"[seed] {label}: {rf.path}: content differs from the Hub's {rf.algorithm}; fetching it")
                    fetch.append(rf)

        # Phase 2: enough space for what is left to download?
        need = sum(rf.size - self._part_size(rf) for rf in fetch)
        if need:
            os.makedirs(self.work, exist_ok=True)
            free = free_bytes(self.dest)
            if need > free:
                raise SeedError(EXIT_DISK_FULL, f"not enough space in {self.dest} for {label}: "
                                                f"{human_bytes(need)} still to download, {human_bytes(free)} free; "
                                                "grow the volume or free space, then rerun (downloaded parts are kept)")

        # Phase 3: download in parallel, verify, move into place.
        done_bytes = sum(rf.size for rf in remote if rf.path in keep)
        self.progress = Progress(label, total, done_bytes, args.progress_seconds, args.stall_seconds)
        self.progress.files_total = len(remote)
        self.progress.files_done = len(keep)
        fetched: dict[str, dict] = {}
        if fetch:
            source = (f" from {self.local_source} (the node's disk; the Hub for what is not there or does not "
                      "verify)") if self.local_source else ""
            log(f"[seed] {label}: fetching {len(fetch)} files ({human_bytes(sum(f.size for f in fetch))}){source}, "
                f"{len(keep)} already in place")
            self.progress.start()
            try:
                fetch.sort(key=lambda f: f.size, reverse=True)  # biggest first: the tail is the small files
                for rf, verified in self._parallel(self._fetch, fetch):
                    fetched[rf.path] = verified
            finally:
                self.progress.stop()
        if claim.lost.is_set():
            raise SeedError(EXIT_LOCKED, f"another seeder took over {self.dest}; this one stops without a manifest")

        # Phase 4: files the previous commit had and this one does not.
        wanted = {rf.path for rf in remote}
        removed = []
        for path in sorted(set(old_entries) - wanted):
            if not isinstance(path, str):
                continue
            try:
                check_repo_path(path, self.repo)
            except SeedError:
                continue
            full = os.path.join(self.dest, path)
            if os.path.isfile(full):
                self._drop_manifest()
                os.unlink(full)
                removed.append(path)
                log(f"[seed] {label}: removed {path} (not in {commit[:12]})")
                self._remove_empty_parents(os.path.dirname(full))

        for extra in self._unknown_files(wanted):
            log(f"[seed] {label}: {extra} is not in {commit[:12]} and was not put there by this seeder; left in place")

        # Phase 5: the manifest, last, and only for files verified by this run or unchanged since.
        entries = [rf.manifest_entry(fetched.get(rf.path) or keep[rf.path]) for rf in sorted(remote, key=lambda f: f.path)]
        self._settle(max(entry["verified"]["ctime_ns"] for entry in entries))
        manifest = {"format": MANIFEST_FORMAT, "seeder": f"{SEEDER}/{VERSION}", "repo": self.repo, "commit": commit,
                    "revision": args.revision, "endpoint": self.endpoint, "total_bytes": total,
                    "finished_at": utc_now(), "files": entries}
        write_json_atomically(os.path.join(self.dest, MANIFEST_NAME), manifest)
        shutil.rmtree(self.work, ignore_errors=True)
        seconds = time.monotonic() - self.started
        downloaded = self.progress.downloaded
        rate = downloaded / seconds if seconds > 0 else 0.0
        copied = (f"copied {human_bytes(self.progress.copied)} from {self.local_source}, "
                  if self.local_source else "")
        log(f"[seed] {label}: complete in {self.dest}: {len(remote)} files, {human_bytes(total)}; {copied}downloaded "
            f"{human_bytes(downloaded)} in {human_seconds(seconds)} ({human_bytes(rate)}/s), {len(self.fetched)} "
            f"files fetched, {len(keep)} kept, {human_bytes(self.hashed_bytes)} re-hashed from disk"
            + (f", fetched again after a failed check: {', '.join(self.refetched)}" if self.refetched else ""))
        return self._result(commit, entries, total, fast_path=False, seconds=seconds, removed=removed)

    def _reusable(self, rf: RemoteFile, old: dict | None) -> str:
        """'trusted' (unchanged since the manifest's verification: no hashing), 'hash' (same size:
        hash it) or why it must be fetched."""
        try:
            st = os.stat(os.path.join(self.dest, rf.path))
        except FileNotFoundError:
            return "missing"
        if st.st_size != rf.size:
            return f"size {st.st_size} on disk, {rf.size} on the Hub"
        vouched = (self.args.verify == "fast" and old is not None and old.get("size") == rf.size
                   and old.get("verified") == stat_record(st))
        if vouched and rf.expected:
            if old.get("sha256" if rf.sha256 else "blob_id") == rf.expected:
                return "trusted"
            # the manifest knows this file's hash, and it is not the new one: no need to hash it to know
            return "changed on the Hub"
        return "hash"

    def _parallel(self, fn, items: list):
        """Run fn over items on the worker threads; the first failure stops the others and is raised."""
        results = []
        with ThreadPoolExecutor(max_workers=max(1, self.args.workers), thread_name_prefix="seed") as pool:
            futures = [pool.submit(fn, item) for item in items]
            pending, failed = futures, []
            while pending:  # in slices: see SIGNAL_LATENCY_SECONDS
                done, pending = wait(futures, timeout=SIGNAL_LATENCY_SECONDS, return_when=FIRST_EXCEPTION)
                failed = [f.exception() for f in done if f.exception() is not None]
                if failed:
                    break
            if failed:
                self.stop.set()
                for future in pending:
                    future.cancel()
                while wait(pending, timeout=SIGNAL_LATENCY_SECONDS).not_done:
                    pass
                # the cause first, not a worker that merely stopped because of it
                failed.sort(key=lambda e: isinstance(e, SeedError) and e.message in ("stopped", "interrupted"))
                raise failed[0]
            for item, future in zip(items, futures):
                results.append((item, future.result()))
        return results

    def _hash_file(self, path: str, rf: RemoteFile, limit: int | None = None):
        try:
            return hash_path(path, bool(rf.sha256), rf.size, limit=limit, stop=self.stop, counter=self._count_hashed)
        except InterruptedError:
            raise SeedError(EXIT_ERROR, "interrupted") from None

    def _count_hashed(self, count: int) -> None:
        with self._counter_lock:
            self.hashed_bytes += count

    def _hash_local(self, rf: RemoteFile) -> dict | None:
        """The file's stat when it hashes to the Hub's value and did not change while hashed, else None."""
        path = os.path.join(self.dest, rf.path)
        before = stat_record(os.stat(path))
        matches = self._hash_file(path, rf).hexdigest() == rf.expected
        return before if matches and stat_record(os.stat(path)) == before else None

    def _settle(self, newest_ctime_ns: int) -> None:
        """Wait until the file system's clock (a probe file's ctime) is SETTLE_NS past newest_ctime_ns,
        so that any later change to a recorded file shows in its ctime."""
        settle_ns = int(float(os.environ.get(TEST_SETTLE_ENV) or 0) * 1e9) or SETTLE_NS
        os.makedirs(self.work, exist_ok=True)
        probe = os.path.join(self.work, ".clock")
        deadline = time.monotonic() + 10 * settle_ns / 1e9
        while True:
            with open(probe, "w", encoding="utf-8") as handle:
                handle.write(str(time.time_ns()))
            lag = newest_ctime_ns + settle_ns - os.stat(probe).st_ctime_ns
            if lag <= 0 or time.monotonic() > deadline:
                return
            if stoppable_wait(self.stop, min(lag / 1e9, 1.0)):
                raise SeedError(EXIT_ERROR, "stopped")

    def _part_paths(self, rf: RemoteFile) -> tuple[str, str]:
        part = os.path.join(self.work, rf.path + ".part")
        return part, part + ".want"

    def _part_size(self, rf: RemoteFile) -> int:
        part, want = self._part_paths(rf)
        try:
            with open(want, encoding="utf-8") as handle:
                if handle.read().strip() != self._want_marker(rf):
                    return 0
            return min(os.path.getsize(part), rf.size)
        except OSError:
            return 0

    @staticmethod
    def _want_marker(rf: RemoteFile) -> str:
        return f"{rf.algorithm}:{rf.expected}:{rf.size}"

    def _drop_manifest(self) -> None:
        """Before the first change in dest: the old manifest must not vouch for a directory in flux."""
        with self._counter_lock:
            if self._manifest_dropped:
                return
            self._manifest_dropped = True
        try:
            os.unlink(os.path.join(self.dest, MANIFEST_NAME))
            fsync_directory(self.dest)
        except FileNotFoundError:
            pass

    def _unknown_files(self, wanted: set) -> list[str]:
        """Files in dest that the repo does not list (never deleted: only files of an older manifest are)."""
        ours = (WORK_DIR_NAME, MANIFEST_NAME, LOCK_NAME)
        found = []
        for root, dirs, names in os.walk(self.dest):
            relative_root = os.path.relpath(root, self.dest)
            if relative_root == ".":
                dirs[:] = [d for d in dirs if d not in ours]
            for name in names:
                path = name if relative_root == "." else f"{relative_root}/{name}".replace(os.sep, "/")
                if path not in wanted and not path.startswith(ours):
                    found.append(path)
        return sorted(found)

    def _remove_empty_parents(self, directory: str) -> None:
        while os.path.abspath(directory).startswith(self.dest + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def _fetch(self, rf: RemoteFile) -> int:
        """Download one file (resuming its .part), verify it, move it into place; returns its stat then."""
        part, want = self._part_paths(rf)
        os.makedirs(os.path.dirname(part), exist_ok=True)
        marker = self._want_marker(rf)
        try:
            with open(want, encoding="utf-8") as handle:
                current = handle.read().strip()
        except OSError:
            current = ""
        if current != marker:  # a part of another version of the file: start over
            if os.path.exists(part):
                os.unlink(part)
            with open(want, "w", encoding="utf-8") as handle:
                handle.write(marker + "\n")
        for attempt in (1, 2):
            if attempt == 1 and self._copy_local(rf, part):
                break
            try:
                self._download(rf, part)
                break
            except Mismatch as mismatch:
                try:
                    self.progress.rewind(os.path.getsize(part))
                    os.unlink(part)
                except FileNotFoundError:
                    pass
                if attempt == 2:
                    raise SeedError(EXIT_VERIFY, f"{self.repo}@{self.commit[:12]} {rf.path}: {mismatch} again after "
                                                 "a second full download; the Hub, a proxy or the disk corrupts "
                                                 "data: check HF_ENDPOINT and the volume, then rerun") from None
                log(f"[seed] {self.repo}@{self.commit[:12]} {rf.path}: {mismatch}; fetching it again")
                with self._counter_lock:
                    self.refetched.append(rf.path)
        target = os.path.join(self.dest, rf.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self._drop_manifest()
        os.replace(part, target)
        try:
            os.unlink(want)
        except FileNotFoundError:
            pass
        fsync_directory(os.path.dirname(target))
        with self._counter_lock:
            self.fetched.append(rf.path)
        self.progress.file_done()
        return stat_record(os.stat(target))

    @contextlib.contextmanager
    def _synced(self, out, rf: RemoteFile):
        """Writes to `out` synced in the background as they go, and once more at the end (not after a
        failure); an fsync error seen on the way is raised as the disk error it is."""
        syncer = BackgroundSync(out.fileno(), self.args.chunk_size)
        try:
            yield syncer
            syncer.close()
        except BaseException:
            syncer.close(final_sync=False)
            raise
        if syncer.error is not None:
            raise self._disk_error(syncer.error, rf)

    def _copy_local(self, rf: RemoteFile, part: str) -> bool:
        """Fill `part` from --local-source, hashing as it reads; True when it is the Hub's file. A file
        not there or of another size is left to the Hub; a copy that does not verify is removed."""
        if self.local_source is None:
            return False
        source = os.path.join(self.local_source, rf.path)
        try:
            if os.path.getsize(source) != rf.size:
                log(f"[seed] {self.repo}@{self.commit[:12]} {rf.path}: {source} is {os.path.getsize(source)} bytes, "
                    f"the Hub lists {rf.size}; downloading it")
                return False
        except OSError:
            return False  # not on this node's disk: the Hub
        pace = float(os.environ.get(TEST_COPY_PACE_ENV) or 0)
        digest, copied, began = rf.hasher(), 0, time.monotonic()
        view = memoryview(bytearray(min(self.args.chunk_size, MAX_READ)))
        with open(source, "rb", buffering=0) as src, open(part, "wb", buffering=0) as out, \
                self._synced(out, rf) as syncer:
            while copied < rf.size:
                if self.stop.is_set():
                    raise SeedError(EXIT_ERROR, "stopped")
                n = src.readinto(view[:min(len(view), rf.size - copied)])
                if not n:
                    break  # shrank while read: the check below fails it
                self._write(out, view[:n], rf)
                digest.update(view[:n])
                copied += n
                self.progress.add(n, copied=True)
                if syncer.written(n) is not None:
                    raise self._disk_error(syncer.error, rf)
                if pace:
                    time.sleep(max(0.0, began + copied * pace - time.monotonic()))
        actual = digest.hexdigest()
        if copied == rf.size and os.path.getsize(part) == rf.size and actual == rf.expected:
            with self._counter_lock:
                self.copied.append(rf.path)
            return True
        log(f"[seed] {self.repo}@{self.commit[:12]} {rf.path}: the copy in {self.local_source} is not the Hub's file "
            f"({rf.algorithm} {actual}, {copied} bytes; the Hub lists {rf.expected}, {rf.size}); downloading it")
        self.progress.rewind(copied)
        os.unlink(part)
        return False

    def _download(self, rf: RemoteFile, part: str) -> None:
        """Fill `part` up to rf.size from where it stops, hashing as bytes arrive; raises Mismatch."""
        offset = min(os.path.getsize(part), rf.size) if os.path.exists(part) else 0
        if offset:
            digest = self._hash_file(part, rf, limit=offset)  # the bytes already there count towards the hash
            log(f"[seed] {self.repo}@{self.commit[:12]} {rf.path}: resuming at {human_bytes(offset)} of "
                f"{human_bytes(rf.size)}")
            self.progress.resumed(offset)
        else:
            digest = rf.hasher()
        url = self._hub_url(rf)
        opener = urllib.request.build_opener(_DropAuthOnOtherHost())
        view = memoryview(bytearray(min(self.args.chunk_size, MAX_READ)))
        with open(part, "r+b" if os.path.exists(part) else "wb", buffering=0) as out:
            out.truncate(offset)
            out.seek(offset)
            with self._synced(out, rf) as syncer:
                digest, offset = self._receive(rf, part, out, syncer, digest, offset, url, opener, view)
        actual = digest.hexdigest()
        size = os.path.getsize(part)
        if size != rf.size:
            raise Mismatch(f"size {size} instead of {rf.size}")
        if actual != rf.expected:
            raise Mismatch(f"{rf.algorithm} {actual} instead of {rf.expected}")

    def _receive(self, rf: RemoteFile, part: str, out, syncer: BackgroundSync, digest, offset: int, url: str,
                 opener, view: memoryview):
        """The GET/resume loop for one file: returns (digest, offset) once rf.size bytes are in `out`."""
        failures = 0
        while offset < rf.size:  # an empty file needs no request: the part is already right
            if self.stop.is_set():
                raise SeedError(EXIT_ERROR, "stopped")
            progressed = False
            try:
                headers = dict(self.hub_headers)
                if offset:
                    headers["Range"] = f"bytes={offset}-"
                request = urllib.request.Request(url, headers=headers)
                try:
                    response = opener.open(request, timeout=self.args.timeout)
                except urllib.error.HTTPError as err:
                    try:
                        failure = (self._hub.describe_failure(err, f"downloading {rf.path}", self.commit)
                                   or Transient(describe(err), error_details(err)[2]))
                    finally:
                        close_error_response(err)
                    raise failure from None
                with response:
                    status = response.status
                    if offset and status == 200:
                        # the server ignored Range: start this file over
                        self.progress.rewind(offset)
                        offset = 0
                        out.truncate(0)
                        out.seek(0)
                        digest = rf.hasher()
                    elif offset and status == 206:
                        content_range = response.headers.get("Content-Range", "")
                        match = re.match(r"bytes (\d+)-(\d+)/(\d+)", content_range)
                        if not match or int(match.group(1)) != offset:
                            raise Transient(f"unexpected Content-Range {content_range!r} for offset {offset}")
                        if int(match.group(3)) != rf.size:
                            raise Mismatch(f"the Hub serves {match.group(3)} bytes, the listing says {rf.size}")
                    elif status != 200 and status != 206:
                        raise Transient(f"HTTP {status}")
                    length = response.headers.get("Content-Length")
                    if status == 200 and length is not None and int(length) != rf.size:
                        raise Mismatch(f"the Hub serves {length} bytes, the listing says {rf.size}")
                    while offset < rf.size:
                        if self.stop.is_set():
                            raise SeedError(EXIT_ERROR, "stopped")
                        n = response.readinto(view[:min(len(view), rf.size - offset)])
                        if not n:
                            raise Transient(f"connection closed at byte {offset} of {rf.size}")
                        self._write(out, view[:n], rf)
                        digest.update(view[:n])
                        offset += n
                        progressed = True
                        self.progress.add(n)
                        if syncer.written(n) is not None:
                            raise self._disk_error(syncer.error, rf)
                    extra = response.read(1)
                    if extra:
                        raise Mismatch(f"the Hub sends more than the listed {rf.size} bytes")
            except (Transient, urllib.error.URLError, http.client.HTTPException, ConnectionError,
                    socket.timeout, TimeoutError) as err:
                if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
                    raise
                failures = 0 if progressed else failures + 1
                if failures > self.args.retries:
                    raise SeedError(EXIT_HUB_UNAVAILABLE, f"downloading {rf.path} of {self.repo}: the Hub at "
                                                          f"{self.endpoint} kept failing ({describe(err)}) after "
                                                          f"{failures} attempts without progress; "
                                                          f"{human_bytes(offset)} kept in {part}, rerun to resume")
                retry_after = err.retry_after if isinstance(err, Transient) else None
                delay = 0.0 if progressed else backoff(failures - 1, retry_after)
                log(f"[seed] {rf.path}: {describe(err)} at {human_bytes(offset)} of {human_bytes(rf.size)}; "
                    f"resuming in {delay:.1f}s")
                if delay and stoppable_wait(self.stop, delay):
                    raise SeedError(EXIT_ERROR, "stopped")
        return digest, offset

    def _write(self, out, data, rf: RemoteFile) -> None:
        try:
            written = 0
            while written < len(data):
                written += out.write(data[written:])
        except OSError as err:
            raise self._disk_error(err, rf) from None

    def _disk_error(self, err: OSError, rf: RemoteFile) -> BaseException:
        """ENOSPC/EDQUOT/EFBIG as a clear disk-full SeedError (on NFS they may surface at fsync)."""
        if err.errno not in DISK_FULL_ERRNOS:
            return err
        remaining = self.progress.total - self.progress.done if self.progress else rf.size
        return SeedError(EXIT_DISK_FULL, f"cannot write {rf.path} into {self.dest} ({os.strerror(err.errno)}): "
                                         f"{human_bytes(remaining)} still to download, "
                                         f"{human_bytes(free_bytes(self.dest))} free; grow the volume or free "
                                         "space, then rerun (downloaded parts are kept)")

    def _hub_url(self, rf: RemoteFile) -> str:
        return self._hub.url(rf.path, self.commit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Seed a Hugging Face model repo into a directory at a pinned commit, verified and resumable. "
                    "Token from HF_TOKEN, endpoint from HF_ENDPOINT.")
    parser.add_argument("--repo", required=True, help="repo id, e.g. Qwen/Qwen3-ASR-1.7B")
    parser.add_argument("--revision", default="main", help="40-hex commit (recommended), branch or tag")
    parser.add_argument("--dest", required=True, help="model directory, e.g. /models/Qwen3-ASR-1.7B")
    parser.add_argument("--local-source", metavar="DIR",
                        help="a copy of the repo at this commit on a local disk: files are copied from it and "
                             "verified against the Hub's hashes; what is missing or does not verify is downloaded")
    parser.add_argument("--verify", choices=("fast", "full"), default="fast",
                        help="fast: trust files whose stat is the one recorded at verification; full: re-hash everything")
    parser.add_argument("--workers", type=int, default=4, help="parallel file transfers (default 4)")
    parser.add_argument("--chunk-size", type=parse_size, default=16 * 1024 * 1024,
                        help="bytes between fsyncs of a partial file: at most this much is fetched again after a "
                             "lost node (default 16MiB)")
    parser.add_argument("--retries", type=int, default=8,
                        help="attempts without progress on 429/5xx/connection errors before giving up (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default 60)")
    parser.add_argument("--progress-seconds", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--stall-seconds", type=float, default=60.0,
                        help="seconds without a downloaded byte before progress says stalled (default 60)")
    parser.add_argument("--lock-stale-seconds", type=float, default=120.0,
                        help="a claim not refreshed for this long is broken (default 120)")
    parser.add_argument("--lock-wait-seconds", type=float, default=180.0,
                        help="how long to wait for another seeder's live claim (default 180)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        build_parser().error(f"--workers {args.workers}: use 1 or more")
    if "/" not in args.repo:
        build_parser().error(f"--repo {args.repo!r}: use the full id, e.g. Qwen/Qwen3-ASR-1.7B")
    seeder = Seeder(args)

    def on_signal(signum, _frame):
        # Pod termination (Spot notice, Job deleted): workers may sit in a socket read for up to
        # --timeout, so leave now. Parts on disk stay for the next run; the claim is released so
        # the next seeder does not have to wait for it to go stale.
        seeder.stop.set()
        if seeder.claim is not None:
            seeder.claim.release(wait=False)
        # os.write, not log(): the signal can land while this thread is inside a print, and a buffered
        # stream entered again from its own thread raises instead of writing (the seeder then went on
        # until the stall, seen once under load).
        os.write(1, f"[seed] {args.repo}: stopped by signal {signum}; downloaded parts are kept and a rerun "
                    "resumes them\n".encode())
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = run_seeder(seeder)
    except SeedError as err:
        result = {"ok": False, "repo": args.repo, "revision": args.revision, "dest": os.path.abspath(args.dest),
                  "exit_code": err.exit_code, "error": err.message, "seeder": f"{SEEDER}/{VERSION}"}
        log("SEED-RESULT " + json.dumps(result, sort_keys=True))
        log(f"[seed] FAILED ({err.exit_code}): {err.message}")
        return err.exit_code
    except KeyboardInterrupt:
        seeder.stop.set()
        log(f"[seed] {args.repo}: interrupted; downloaded parts are kept and a rerun resumes them")
        return 130
    log("SEED-RESULT " + json.dumps(result, sort_keys=True))
    return EXIT_OK


def run_seeder(seeder: Seeder) -> dict:
    try:
        return seeder.run()
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise SeedError(EXIT_DISK_FULL, f"no space left in {seeder.dest} ({os.strerror(err.errno)}): "
                                            f"{human_bytes(free_bytes(seeder.dest))} free; grow the volume or free "
                                            "space, then rerun") from None
        raise SeedError(EXIT_ERROR, f"{seeder.repo} into {seeder.dest}: {type(err).__name__}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
