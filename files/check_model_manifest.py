#!/usr/bin/env python3
"""Model guard for the ASR/TTS init containers: are the model files still the bytes that were verified?

    python3 check_model_manifest.py --model-dir /models/Qwen3-ASR-1.7B --repo Qwen/Qwen3-ASR-1.7B --commit <40-hex>
    python3 check_model_manifest.py ... --audit      # report every damaged file as JSON, exit 0 (the audit Job)
    python3 check_model_manifest.py ... --wait-seconds 3600   # wait for a seed that is not there yet
    python3 check_model_manifest.py ... --wait-seconds 3600 --order-only   # the same, then exit 0 whatever came

Reads `<model-dir>/.qwen3-seed-manifest.json`, written last by seed_models.py, checks that it
names that repo and commit, and checks every file it lists against what the seeder verified:
the file's hash, and the stat of the file at that moment (size, inode, mtime_ns, ctime_ns).
A file whose stat is unchanged is the verified file: the kernel (or the NFS server) sets ctime
on every write, truncate, rename and chmod, and no user can set it back (utime restores mtime,
never ctime), so a flipped byte with its mtime restored still changes ctime. Only files whose
stat changed are hashed again: a pod start stays a matter of stat calls when nothing changed,
and any change, size kept or not, mtime kept or not, is caught before a pod serves from it.

It never writes (the volume is mounted read-only) and never downloads: repairing the directory
is the seeding Job's work, and the next deploy runs it.

With --wait-seconds (the serving pods' init containers), a model that is not seeded yet (no
directory, no completion manifest, the manifest of another commit or repo: a seeding Job is on
its way or at work) is waited for, with a line when that state changes and one every
--progress-seconds otherwise, naming the seeder that holds the directory; the pods are created
while the models download and start the moment the manifest is written, instead of crash-looping.
Damage to a model that was seeded at the wanted commit (a missing, truncated or changed file, an
unreadable manifest) is not waited for: no running seeder would repair it, the next deploy does.

Exit 0 with one line saying the model is complete; exit 1 with one line naming the model, what
is wrong and the fix. With --audit: one line `MODEL-AUDIT {json}` (missing, truncated, corrupt
files, manifest problems), exit 0. Python 3.10+, standard library only; seed_models.py imports
the file checks from here, so the seeder and the guard judge a file the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

MANIFEST_NAME = ".qwen3-seed-manifest.json"
LOCK_NAME = ".qwen3-seed.lock"  # seed_models.py's claim on a directory while it seeds it
MANIFEST_FORMAT = 2  # 2: each file carries the stat it had when its hash was verified
STAT_FIELDS = ("size", "ino", "mtime_ns", "ctime_ns")
HASH_BLOCK = 16 * 1024 * 1024
HASH_WORKERS = 4  # hashlib releases the GIL on large blocks: a few threads use a few cores
FIX = "Fix: rerun the playbook (`pyinfra INVENTORY deploy.py`); it re-seeds the model into the volume."


def stat_record(st: os.stat_result) -> dict:
    """What a file's verification is tied to: any write, truncate, replace or chmod changes it."""
    return {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def new_hasher(sha256: bool, size: int):
    """sha256 for LFS files; for small git files the git blob id: sha1 over "blob <size>\\0" + content."""
    if sha256:
        return hashlib.sha256()
    digest = hashlib.sha1()
    digest.update(b"blob %d\0" % size)
    return digest


def expected_hash(entry: dict) -> str | None:
    return entry.get("sha256") or entry.get("blob_id")


def hash_path(path: str, sha256: bool, size: int, limit: int | None = None, stop=None, counter=None):
    """The hasher fed with the first `limit` (default: size) bytes of path."""
    digest = new_hasher(sha256, size)
    buffer = bytearray(min(HASH_BLOCK, max(size, 1)))
    view = memoryview(buffer)
    remaining = size if limit is None else limit
    with open(path, "rb", buffering=0) as handle:
        while remaining > 0:
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped")
            n = handle.readinto(view[:min(len(buffer), remaining)])
            if not n:
                break
            digest.update(view[:n])
            remaining -= n
            if counter is not None:
                counter(n)
    return digest


def file_problem(model_dir: str, entry: dict) -> tuple[str | None, str | None, bool]:
    """(kind, message, hashed) for one manifest entry: kind None when the file is the verified one.

    kind is "missing", "truncated" (shorter), "resized" (longer) or "corrupt" (hash differs)."""
    path = os.path.join(model_dir, entry["path"])
    try:
        st = os.stat(path)
    except OSError:
        return "missing", f"file {entry['path']} is missing from {model_dir}", False
    if st.st_size != entry.get("size"):
        kind = "truncated" if st.st_size < (entry.get("size") or 0) else "resized"
        return kind, f"file {entry['path']} has {st.st_size} bytes, the seed verified {entry.get('size')}", False
    if entry.get("verified") == stat_record(st):
        return None, None, False
    want = expected_hash(entry)
    actual = hash_path(path, bool(entry.get("sha256")), st.st_size).hexdigest()
    if actual != want:
        algorithm = "sha256" if entry.get("sha256") else "git blob id"
        return "corrupt", (f"file {entry['path']} changed since it was verified: its {algorithm} is {actual}, "
                           f"the seed verified {want}"), True
    return None, None, True


def read_manifest(model_dir: str) -> tuple[dict | None, str | None]:
    """(manifest, None) or (None, what is wrong with it)."""
    path = os.path.join(model_dir, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        if not os.path.isdir(model_dir):
            return None, f"{model_dir} does not exist (the model was never seeded into this volume)"
        return None, f"no completion manifest {path} (seeding never finished, or it is in progress)"
    except (OSError, ValueError) as err:
        return None, f"unreadable completion manifest {path}: {err}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return None, f"completion manifest {path} has no file list"
    for entry in manifest["files"]:
        if (not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("size"), int)
                or not isinstance(expected_hash(entry), str)):
            return None, f"completion manifest {path} has a malformed file entry: {entry!r}"
    return manifest, None


def audit(model_dir: str, repo: str, commit: str) -> dict:
    """Every problem of the model directory, hashing only files whose stat changed since verification."""
    started = time.monotonic()
    report = {"model_dir": model_dir, "repo": repo, "commit": commit, "manifest": None, "missing": [],
              "truncated": [], "corrupt": [], "rehashed": [], "files": 0, "bytes": 0, "problems": []}
    manifest, problem = read_manifest(model_dir)
    # Why the model is not there yet, briefly: states that a seed on its way or at work ends.
    pending = None
    if manifest is None and not os.path.isdir(model_dir):
        pending = "no model directory yet"
    elif manifest is None and not os.path.lexists(os.path.join(model_dir, MANIFEST_NAME)):
        pending = "no completion manifest yet"
    if manifest is not None and manifest.get("repo") != repo:
        problem = f"{model_dir} holds {manifest.get('repo')}, not {repo}"
        pending = f"{manifest.get('repo')} is there"
    elif manifest is not None and manifest.get("commit") != commit:
        problem = f"stale seed: commit {manifest.get('commit')} is in {model_dir}, the deployment wants {commit}"
        pending = f"commit {str(manifest.get('commit'))[:12]} is there"
    if problem is not None:
        report["manifest"] = problem
        report["problems"].append(problem)
    if manifest is not None:
        entries = manifest["files"]
        report["files"] = len(entries)
        report["bytes"] = sum(entry["size"] for entry in entries)
        with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
            results = list(pool.map(lambda entry: file_problem(model_dir, entry), entries))
        for entry, (kind, message, hashed) in zip(entries, results):
            if hashed:
                report["rehashed"].append(entry["path"])
            if kind is not None:
                report["missing" if kind == "missing" else "corrupt" if kind == "corrupt" else "truncated"].append(
                    entry["path"])
                report["problems"].append(message)
        report["finished_at"] = manifest.get("finished_at")
    report["ok"] = not report["problems"]
    report["not_seeded_yet"] = pending
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def seeder_holding(model_dir: str) -> str:
    """Who holds the directory's seeding claim (seed_models.py's lock file), for the wait's progress."""
    try:
        with open(os.path.join(model_dir, LOCK_NAME), encoding="utf-8") as handle:
            holder = json.load(handle)
        age = time.time() - os.stat(os.path.join(model_dir, LOCK_NAME)).st_mtime
    except (OSError, ValueError):
        return "no seeder at work yet (`pyinfra INVENTORY deploy.py` starts one)"
    return f"seeder {holder.get('host', '?')} at work (alive {age:.0f}s ago)"


def wait_until_seeded(args, label: str) -> dict:
    """Audit until the model is complete, damaged, or wait_seconds ran out; the last report."""
    started = time.monotonic()
    said, said_at = None, started
    while True:
        report = audit(args.model_dir, args.repo, args.commit)
        waited = time.monotonic() - started
        if report["ok"] or not report["not_seeded_yet"] or waited >= args.wait_seconds:
            report["waited"] = waited
            return report
        state = f"{report['not_seeded_yet']}, {seeder_holding(args.model_dir)}"
        if state.split(" (alive")[0] != said or time.monotonic() - said_at >= args.progress_seconds:
            print(f"{label}: waiting for the seed ({waited:.0f}s of {args.wait_seconds:.0f}s): {state}", flush=True)
            said, said_at = state.split(" (alive")[0], time.monotonic()
        time.sleep(min(args.poll_seconds, max(args.wait_seconds - waited, 0.01)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when a model directory holds the verified seed of a commit.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--audit", action="store_true", help="print every problem as MODEL-AUDIT {json}, exit 0")
    parser.add_argument("--wait-seconds", type=float, default=0.0,
                        help="wait this long for a model that is not seeded yet (damage is never waited for)")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="seconds between checks while waiting")
    parser.add_argument("--progress-seconds", type=float, default=30.0, help="seconds between unchanged progress lines")
    parser.add_argument("--order-only", action="store_true",
                        help="exit 0 after the wait whatever the model's state: a wait that orders work, not a guard")
    args = parser.parse_args(argv)
    label = f"model-guard: {args.repo}@{args.commit[:12]}"
    if args.audit:
        report = audit(args.model_dir, args.repo, args.commit)
        print("MODEL-AUDIT " + json.dumps(report, sort_keys=True), flush=True)
        return 0
    report = wait_until_seeded(args, label)
    if not report["ok"]:
        more = len(report["problems"]) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        waited = f" after waiting {report['waited']:.0f}s for the seed" if report["not_seeded_yet"] and args.wait_seconds else ""
        if args.order_only:
            print(f"{label} is not ready{waited} ({report['problems'][0]}{extra}); going on", flush=True)
            return 0
        print(f"{label} is not ready{waited}: {report['problems'][0]}{extra}. {FIX}", flush=True)
        return 1
    rehashed = f", {len(report['rehashed'])} re-hashed (stat changed, content verified)" if report["rehashed"] else ""
    print(f"{label} complete in {args.model_dir}: {report['files']} files, {report['bytes']} bytes, seeded "
          f"{report.get('finished_at') or '?'}, checked in {report['seconds']:.3f}s{rehashed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
