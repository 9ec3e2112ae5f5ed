"""pytest fixtures that start real sandboxes (imported by tests/conftest.py).

- `sandbox`: a whole sandbox (`python -m sandbox serve --fast` in a child process, every component,
  every prerequisite) for one test, stopped afterwards.
- `make_sandbox(**options)`: the same with SandboxOptions of your choice, e.g.
  `make_sandbox(gpu_node=False)` or `make_sandbox(with_hub=False, efs_file_system=False)`;
  each call starts another sandbox in its own directory.
- `api_sandbox`: only the Kubernetes API server (no AWS, Hub or cluster), in-process: starts in
  about 0.1 s, for tests of the API itself.

Every handle has `.root`, `.kubeconfig`, `.control` (SandboxControl), `.state` (state.json) and
`.api_client()` (a kubernetes ApiClient from the kubeconfig).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .control import SandboxControl
from .runtime import Sandbox, SandboxOptions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 15


class SandboxHandle:
    """What a test holds on to: where the sandbox lives and how to reach it."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.control = SandboxControl(self.root)

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state(self) -> dict:
        return self.control.state

    def api_client(self):
        """A kubernetes ApiClient for this sandbox (admin token, the sandbox's CA)."""
        return self.control.kube_api_client()

    def env(self) -> dict[str, str]:
        """ROOT/env as a dict (KUBECONFIG, AWS_ENDPOINT_URL, AWS credentials, HF_ENDPOINT)."""
        return self.control.env()


class SandboxProcess(SandboxHandle):
    """A sandbox in a child process: `python -m sandbox serve --dir ROOT`, output in ROOT/server.log."""

    def __init__(self, root: Path, options: SandboxOptions):
        super().__init__(root)
        self.options = options
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> "SandboxProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        began = time.monotonic()
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "serve", "--dir", str(self.root),
                 "--options-json", self.options.to_json()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(PROJECT_ROOT),
                start_new_session=True)
        state_path = self.root / "state.json"
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sandbox in {self.root} exited with {self.process.returncode} while starting:\n"
                                   + _tail(self.root / "server.log"))
            try:
                state = json.loads(state_path.read_text())
                if state.get("ready") and state.get("pid") == self.process.pid:
                    self.startup_seconds = time.monotonic() - began
                    return self
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the sandbox in {self.root} was not ready after {timeout}s:\n" + _tail(self.root / "server.log"))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bound; safe to call twice."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class InProcessSandbox(SandboxHandle):
    """A sandbox running in the test's own process; `.runtime` is the Sandbox (its store, servers)."""

    def __init__(self, runtime: Sandbox):
        super().__init__(runtime.root)
        self.runtime = runtime


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} is missing)"


def start_sandbox_process(root: Path, **options: Any) -> SandboxProcess:
    """Start `python -m sandbox serve` for `root` with SandboxOptions(**options) (fast unless said otherwise)."""
    options.setdefault("fast", True)
    return SandboxProcess(root, SandboxOptions.from_dict(options)).start()


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    """Factory: `make_sandbox(**SandboxOptions fields)` starts a sandbox process; all are stopped after the test."""
    started: list[SandboxProcess] = []

    def make(**options: Any) -> SandboxProcess:
        process = SandboxProcess(tmp_path / f"sandbox-{len(started)}",
                                 SandboxOptions.from_dict({"fast": True, **options}))
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., SandboxProcess]) -> SandboxProcess:
    """A whole sandbox (fast mode, all components and prerequisites) for one test."""
    return make_sandbox()


@pytest.fixture
def api_sandbox(tmp_path: Path) -> Iterator[InProcessSandbox]:
    """Only the Kubernetes API server, in this process (no AWS, Hub or cluster controllers)."""
    runtime = Sandbox(tmp_path / "api-sandbox", SandboxOptions(fast=True, with_aws=False, with_hub=False,
                                                               with_cluster=False))
    runtime.start()
    try:
        yield InProcessSandbox(runtime)
    finally:
        runtime.stop()


__all__ = ["InProcessSandbox", "SandboxHandle", "SandboxProcess", "api_sandbox", "make_sandbox", "sandbox",
           "start_sandbox_process"]
