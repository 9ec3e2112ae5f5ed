"""Run a container's command as a POSIX user: `python -m sandbox.cluster.run_as UID GID -- ARGV...`.

The kubelet stand-in starts container processes through this when a container has an identity
(its EFS access point's PosixUser, else its securityContext runAsUser/runAsGroup). Group first,
supplementary groups cleared, then the user: after setuid the process could no longer change
its groups. Then exec, so the container's process is this process (signals, exit code).

The process keeps one capability, CAP_DAC_READ_SEARCH (raised as ambient so it survives exec):
in a real pod the image's own files are readable by its user, while here the interpreter
standing in for the image may live under a root-only directory (/root/.pyenv). Writes are still
checked against the uid/gid, which is what EFS access point identity is about.
"""

from __future__ import annotations

import ctypes
import os
import sys

_CAP_DAC_READ_SEARCH = 2
_PR_SET_KEEPCAPS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE = 8, 47, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _keep_read_search(libc: ctypes.CDLL) -> None:
    bit = 1 << _CAP_DAC_READ_SEARCH
    data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
    if libc.capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_RAISE)")


def main(argv: list[str]) -> None:
    uid, gid, sep, *command = argv
    if sep != "--" or not command:
        raise SystemExit("usage: python -m sandbox.cluster.run_as UID GID -- ARGV...")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0)  # keep the permitted set across setuid
    os.setgid(int(gid))
    os.setgroups([])
    os.setuid(int(uid))
    _keep_read_search(libc)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
