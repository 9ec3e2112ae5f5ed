"""Which Kubernetes connection each pyinfra host uses.

The deploy opens the connection once (kubeconfig or EKS) and registers it; every operation then
asks for it by host. One connection per host per run keeps TLS sessions warm and the request
count low.
"""

from __future__ import annotations

from typing import Callable

from . import interrupt
from .client import Kube

_BY_HOST: dict[str, Kube] = {}
_GUARDS: dict[str, Callable[[], None]] = {}


class WriteRefused(Exception):
    """A guard refused to let this run write (another run holds the cluster's deploy lock)."""


def use(host, kube: Kube) -> Kube:
    _BY_HOST[host.name] = kube
    return kube


def kube_for(host) -> Kube:
    try:
        return _BY_HOST[host.name]
    except KeyError:
        raise RuntimeError(f"no Kubernetes connection registered for host {host.name!r}; "
                           "call kubeops.connection.use(host, kube) first (tasks/connect.py does)") from None


def registered(host) -> Kube | None:
    return _BY_HOST.get(host.name)


def guard_writes(host, check: Callable[[], None]) -> None:
    """Run `check()` before every execute-time command of this host; it raises WriteRefused to stop the run."""
    _GUARDS[host.name] = check


def check_before_writing(host) -> None:
    if interrupt.interrupted():
        raise WriteRefused("interrupted (Ctrl-C): nothing more is written")
    check = _GUARDS.get(host.name)
    if check is not None:
        check()
