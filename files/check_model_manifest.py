#!/usr/bin/env python3
"""Model guard for the ASR/TTS init containers: is the model directory a complete seed of the wanted commit?

    python3 check_model_manifest.py --model-dir /models/Qwen3-ASR-1.7B --repo Qwen/Qwen3-ASR-1.7B --commit <40-hex>

Reads `<model-dir>/.qwen3-seed-manifest.json`, written last by seed_models.py, and checks that it
names that repo and commit and that every file it lists exists with the listed size. It does not
hash (the seeder verified the hashes; a guard must answer in a second on every pod start) and it
never downloads: a pod must not start on incomplete weights, and fixing the directory is the
seeding Job's work.

Exit 0 with one line saying the model is complete; exit 1 with one line naming the model, what
is wrong and the fix. Python 3.10+, standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

MANIFEST_NAME = ".qwen3-seed-manifest.json"
FIX = "Fix: rerun the playbook (`pyinfra INVENTORY deploy.py`); it re-seeds the model into the volume."


def problem_with(model_dir: str, repo: str, commit: str) -> tuple[str | None, dict | None]:
    """(what is wrong or None, the manifest when readable)."""
    path = os.path.join(model_dir, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        if not os.path.isdir(model_dir):
            return f"{model_dir} does not exist (the model was never seeded into this volume)", None
        return f"no completion manifest {path} (seeding never finished, or it is in progress)", None
    except (OSError, ValueError) as err:
        return f"unreadable completion manifest {path}: {err}", None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return f"completion manifest {path} has no file list", None
    if manifest.get("repo") != repo:
        return f"{model_dir} holds {manifest.get('repo')}, not {repo}", manifest
    if manifest.get("commit") != commit:
        return (f"stale seed: commit {manifest.get('commit')} is in {model_dir}, the deployment wants {commit}",
                manifest)
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return f"completion manifest {path} has a malformed file entry: {entry!r}", manifest
        file_path = os.path.join(model_dir, entry["path"])
        try:
            size = os.stat(file_path).st_size
        except OSError:
            return f"file {entry['path']} is missing from {model_dir}", manifest
        if size != entry.get("size"):
            return f"file {entry['path']} has {size} bytes, the seed recorded {entry.get('size')}", manifest
    return None, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when a model directory holds a complete seed of a commit.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--commit", required=True)
    args = parser.parse_args(argv)
    problem, manifest = problem_with(args.model_dir, args.repo, args.commit)
    if problem is not None:
        print(f"model-guard: {args.repo}@{args.commit[:12]} is not ready: {problem}. {FIX}", flush=True)
        return 1
    total = sum(int(entry.get("size") or 0) for entry in manifest["files"])
    print(f"model-guard: {args.repo}@{args.commit[:12]} complete in {args.model_dir}: {len(manifest['files'])} files, "
          f"{total} bytes, seeded {manifest.get('finished_at', '?')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
