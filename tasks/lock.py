"""One deploy at a time per cluster: a `coordination.k8s.io/v1` Lease held while a run writes.

Two runs at once interleave their writes: both used to exit 0 and report success although only
one's values were live, and the second deleted and recreated the first's seeding Jobs. The
Lease `kube-system/qwen3-speech-deploy` names the run that may write. In kube-system, not the
app namespace: step 2 creates that namespace (the lock must exist before it), and runs for two
namespaces of one cluster still share step 1's time-slicing config in kube-system.

It is taken by the first operation that writes (so `--dry` and a rerun with nothing to change
take no lock), renewed in the background every third of `deploy_lock_seconds`, and given back
when the run ends or is interrupted. A Lease not renewed for `deploy_lock_seconds` belongs to a
run that died and is taken over. A run that finds the lock held waits up to
`deploy_lock_wait_seconds`, then stops naming the holder and since when.

The protocol is client-go's leader election (kubernetes/client-go tools/leaderelection/
leaderelection.go and resourcelock/leaselock.go): a create that fails with AlreadyExists, or
an update with the read resourceVersion that fails with Conflict, means another run got there
first; an empty holderIdentity means nobody holds it; a release empties holderIdentity.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from datetime import datetime, timezone

from kubeops.client import Kube, KubeApiError, KubeUnreachable
from kubeops.connection import WriteRefused
from kubeops.kinds import Ref, collection_path
from kubeops.waiter import Heartbeat
from qwen_speech.manifests import labels

LEASE = Ref("coordination.k8s.io/v1", "Lease", "qwen3-speech-deploy", "kube-system")


class DeployLocked(WriteRefused):
    """Another run holds the deploy lock (or took it over from this one)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def run_identity(environment: str) -> str:
    """Who holds the lock, as an operator would recognise it: user@machine, process, environment."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container without /etc/passwd entry)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()} ({environment})"


class DeployLock:
    """The deploy lock of one cluster, for one run.

    + kube: the run's API connection
    + identity: this run's holderIdentity (run_identity())
    + lease_seconds: how long a holder that stopped renewing keeps the lock
    + wait_seconds: how long `hold()` waits for another run to finish before it stops
    + poll: seconds between looks while waiting
    """

    def __init__(self, kube: Kube, identity: str, *, lease_seconds: int, wait_seconds: float, poll: float = 2.0,
                 say=None):
        self.kube, self.identity = kube, identity
        self.lease_seconds, self.wait_seconds, self.poll = lease_seconds, wait_seconds, poll
        self.say = say or (lambda line: None)
        self.held = False
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- taking it ---------------------------------------------------------------------------

    def hold(self) -> None:
        """Make sure this run holds the lock; take it (waiting if need be) or raise DeployLocked."""
        if self.lost:
            raise DeployLocked(self.lost)
        if self.held:
            return
        deadline = time.monotonic() + self.wait_seconds
        beat = Heartbeat(f"the deploy lock {LEASE}", self.wait_seconds, self.say, self.kube.progress_interval)
        while True:
            holder = self._try_acquire()
            if holder is None:
                self.held = True
                self.say(f"deploy lock {LEASE} taken by {self.identity}")
                self._start_renewing()
                return
            if time.monotonic() >= deadline:
                raise DeployLocked(self._held_message(holder))
            beat.update(self._held_message(holder, waiting=True))
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())) or self.poll)

    def _try_acquire(self) -> dict | None:
        """One attempt; None when this run holds the lock now, else the live Lease of the holder."""
        live = self.kube.get(LEASE)
        now = _now()
        if live is None:
            try:
                self.kube.request("POST", collection_path(LEASE.api_version, LEASE.kind, LEASE.namespace),
                                  body=self._lease(now, transitions=0))
                return None
            except KubeApiError as err:
                if err.status != 409:
                    raise
                return self._mine_or(self.kube.get(LEASE))  # someone created it first (or our lost answer)
        spec = live.get("spec") or {}
        if spec.get("holderIdentity") == self.identity:
            return None
        if spec.get("holderIdentity") and not self._expired(spec, now):
            return live
        body = self._lease(now, transitions=int(spec.get("leaseTransitions") or 0) + 1)
        body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        try:
            self.kube.request("PUT", LEASE.path(), body=body)
            if spec.get("holderIdentity"):
                self.say(f"took over the deploy lock from {spec['holderIdentity']}, not renewed since "
                         f"{spec.get('renewTime')} (longer than {spec.get('leaseDurationSeconds')} s)")
            return None
        except KubeApiError as err:
            if err.status != 409:
                raise
            return self._mine_or(self.kube.get(LEASE))  # another run took it first (or our lost answer)

    def _mine_or(self, live: dict | None) -> dict | None:
        if live is not None and (live.get("spec") or {}).get("holderIdentity") == self.identity:
            return None
        return live or {"spec": {}}

    def _expired(self, spec: dict, now: datetime) -> bool:
        renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        return renewed is None or (now - renewed).total_seconds() > duration

    def _lease(self, now: datetime, *, transitions: int) -> dict:
        stamp = _micro_time(now)
        return {"apiVersion": LEASE.api_version, "kind": LEASE.kind,
                "metadata": {"name": LEASE.name, "namespace": LEASE.namespace, "labels": labels("qwen3-speech-deploy-lock")},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                         "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": transitions}}

    def _held_message(self, live: dict, waiting: bool = False) -> str:
        spec = live.get("spec") or {}
        holder = spec.get("holderIdentity") or "another run"
        since = spec.get("acquireTime") or "?"
        renewed = spec.get("renewTime") or "?"
        if waiting:
            return (f"another deploy holds the lock {LEASE}: {holder}, since {since}; waiting up to "
                    f"{self.wait_seconds:g} s (deploy_lock_wait_seconds)")
        return (f"another deploy holds the lock {LEASE}: {holder}, since {since} (renewed {renewed}); "
                f"nothing was written. Let it finish and rerun, or set deploy_lock_wait_seconds to wait for it; "
                f"a run that was killed loses the lock {spec.get('leaseDurationSeconds') or self.lease_seconds} s "
                "after its last renewal")

    # -- keeping it --------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name="deploy-lock-renewer", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                live = self.kube.get(LEASE)
                spec = (live or {}).get("spec") or {}
                if live is None or spec.get("holderIdentity") != self.identity:
                    self.lost = (f"the deploy lock {LEASE} was taken over by "
                                 f"{spec.get('holderIdentity') or 'nobody (deleted)'} while this run held it; "
                                 "stopping before writing more")
                    self.held = False
                    return
                live["spec"]["renewTime"] = _micro_time(_now())
                self.kube.request("PUT", LEASE.path(), body=live)
            except (KubeApiError, KubeUnreachable):
                continue  # the next renewal may get through; the lease outlives two missed ones

    # -- giving it back ----------------------------------------------------------------------

    def release(self) -> None:
        """Give the lock back (empty holderIdentity, as client-go's release does), quickly, without retries."""
        self._stop.set()
        if not self.held:
            return
        self.held = False
        self.kube.retry.budget_seconds = 0  # the run is ending: one try each, no waiting out a flaky API
        if self._renewer is not None:
            self._renewer.join(timeout=1)  # a renewal in flight would make the PUT below conflict
        # A renewal that got through between our read and our write answers 409: read again. Without
        # this, an interrupted run could leave the lock held and the operator's rerun would wait.
        for _attempt in range(3):
            live = self.kube.get(LEASE)
            if live is None or (live.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            live["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time(_now()))
            try:
                self.kube.request("PUT", LEASE.path(), body=live, timeout=3)
                return
            except KubeApiError as err:
                if err.status != 409:
                    raise
