"""What the model guard adds to a pod start, for a 4.5 GB model on local disk.

    .venv/bin/python bench/guard_bench.py [--size-gb 4.5] [--rounds 3] [--dir /tmp/guard-bench] [--keep]

Writes a model directory shaped like Qwen3-TTS-12Hz-1.7B-CustomVoice (one 3.8 GB weights file,
a 0.68 GB tokenizer, small text files; scaled to --size-gb) with a format-2 manifest, then runs
files/check_model_manifest.py as the init container does (a fresh python3 process) and prints:
- warm: nothing changed since verification; the guard only stats the files (every pod start);
- cold, page cache dropped: every file's stat changed (e.g. a manifest from before format 2),
  so it hashes all bytes from disk; this is also what a full re-verification costs;
- cold, page cache warm: the same hashing, CPU-bound (sha256 at the machine's speed);
- one changed shard (mtime restored): only that file is hashed.
On EFS the cold figures are bound by the file system's read throughput instead (bursting EFS
gives roughly 100-300 MB/s per client), so cold on EFS is about size / throughput; warm is a
few NFS GETATTRs. Asserts nothing; the figures go to bench/results/guard_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "files"))

from check_model_manifest import MANIFEST_FORMAT, MANIFEST_NAME, hash_path, stat_record  # noqa: E402

GUARD = PROJECT / "files" / "check_model_manifest.py"
REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
COMMIT = "0" * 40
# Qwen3-TTS-12Hz-1.7B-CustomVoice's files (shared/reference/upstream-facts.md), bytes.
LAYOUT = {"model.safetensors": 3833402552, "speech_tokenizer/model.safetensors": 682293092, "vocab.json": 2776833,
          "merges.txt": 1671839, "README.md": 57846, "tokenizer_config.json": 7344, "config.json": 4908,
          "speech_tokenizer/config.json": 2336, "generation_config.json": 245, "preprocessor_config.json": 127}
BLOCK = 16 * 1024 * 1024


def write_model(directory: Path, size_gb: float) -> None:
    scale = size_gb * 1e9 / sum(LAYOUT.values())
    block = os.urandom(BLOCK)
    entries = []
    for path, size in LAYOUT.items():
        size = max(1, int(size * scale)) if size > 10_000_000 else size
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            left = size
            while left:
                n = min(left, BLOCK)
                handle.write(block[:n])
                left -= n
            handle.flush()
            os.fsync(handle.fileno())
        sha256 = size > 10_000_000
        digest = hash_path(str(target), sha256, size).hexdigest()
        entries.append({"path": path, "size": size, ("sha256" if sha256 else "blob_id"): digest,
                        "verified": stat_record(os.stat(target))})
    time.sleep(1.1)  # past the newest ctime, as the seeder waits before writing the manifest
    manifest = {"format": MANIFEST_FORMAT, "repo": REPO, "commit": COMMIT, "files": entries,
                "total_bytes": sum(e["size"] for e in entries), "finished_at": "bench"}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def drop_cache(directory: Path) -> bool:
    """Evict the model's pages (clean after fsync) so reads come from disk; no root needed."""
    ok = True
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                ok = False
            finally:
                os.close(fd)
    return ok


def run_guard(directory: Path) -> tuple[float, float, float]:
    """(wall seconds of the process, CPU seconds it used, seconds of the check itself as it reports).

    CPU seconds hardly depend on other load on the machine; wall seconds do."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(GUARD), "--model-dir", str(directory), "--repo", REPO, "--commit", COMMIT],
                          capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"guard failed: {proc.stdout}{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    check = float(proc.stdout.split("checked in ")[1].split("s")[0])
    return seconds, cpu, check


def with_stats_forgotten(directory: Path, keep: set[str] | None = None):
    """Rewrite the manifest so that every file's (or all but `keep`'s) recorded stat no longer matches."""
    path = directory / MANIFEST_NAME
    original = path.read_text()
    manifest = json.loads(original)
    for entry in manifest["files"]:
        if keep is None or entry["path"] not in keep:
            entry["verified"] = dict(entry["verified"], ctime_ns=0)
    path.write_text(json.dumps(manifest))
    return original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/guard-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated model directory")
    args = parser.parse_args()
    model = args.dir / "Qwen3-TTS-CustomVoice"
    if not (model / MANIFEST_NAME).exists():
        shutil.rmtree(model, ignore_errors=True)
        print(f"writing {args.size_gb} GB into {model} ...", flush=True)
        write_model(model, args.size_gb)
    total = json.loads((model / MANIFEST_NAME).read_text())["total_bytes"]
    names = ("warm_stat_only", "cold_disk_full_hash", "cold_cached_full_hash", "one_shard_changed")
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    evicted = False
    try:
        for _ in range(args.rounds):
            figures["warm_stat_only"].append(run_guard(model))
            original = with_stats_forgotten(model)
            try:
                evicted = drop_cache(model)
                figures["cold_disk_full_hash"].append(run_guard(model))
                figures["cold_cached_full_hash"].append(run_guard(model))
            finally:
                (model / MANIFEST_NAME).write_text(original)
            original = with_stats_forgotten(model, keep=set(LAYOUT) - {"speech_tokenizer/model.safetensors"})
            try:
                drop_cache(model)
                figures["one_shard_changed"].append(run_guard(model))
            finally:
                (model / MANIFEST_NAME).write_text(original)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    load = os.getloadavg()[0]

    def median(name: str, index: int) -> float:
        return round(statistics.median(f[index] for f in figures[name]), 3)

    result = {"bytes": total, "files": len(LAYOUT), "rounds": args.rounds, "cpus": os.cpu_count(),
              "load_average_1m": load, "page_cache_evicted": evicted,
              "median": {name: {"wall_s": median(name, 0), "cpu_s": median(name, 1), "check_s": median(name, 2)}
                         for name in names},
              "all": {name: [[round(x, 3) for x in f] for f in figures[name]] for name in names}}
    print(f"{total / 1e9:.2f} GB in {len(LAYOUT)} files, {os.cpu_count()} CPUs, load average {load:.1f} "
          "(wall times grow with load; CPU seconds hardly do)")
    for name in names:
        m = result["median"][name]
        rate = f", {total / m['cpu_s'] / 1e6:.0f} MB per CPU-second" if "full_hash" in name else ""
        print(f"{name:24s} wall {m['wall_s']:8.3f} s  check {m['check_s']:8.3f} s  cpu {m['cpu_s']:8.3f} s{rate}")
    out = PROJECT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "guard_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
