"""Deploy speed and API cost on the sandbox (fast delays). Prints figures; asserts nothing.

    .venv/bin/python bench/deploy_bench.py [--runs 3]

Figures: full deploy wall time on a fresh sandbox, no-op rerun wall time (pyinfra -y, including
interpreter start), dry-run wall time (--dry --diff), and API requests per run from the
sandbox's audit log, per managed object. Targets (issue 3): no-op rerun < 3 s, <= 2 requests
per managed object with -y.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.control import SandboxControl  # noqa: E402

MANAGED_OBJECTS = 15  # tasks/operate.py STEPS manifests (14) + the models record ConfigMap
WRITES = {"create", "update", "patch", "delete"}


def pyinfra(root: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env["QWEN3_SANDBOX_DIR"] = str(root)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pyinfra", "inventories/sandbox.py", "deploy.py", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"pyinfra {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return elapsed, result


def describe(records: list[dict]) -> str:
    verbs = Counter(("dry-run " if r.get("dry_run") else "") + r.get("verb", "?") for r in records)
    return ", ".join(f"{n} {v}" for v, n in sorted(verbs.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="no-op reruns and dry runs to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-") as tmp:
        root = Path(tmp) / "sandbox"
        up = subprocess.run([sys.executable, "-m", "sandbox", "up", "--fast", "--dir", str(root)], cwd=ROOT,
                            capture_output=True, text=True)
        if up.returncode != 0:
            sys.exit(f"sandbox did not start:\n{up.stdout}{up.stderr}")
        control = SandboxControl(root)
        try:
            mark = control.audit_mark()
            full, _ = pyinfra(root, "-y")
            first = control.audit_since(mark)
            reruns, dries, rerun_records = [], [], []
            for _ in range(args.runs):
                mark = control.audit_mark()
                seconds, _ = pyinfra(root, "-y")
                reruns.append(seconds)
                rerun_records = control.audit_since(mark)
            for _ in range(args.runs):
                mark = control.audit_mark()
                seconds, _ = pyinfra(root, "--dry", "--diff")
                dries.append(seconds)
                dry_records = control.audit_since(mark)
        finally:
            subprocess.run([sys.executable, "-m", "sandbox", "down", "--dir", str(root)], cwd=ROOT,
                           capture_output=True)
    kube_rerun = [r for r in rerun_records if r.get("verb") != "proxy"]
    print(f"full deploy on a fresh sandbox (fast): {full:6.2f} s  ({len(first)} API requests: {describe(first)})")
    print(f"no-op rerun, pyinfra -y (median of {args.runs}): {statistics.median(reruns):6.2f} s  "
          f"(min {min(reruns):.2f}, max {max(reruns):.2f}; target < 3 s)")
    print(f"dry run --dry --diff (median of {args.runs}):    {statistics.median(dries):6.2f} s")
    print(f"no-op rerun API requests: {len(kube_rerun)} Kubernetes + {len(rerun_records) - len(kube_rerun)} "
          f"service-proxy (verify) = {describe(rerun_records)}")
    print(f"  per managed object ({MANAGED_OBJECTS}): {len(kube_rerun) / MANAGED_OBJECTS:.2f} (target <= 2); "
          f"writes: {sum(1 for r in rerun_records if r.get('verb') in WRITES and not r.get('dry_run'))}")
    print(f"dry run API requests: {len(dry_records)} ({describe(dry_records)}); writes: "
          f"{sum(1 for r in dry_records if r.get('verb') in WRITES and not r.get('dry_run'))}")


if __name__ == "__main__":
    main()
