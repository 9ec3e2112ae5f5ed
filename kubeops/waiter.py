"""Readiness as data: a small predicate per kind, one generic wait loop, diagnosis from pods.

`READY[kind](obj)` answers "done?", `FAILED[kind](obj)` answers "will never be done, and why?".
While an object is not ready the waiter looks at its pods and their events, prints progress
when it changes and a heartbeat at a steady interval when it does not (`Heartbeat`: what it
waits for, elapsed and remaining time, the latest state; every wait of the playbook uses it),
and stops early with the reason when a pod cannot succeed (Unschedulable,
ImagePullBackOff, CrashLoopBackOff, a failing init container) instead of sitting out the
timeout. Adding a kind is one function in each table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .client import Kube, KubeApiError
from .kinds import Ref


class WaitFailed(Exception):
    """The object will not become ready; the message says why and what to look at."""


class WaitTimedOut(WaitFailed):
    pass


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def deployment_ready(obj: dict) -> bool:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
            and status.get("updatedReplicas", 0) == want
            and status.get("readyReplicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("replicas", 0) == want)


def deployment_failed(obj: dict) -> str | None:
    progressing = _conditions(obj).get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return f"progress deadline exceeded: {progressing.get('message', '')}"
    return None


def daemonset_ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    want = status.get("desiredNumberScheduled", 0)
    return (status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
            and status.get("updatedNumberScheduled", 0) == want
            and status.get("numberReady", 0) == want)


def job_ready(obj: dict) -> bool:
    return (_conditions(obj).get("Complete") or {}).get("status") == "True"


def job_failed(obj: dict) -> str | None:
    failed = _conditions(obj).get("Failed") or {}
    if failed.get("status") == "True":
        return f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip()
    return None


def pvc_ready(obj: dict) -> bool:
    return (obj.get("status") or {}).get("phase") == "Bound"


def ingress_ready(obj: dict) -> bool:
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return bool(ingress and (ingress[0].get("hostname") or ingress[0].get("ip")))


def namespace_ready(obj: dict) -> bool:
    return (obj.get("status") or {}).get("phase", "Active") == "Active"


def always_ready(obj: dict) -> bool:
    return True


def never_failed(obj: dict) -> str | None:
    return None


READY: dict[str, Callable[[dict], bool]] = {
    "Deployment": deployment_ready,
    "DaemonSet": daemonset_ready,
    "Job": job_ready,
    "PersistentVolumeClaim": pvc_ready,
    "Ingress": ingress_ready,
    "Namespace": namespace_ready,
}
FAILED: dict[str, Callable[[dict], str | None]] = {
    "Deployment": deployment_failed,
    "Job": job_failed,
}


def is_ready(obj: dict | None) -> bool:
    return obj is not None and READY.get(obj["kind"], always_ready)(obj)


# ---------------------------------------------------------------------------------------------
# Pods: what they are doing, and whether they can still succeed

FATAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


@dataclass
class PodView:
    name: str
    node: str | None
    summary: str  # one line for progress
    fatal: str | None  # why this pod cannot become ready, when known
    failing_container: str | None = None
    unschedulable: bool = False  # fatal only if no node comes (Karpenter, a Spot replacement)
    init_running: str | None = None  # the init container at work: its log says what it waits for


def pod_is_ready(pod: dict) -> bool:
    """The pod's Ready condition is True (what puts it behind its Services and the ALB)."""
    return (_conditions(pod).get("Ready") or {}).get("status") == "True"


def describe_pod(pod: dict) -> PodView:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    name, node = meta["name"], spec.get("nodeName")
    if meta.get("deletionTimestamp"):
        # A deleted pod stays listed while it terminates (its grace period); its last state
        # (a crash back-off, say) is history: its replacement decides, so it is never fatal.
        return PodView(name, node, f"{name}: Terminating", None)
    scheduled = _conditions(pod).get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        msg = scheduled.get("message", "")
        return PodView(name, node, f"{name}: Pending, Unschedulable: {msg}", f"pod {name} cannot be scheduled: {msg}",
                       unschedulable=True)
    for kind, statuses in (("init container", status.get("initContainerStatuses") or []),
                           ("container", status.get("containerStatuses") or [])):
        for cs in statuses:
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                detail = waiting.get("message") or last.get("message") or ""
                restarts = cs.get("restartCount", 0)
                text = f"{kind} {cs['name']} of pod {name} is in {reason}"
                text += f" after {restarts} restarts" if restarts else ""
                text += f": {detail}" if detail else ""
                return PodView(name, node, f"{name}: {reason} ({kind} {cs['name']})", text, cs["name"])
            if kind == "init container" and terminated and terminated.get("exitCode", 0) != 0 and spec.get("restartPolicy") == "Never":
                text = f"init container {cs['name']} of pod {name} failed: {terminated.get('message') or terminated.get('reason', '')}"
                return PodView(name, node, f"{name}: Init:Error", text, cs["name"])
            if kind == "init container" and not terminated and (waiting or state.get("running")):
                what = waiting.get("reason") or "Running"
                return PodView(name, node, f"{name}: Init ({cs['name']}: {what})", None,
                               init_running=None if waiting else cs["name"])
            if kind == "container" and waiting:
                return PodView(name, node, f"{name}: {waiting.get('reason', 'Waiting')}", None)
    phase = status.get("phase", "Pending")
    ready = pod_is_ready(pod)
    where = f" on {node}" if node else ""
    return PodView(name, node, f"{name}: {phase}{', Ready' if ready else ', not ready'}{where}", None)


def pod_selector(obj: dict) -> str | None:
    """The label selector of the pods an object owns, as a query string."""
    if obj["kind"] == "Job":
        return f"job-name={obj['metadata']['name']}"
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def latest_event(kube: Kube, namespace: str, name: str) -> str | None:
    try:
        events = kube.list("v1", "Event", namespace, field_selector=f"involvedObject.name={name}")
    except KubeApiError:
        return None
    if not events:
        return None
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp") or "")
    last = events[-1]
    return f"{last.get('reason', '')}: {last.get('message', '')}"


# ---------------------------------------------------------------------------------------------
# The wait loop

Progress = Callable[[str], None]

HEARTBEAT_SECONDS = 15.0  # the default of progress_interval_seconds


def seconds_text(seconds: float) -> str:
    """A duration as an operator reads it: 45s, 3m20s, 1h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Heartbeat:
    """Progress of one wait: a line when its state changes, and when it does not, one every
    `interval` seconds of real time, so a long wait is never silent and always says how long.

    + what: what is waited for ("Deployment hosthree/qwen3-asr")
    + timeout: seconds the wait may take (None: no deadline)
    + say: where lines go (None: nowhere)
    + interval: seconds between heartbeats (progress_interval_seconds; default HEARTBEAT_SECONDS)
    + announce: print the first state at once (False when the caller has just said it)

    Lines look like `waiting (phase Pending) [5s of 5m00s]` on a change and
    `still waiting for X: 45s elapsed, 4m15s left; unchanged for 30s: <state>` as a heartbeat.
    """

    def __init__(self, what: str, timeout: float | None, say: Progress | None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, announce: bool = True):
        self.what, self.timeout, self.clock, self.announce = what, timeout, clock, announce
        self.say = say or (lambda line: None)
        self.interval = HEARTBEAT_SECONDS if interval is None else interval
        self.started = clock()
        self._last_state: str | None = None
        self._state_since = self.started
        self._next_beat = self.started + self.interval

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def timing(self) -> str:
        if self.timeout is None:
            return f"{seconds_text(self.elapsed)} elapsed"
        left = max(0.0, self.timeout - self.elapsed)
        return f"{seconds_text(self.elapsed)} elapsed, {seconds_text(left)} left"

    def update(self, state: str) -> None:
        """Note the wait's current state (one line); print it if new, else a heartbeat when one is due."""
        now = self.clock()
        if state != self._last_state:
            first, self._last_state, self._state_since = self._last_state is None, state, now
            if self.announce or not first:  # announce=False: the caller has said what it waits for
                self.say(state if now - self.started < 1 else f"{state} [{self.timing()}]")
            self._next_beat = now + self.interval
        elif now >= self._next_beat:
            self.say(f"still waiting for {self.what}: {self.timing()}; unchanged for "
                     f"{seconds_text(now - self._state_since)}: {state}")
            # Steady: the next beat one interval after this one was due, not after a slow poll.
            self._next_beat = max(self._next_beat + self.interval, now + self.interval / 2)


def wait_until_ready(kube: Kube, ref: Ref, *, timeout: float, poll: float = 2.0,
                     progress: Progress | None = None, check: Callable[[dict], bool] | None = None,
                     diagnose_pods: bool = True, unschedulable_grace: float = 0.0,
                     heartbeat: float | None = None) -> dict:
    """Poll `ref` until ready (or `check(obj)`), raising WaitFailed with a diagnosis or on timeout.

    Progress goes through a `Heartbeat` every `heartbeat` seconds (default: the connection's
    `progress_interval`, from progress_interval_seconds).

    A pod that cannot be scheduled fails the wait once it has stayed so for `unschedulable_grace`
    seconds: long enough for Karpenter to bring a node (or a Spot replacement to join), short
    enough not to sit out the whole timeout when no node will come.
    """
    deadline = time.monotonic() + timeout
    unschedulable_since: dict[str, float] = {}
    ready = check or READY.get(ref.kind, always_ready)
    failed = FAILED.get(ref.kind, never_failed)
    beat = Heartbeat(str(ref), timeout, progress, heartbeat if heartbeat is not None else kube.progress_interval)
    line = ""
    while True:
        obj = kube.get(ref)
        if obj is not None and ready(obj):
            return obj
        if obj is not None:
            reason = failed(obj)
            if reason:
                raise WaitFailed(f"{ref}: {reason}" + _pod_hint(kube, obj))
        line = f"{ref}: not found yet" if obj is None else _progress_line(kube, obj, diagnose_pods,
                                                                            unschedulable_since, unschedulable_grace)
        beat.update(line)
        if time.monotonic() >= deadline:
            raise WaitTimedOut(f"{ref} was not ready after {seconds_text(timeout)}; last state: {line}. "
                               "Raise the timeout in the inventory if the cluster is just slow.")
        time.sleep(poll)


def _progress_line(kube: Kube, obj: dict, diagnose_pods: bool, unschedulable_since: dict[str, float],
                   grace: float) -> str:
    ref = Ref.of(obj)
    selector = pod_selector(obj) if diagnose_pods else None
    if not selector:
        return f"{ref}: waiting ({_status_words(obj)})"
    pods = kube.list("v1", "Pod", ref.namespace, label_selector=selector)
    if not pods:  # its status may still count the pods that are gone (a Spot interruption): not shown
        return f"{ref}: waiting for its pods to be created"
    views = [_with_init_log(kube, ref.namespace, describe_pod(p)) for p in pods]
    now = time.monotonic()
    for view in views:
        if view.unschedulable:
            since = unschedulable_since.setdefault(view.name, now)
            if now - since < grace:
                continue
            raise WaitFailed(f"{ref}: {view.fatal} (for {now - since:.0f}s; no node came)")
        if view.fatal:
            raise WaitFailed(f"{ref}: {view.fatal}" + _logs_hint(kube, ref.namespace, view))
    event = latest_event(kube, ref.namespace, views[-1].name)
    if event and event.startswith("Scheduled:") and views[-1].node:  # the summary names the node already
        event = None
    summary = "; ".join(v.summary for v in views)
    room = STATE_CHARS - len(summary) - len(" | last event ")
    if event and len(event) > room:  # one line per state; `kubectl describe pod` has the rest
        event = event[:room - 3] + "..." if room >= 24 else None
    return summary + (f" | last event {event}" if event else "")


def init_log_line(kube: Kube, namespace: str | None, view: PodView) -> str | None:
    """The newest line of the pod's running init container: what it waits for (the model guard
    for the seed, wait-for-asr for ASR on its node), in its own words."""
    if not view.init_running or not namespace:
        return None
    tail = kube.pod_log(namespace, view.name, view.init_running, tail_lines=1).strip()
    return tail.splitlines()[-1].strip() if tail else None


def _with_init_log(kube: Kube, namespace: str | None, view: PodView) -> PodView:
    line = init_log_line(kube, namespace, view)
    if line:
        line = line.removeprefix(f"{view.init_running}: ")
        head = f"{view.name}: Init ({view.init_running}: "
        room = STATE_CHARS - len(head) - 1
        view.summary = head + (line if len(line) <= room else line[:max(room - 3, 0)] + "...") + ")"
    return view


# A state line's length before its step label and timing: with both, a line stays under ~160 characters.
STATE_CHARS = 95


def _status_words(obj: dict) -> str:
    status = obj.get("status") or {}
    if obj["kind"] == "PersistentVolumeClaim":
        return f"phase {status.get('phase', 'Pending')}"
    if obj["kind"] == "Ingress":
        return "no load balancer address yet"
    return ", ".join(f"{k} {v}" for k, v in status.items() if isinstance(v, (int, str))) or "no status yet"


def _pod_hint(kube: Kube, obj: dict) -> str:
    selector = pod_selector(obj)
    if not selector:
        return ""
    for pod in kube.list("v1", "Pod", obj["metadata"].get("namespace"), label_selector=selector):
        view = describe_pod(pod)
        if view.fatal:
            return f"; {view.fatal}" + _logs_hint(kube, obj["metadata"].get("namespace"), view)
    return ""


def _logs_hint(kube: Kube, namespace: str | None, view: PodView) -> str:
    if not view.failing_container or not namespace:
        return ""
    tail = kube.pod_log(namespace, view.name, view.failing_container, tail_lines=5).strip()
    if not tail:
        return ""
    return "\n    last log lines of " + view.failing_container + ":\n      " + "\n      ".join(tail.splitlines()[-5:])


def job_log_tail(kube: Kube, job: dict, lines: int = 1) -> list[str]:
    """The newest `lines` lines the newest pod of a Job printed (seeding progress, its result)."""
    pods = kube.list("v1", "Pod", job["metadata"]["namespace"], label_selector=pod_selector(job))
    if not pods:
        return []
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    tail = kube.pod_log(job["metadata"]["namespace"], pods[-1]["metadata"]["name"], tail_lines=lines)
    return [line for line in tail.splitlines() if line.strip()]


def job_log_line(kube: Kube, job: dict) -> str | None:
    """The newest line a Job's pod printed: seeding progress for the operator."""
    tail = job_log_tail(kube, job)
    return tail[-1].strip() if tail else None


def node_gpus(node: dict, resource: str = "nvidia.com/gpu") -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource, "0")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

