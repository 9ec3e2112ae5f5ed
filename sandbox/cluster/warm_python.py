"""Exec probes' Python commands run in a warm interpreter: forked, not started anew each time.

A Python exec probe (the TTS startup probe's `python3 tts_health_check.py`) is a few milliseconds of
work in a container, but a fresh interpreter here costs 0.1-0.4 s of wall time (its start and the
standard library the checks import: urllib.request alone is a fifth of a second), and at a time
scale of 30 that is 3-12 simulated seconds per probe, which the real probe does not take. So the
kubelet keeps one helper interpreter with that library imported; each probe is a fork of it
(`os.fork`, milliseconds) that runs the command as `python -c/-m/script` would, with the probe's
working directory and environment, its output on a pipe and its exit code on another.

The helper is single-threaded (forking it is safe) and ignores SIGCHLD, so its children reap
themselves; a child reports its own pid first (the kubelet kills its session at the timeout) and
its exit code last (none: it was killed).
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
import json, os, runpy, signal, socket, sys, traceback
import hashlib, subprocess, urllib.request  # what checks use: imported once, here
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
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
    channel.close()
    out, status = fds
    os.setsid()
    os.write(status, b"%d\n" % os.getpid())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        args = request["args"]
        if args[:1] == ["-c"]:
            sys.argv = ["-c"] + args[2:]
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        elif args[:1] == ["-m"]:
            sys.argv = [args[1]] + args[2:]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif not os.path.exists(args[0]):  # as the interpreter says it
            print("python3: can't open file %r: [Errno 2] No such file or directory" % args[0], file=sys.stderr)
            raise SystemExit(2)
        else:
            sys.argv = args
            runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if not isinstance(exit.code, (int, type(None))):
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os.write(status, b"%d\n" % code)
        os._exit(code)
"""


class WarmPython:
    """One helper interpreter; `run()` forks it to run a Python command (thread-safe)."""

    def __init__(self, python: str):
        self.python = python
        self._lock = threading.Lock()
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen | None = None

    def run(self, args: list[str], cwd: str, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
        """Run `python ARGS` (a script and its arguments, `-c CODE ...` or `-m MODULE ...`) in `cwd` with
        exactly `env`; (exit code, output). None when it ran past `timeout` seconds (it is killed)."""
        out_read, out_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._helper(), [json.dumps({"args": args, "cwd": str(cwd), "env": env}).encode()],
                                [out_write, status_write])
        finally:
            os.close(out_write)
            os.close(status_write)
        deadline = time.monotonic() + timeout
        output, status = bytearray(), bytearray()
        open_fds = {out_read: output, status_read: status}
        try:
            while open_fds:
                left = deadline - time.monotonic()
                ready = select.select(list(open_fds), [], [], max(0.0, left))[0] if left > 0 else []
                if not ready:
                    pid = status.split(b"\n")[0]
                    if pid.isdigit():
                        try:
                            os.killpg(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
                    return None, output.decode(errors="replace").strip()
                for fd in ready:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        open_fds[fd] += chunk
                    else:
                        del open_fds[fd]
        finally:
            os.close(out_read)
            os.close(status_read)
        lines = status.split(b"\n")
        code = int(lines[1]) if len(lines) > 1 and lines[1].strip().lstrip(b"-").isdigit() else -signal.SIGKILL
        return code, output.decode(errors="replace").strip()

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
