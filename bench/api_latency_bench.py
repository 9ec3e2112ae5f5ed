"""Sandbox API server latency as the official client sees it. Prints figures; asserts nothing.

    .venv/bin/python bench/api_latency_bench.py [--count 200]

Times N Deployment creates then N typed reads (read_namespaced_deployment) against an API-only
in-process sandbox: the cost of validation, defaulting and storage per request. The CPU figures
(client and server share the process) hold up better than wall time on a loaded machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402

from sandbox.fixtures import InProcessSandbox  # noqa: E402
from sandbox.runtime import Sandbox, SandboxOptions  # noqa: E402


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                                           "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                                                         "limits": {"memory": "128Mi"}}}]}}}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Sandbox(Path(tmp) / "api", SandboxOptions(fast=True, with_aws=False, with_hub=False,
                                                            with_cluster=False))
        runtime.start()
        try:
            apps = client.AppsV1Api(InProcessSandbox(runtime).api_client())
            started, cpu_started = time.perf_counter(), time.process_time()
            for i in range(args.count):
                apps.create_namespaced_deployment("default", deployment(f"bench-{i}"))
            created, cpu_created = time.perf_counter(), time.process_time()
            for i in range(args.count):
                apps.read_namespaced_deployment(f"bench-{i}", "default")
            done, cpu_done = time.perf_counter(), time.process_time()
        finally:
            runtime.stop()
    print(f"{args.count} creates: {(created - started) * 1000 / args.count:.2f} ms each; "
          f"{args.count} typed reads: {(done - created) * 1000 / args.count:.2f} ms each; "
          f"total {done - started:.2f} s; CPU (client and server, one process): "
          f"{(cpu_created - cpu_started) * 1000 / args.count:.2f} ms per create, "
          f"{(cpu_done - cpu_created) * 1000 / args.count:.2f} ms per read")


if __name__ == "__main__":
    main()
