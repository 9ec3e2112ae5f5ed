"""pytest fixtures that start real sandboxes (imported by tests/conftest.py).

- `sandbox`: a whole sandbox (`python -m sandbox serve --fast`, forked from a warmed fork server, every component,
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
    """A sandbox in its own process (`python -m sandbox serve --dir ROOT`, forked from the fork server
    below), output in ROOT/server.log."""

    def __init__(self, root: Path, options: SandboxOptions):
        super().__init__(root)
        self.options = options
        self.process: _ForkedServe | None = None
        self.startup_seconds: float | None = None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> "SandboxProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        began = time.monotonic()
        argv = ["serve", "--dir", str(self.root), "--options-json", self.options.to_json()]
        self.process = _ForkedServe.start(argv, env, self.root / "server.log")
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


# Modules every sandbox imports, among them moto's service models (EC2's alone take about 1.5 s of
# CPU to import): the fork server imports them once per test worker, and every sandbox a test starts
# is a fork of it that only sets itself up (about half of a sandbox's start).
_MOTO_SERVICES = ("acm", "cloudwatch", "ec2", "ecr", "efs", "eks", "elb", "elbv2", "events", "iam", "s3",
                  "secretsmanager", "sqs", "ssm", "sts")
FORK_SERVER_PRELOAD = ["sandbox.__main__", "sandbox.runtime", "sandbox.aws", "sandbox.cluster.cluster", "sandbox.hub",
                       "sandbox.speech", "moto.moto_server.threaded_moto_server", "boto3",
                       *(f"moto.{service}.{part}" for service in _MOTO_SERVICES for part in ("models", "responses", "urls")),
                       "sandbox._prewarm"]


def _serve_forked(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """In the fork: what `subprocess.Popen([python, -m, sandbox, *argv], start_new_session=True,
    stdout=stderr=log, env=env, cwd=PROJECT_ROOT)` would run, minus the imports."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(PROJECT_ROOT)
    from sandbox.__main__ import main  # preloaded

    os._exit(main(argv) or 0)


class _ForkedServe:
    """A sandbox forked by multiprocessing's fork server, with the part of Popen's API the handle uses."""

    _context = None

    def __init__(self, process):
        self._process = process
        self.pid = process.pid

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log_path: Path) -> "_ForkedServe":
        import multiprocessing

        if cls._context is None:
            cls._context = multiprocessing.get_context("forkserver")
            cls._context.set_forkserver_preload(FORK_SERVER_PRELOAD)
        # daemon: one a test forgot to stop is ended when the test worker exits, not waited for.
        process = cls._context.Process(target=_serve_forked, args=(argv, env, str(log_path)), daemon=True)
        process.start()
        return cls(process)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return None if self._process.is_alive() else self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self._process.is_alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        if self._process.is_alive():
            raise subprocess.TimeoutExpired(f"sandbox serve (pid {self.pid})", timeout)
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()


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
