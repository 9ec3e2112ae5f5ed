"""Containers' and exec probes' Python commands run in a warm interpreter: forked, not started anew.

A model guard, the TTS pod's wait for ASR or the TTS startup probe's `python3 tts_health_check.py`
is a second or less of work in a container, but a fresh interpreter here costs 0.1-0.4 s of wall
time (its start and the standard library the scripts import: urllib.request alone is a fifth of a
second), and at a time scale of 30 that is 3-12 simulated seconds each time, on the serving pods'
critical path, which the real container does not take. So the kubelet keeps one helper interpreter
with that library imported; each command is a fork of it (`os.fork`, milliseconds) that runs it as
`python -c/-m/script` would (sys.argv, sys.path[0], `__main__`, normal interpreter exit with its
atexit handlers and threads joined), with the container's working directory, environment and
output, in its own session.

The helper is single-threaded (forking it is safe) and ignores SIGCHLD. Per command it forks a
supervisor, which forks the runner, reports the runner's pid, waits for it and reports its wait
status (a signal's too) on a pipe; `WarmProcess` reads that pipe as a Popen would its child.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HELPER = r"""
import io, os, runpy, signal, socket, sys
import hashlib, json, subprocess, urllib.request  # what the scripts use: imported once, here
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
channel = socket.socket(fileno=int(sys.argv[1]))
while True:
    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 2)
    if not message:
        break
    request = json.loads(message)
    if os.fork():
        for fd in fds:
            os.close(fd)
        continue
    # the supervisor
    channel.close()
    out, status = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    runner = os.fork()
    if runner:
        os.close(out)
        os.write(status, b"%d\n" % runner)
        os.write(status, b"%d\n" % os.waitpid(runner, 0)[1])
        os._exit(0)
    # the runner: from here on as `python ARGS` would run
    os.close(status)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), write_through=True)
    args = request["args"]
    del message, fds, request, channel
    if args[:1] == ["-c"]:
        sys.argv, sys.path[0] = ["-c"] + args[2:], ""
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    elif args[:1] == ["-m"]:
        sys.argv, sys.path[0] = [args[1]] + args[2:], os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif not os.path.exists(args[0]):  # as the interpreter says it
        print("python3: can't open file %r: [Errno 2] No such file or directory" % os.path.abspath(args[0]),
              file=sys.stderr)
        sys.exit(2)
    else:
        sys.argv, sys.path[0] = args, os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")
    sys.exit(0)
"""


def warm_args(argv: list[str]) -> list[str] | None:
    """The arguments after the interpreter that a warm fork can run (a script, `-c CODE`, `-m
    MODULE`, with their arguments); None for interpreter options it cannot honour (-I, -O, ...)."""
    if not argv:
        return None
    if argv[0] in ("-c", "-m"):
        return argv if len(argv) > 1 else None
    return None if argv[0].startswith("-") else argv


class WarmProcess:
    """A command the helper runs: the part of subprocess.Popen the kubelet uses (pid, poll, wait,
    returncode, signals). A thread reads the supervisor's pipe, so any thread may poll or wait."""

    def __init__(self, args: list[str], status_fd: int):
        self.args = args
        self.returncode: int | None = None
        self._done = threading.Event()
        with os.fdopen(status_fd, "rb", buffering=0) as status:
            first = status.readline() if select.select([status], [], [], 30.0)[0] else b""
            if not first.strip().isdigit():
                raise OSError(f"the warm interpreter did not start {args[:1]}")
            self.pid = int(first)
            self._status = os.dup(status.fileno())
        threading.Thread(target=self._read_exit, name=f"warm-{self.pid}", daemon=True).start()

    def _read_exit(self) -> None:
        with os.fdopen(self._status, "rb") as status:
            line = status.readline().strip()
        # No word from the supervisor: it was killed with its runner.
        self.returncode = os.waitstatus_to_exitcode(int(line)) if line.isdigit() else -signal.SIGKILL
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if not self._done.is_set():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmPython:
    """One helper interpreter; `start()` and `run()` fork it (thread-safe)."""

    def __init__(self, python: str):
        self.python = python
        self._lock = threading.Lock()
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen | None = None

    def start(self, args: list[str], cwd: str, env: dict[str, str], output: int) -> WarmProcess:
        """Start `python ARGS` (see warm_args) in `cwd` with exactly `env`, its stdout and stderr on the
        file descriptor `output`, stdin /dev/null, in a session of its own."""
        status_read, status_write = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._helper(), [json.dumps({"args": args, "cwd": str(cwd), "env": env}).encode()],
                                [output, status_write])
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        return WarmProcess(args, status_read)

    def run(self, args: list[str], cwd: str, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
        """Run `python ARGS` to its end; (exit code, output). None when it ran past `timeout` seconds
        (its session is killed)."""
        out_read, out_write = os.pipe()
        try:
            process = self.start(args, cwd, env, out_write)
        finally:
            os.close(out_write)
        deadline = time.monotonic() + timeout
        output = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([out_read], [], [], left)[0]:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    process.wait()
                    return None, output.decode(errors="replace").strip()
                chunk = os.read(out_read, 65536)
                if not chunk:
                    break
                output += chunk
        finally:
            os.close(out_read)
        return process.wait(max(1.0, deadline - time.monotonic())), output.decode(errors="replace").strip()

    def _helper(self) -> socket.socket:
        """The helper's end of the channel, starting it (again, if it died) when needed. Under the lock."""
        if self._process is not None and self._process.poll() is None and self._channel is not None:
            return self._channel
        if self._channel is not None:
            self._channel.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen([self.python, "-c", HELPER, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._channel = ours
        return ours

    def stop(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            if self._process is not None:
                try:
                    self._process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
                self._process = None
