"""Shared pieces of the seeding tests: a sandbox hub per test, the seeder run as a subprocess, and
the huggingface_hub 0.36.2 venv (what the ASR/TTS images carry) for the compatibility runs."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.hub import ASR_REPO, TTS_REPO, HubServer

PROJECT = Path(__file__).resolve().parents[1]
SEED_SCRIPT = PROJECT / "files" / "seed_models.py"
GUARD_SCRIPT = PROJECT / "files" / "check_model_manifest.py"
MANIFEST_NAME = ".qwen3-seed-manifest.json"
HUB036_VENV = PROJECT / ".venv-hub036"
HUB036_VERSION = "0.36.2"
CHUNK = 64 * 1024  # small chunks so the default ~2 MB repos span many of them

REPOS = {ASR_REPO: "Qwen3-ASR-1.7B", TTS_REPO: "Qwen3-TTS-CustomVoice"}


@dataclass
class SeedRun:
    returncode: int
    output: str

    @property
    def result(self) -> dict:
        """The SEED-RESULT json the seeder prints (last line on success, before the error on failure)."""
        for line in reversed(self.output.splitlines()):
            if line.startswith("SEED-RESULT "):
                return json.loads(line[len("SEED-RESULT "):])
        raise AssertionError(f"no SEED-RESULT line in the seeder output:\n{self.output}")

    @property
    def last_line(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def seed_env(hub_url: str, token: str | None = None, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update({"HF_ENDPOINT": hub_url, "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1",
                "HF_HOME": str(Path(env.get("TMPDIR", "/tmp")) / "seed-tests-hf-home")})
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(extra or {})
    return env


def seed_command(python: str, repo: str, revision: str, dest: Path, *extra: str) -> list[str]:
    return [python, str(SEED_SCRIPT), "--repo", repo, "--revision", revision, "--dest", str(dest),
            "--chunk-size", str(CHUNK), "--retries", "2", *extra]


def run_seed(hub_url: str, repo: str, revision: str, dest: Path, *extra: str, python: str = sys.executable,
             token: str | None = None, env: dict | None = None, preexec_fn=None, timeout: float = 120) -> SeedRun:
    """Run files/seed_models.py to completion (bounded) and capture what `kubectl logs` would show."""
    proc = subprocess.run(seed_command(python, repo, revision, dest, *extra), env=seed_env(hub_url, token, env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)
    return SeedRun(proc.returncode, proc.stdout)


def guard_command(model_dir: Path, repo: str, commit: str, *extra: str) -> list[str]:
    return [sys.executable, str(GUARD_SCRIPT), "--model-dir", str(model_dir), "--repo", repo, "--commit", commit, *extra]


def run_guard(model_dir: Path, repo: str, commit: str, *extra: str) -> SeedRun:
    proc = subprocess.run(guard_command(model_dir, repo, commit, *extra), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30)
    return SeedRun(proc.returncode, proc.stdout)


def manifest_of(dest: Path) -> dict:
    return json.loads((dest / MANIFEST_NAME).read_text())


def assert_seeded(hub: HubServer, repo: str, dest: Path) -> dict:
    """Every file of main is in dest with the hub's bytes, and the manifest names main's commit."""
    files = hub.files_at(repo)
    for path, blob in files.items():
        assert (dest / path).read_bytes() == hub.blobs.path(blob.sha256).read_bytes(), f"{path} differs from the hub"
    manifest = manifest_of(dest)
    assert manifest["repo"] == repo and manifest["commit"] == hub.commit_of(repo)
    assert sorted(entry["path"] for entry in manifest["files"]) == sorted(files)
    for entry in manifest["files"]:
        blob = files[entry["path"]]
        assert entry["size"] == blob.size
        assert entry.get("sha256" if blob.lfs else "blob_id") == (blob.sha256 if blob.lfs else blob.blob_id)
    assert not (dest / ".seed").exists(), "partial downloads left behind after a complete seed"
    return manifest


def flip_byte_keeping_mtime(path: Path, offset: int = 100) -> None:
    """Corrupt one byte in place and put the mtime back: the size and mtime say nothing changed."""
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll predicate until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up after {timeout}s waiting for {what}")


@pytest.fixture
def hub(tmp_path):
    """A fresh sandbox hub with the default small repos, on its own root."""
    server = HubServer(tmp_path / "sandbox")
    server.start()
    yield server
    server.stop()


def python_for_hub036() -> str:
    """Python 3.10 when this machine has one (the ASR image is Ubuntu 22.04: 3.10), else this interpreter."""
    candidates = [os.environ.get("SEED_COMPAT_PYTHON"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
                  shutil.which("python3.10")]
    for candidate in candidates:
        # A pyenv shim exists on PATH even when that version is not selected, and then fails: try it.
        if candidate and os.access(candidate, os.X_OK) and subprocess.run(
                [candidate, "-c", "import venv"], capture_output=True, timeout=60).returncode == 0:
            return candidate
    return sys.executable


def ensure_hub036_venv() -> Path:
    """The python of a venv with huggingface_hub 0.36.2 (on Python 3.10 when available), created once
    under the repo's git-ignored .venv-hub036/ (under a lock: test workers may ask at once)."""
    import fcntl

    HUB036_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(str(HUB036_VENV) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_hub036_venv_locked()


def _ensure_hub036_venv_locked() -> Path:
    python = HUB036_VENV / "bin" / "python"
    check = [str(python), "-c", "import huggingface_hub; print(huggingface_hub.__version__)"]
    if python.exists():
        probe = subprocess.run(check, capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == HUB036_VERSION:
            return python
    created = subprocess.run([python_for_hub036(), "-m", "venv", "--clear", str(HUB036_VENV)], capture_output=True,
                             text=True, timeout=300)
    if created.returncode == 0:
        created = subprocess.run([str(python), "-m", "pip", "install", "-q", f"huggingface_hub=={HUB036_VERSION}"],
                                 capture_output=True, text=True, timeout=600)
    if created.returncode != 0:
        pytest.fail(f"could not create {HUB036_VENV} with huggingface_hub=={HUB036_VERSION} (needed to test the "
                    f"seeder as the ASR image runs it): {created.stderr[-2000:]}")
    return python


@pytest.fixture(scope="session")
def hub036_python() -> str:
    return str(ensure_hub036_venv())
