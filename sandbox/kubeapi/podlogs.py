"""`GET /api/v1/namespaces/<ns>/pods/<pod>/log`: a container's log, with the options kubectl sends.

The options and the messages are the kubelet's and the API server's (kubernetes/kubernetes
pkg/registry/core/pod/rest/log.go, pkg/kubelet/kubelet_pods.go validateContainerLogStatus):
`container` (required when the pod has more than one container), `previous` (the last terminated
instance, 400 when there is none), `tailLines`, `limitBytes`, `sinceSeconds`/`sinceTime` (one of
them), `timestamps` and `follow` (stream until the container stops or the client goes away).

The sandbox keeps a container's output in ROOT/logs/<ns>/<pod>/<container>.log and the previous
instance's in `<container>.previous.log`. It does not keep a time per line: `timestamps` and
`sinceSeconds` use the file's last write time for every line (the kubelet stores one per line).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .registry import bad_request
from .resources import by_key
from .store import ApiError, Store

PODS = by_key("pods")
FOLLOW_POLL_SECONDS = 0.2


def _number(query: dict[str, str], key: str, minimum: int) -> int | None:
    value = query.get(key)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{key}={value!r} must be an integer") from None
    if number < minimum:
        raise ApiError(422, "Invalid", f'PodLogOptions "" is invalid: {key}: Invalid value: {number}: must be '
                       f"{'greater than 0' if minimum > 0 else 'greater than or equal to 0'}",
                       {"kind": "PodLogOptions", "causes": [{"reason": "FieldValueInvalid", "field": key}]})
    return number


def _flag(query: dict[str, str], key: str) -> bool:
    return query.get(key, "").lower() in ("true", "1")


def _rfc3339nano(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class LogRequest:
    """One log request, checked against the pod before anything is read."""

    def __init__(self, store: Store, namespace: str, name: str, query: dict[str, str],
                 log_path: Callable[[str, str, str], Path]):
        self.store, self.namespace, self.name = store, namespace, name
        self.tail_lines = _number(query, "tailLines", 0)
        self.limit_bytes = _number(query, "limitBytes", 1)
        self.since_seconds = _number(query, "sinceSeconds", 1)
        self.since_time = query.get("sinceTime") or None
        if self.since_seconds is not None and self.since_time:
            raise ApiError(422, "Invalid", 'PodLogOptions "" is invalid: sinceSeconds: Forbidden: at most one of '
                           "`sinceTime` or `sinceSeconds` may be specified")
        self.previous, self.timestamps, self.follow = _flag(query, "previous"), _flag(query, "timestamps"), \
            _flag(query, "follow")
        pod = store.must_get(PODS, namespace, name)
        self.container = self._container(pod, query.get("container") or None)
        path = Path(log_path(namespace, name, self.container))
        state = self._status(pod).get("state") or {}
        # The sandbox's kubelet rotates a container's log to .previous.log when the next instance starts; in a
        # back-off the current file is still the last terminated instance's, which is what `previous` means.
        self.path = path.with_suffix(".previous.log") if self.previous and state.get("running") else path
        if self._status(pod) or not path.exists():
            # Without a kubelet (the API-only sandbox) a log file stands in for a started container.
            self._check_state(pod)

    def _container(self, pod: dict, wanted: str | None) -> str:
        spec = pod.get("spec") or {}
        containers = [c.get("name") for c in spec.get("containers") or []]
        init = [c.get("name") for c in spec.get("initContainers") or []]
        if wanted is None:
            if len(containers) != 1:
                raise bad_request(f"a container name must be specified for pod {self.name}, choose one of: "
                                  f"[{' '.join(containers)}] or one of the init containers: [{' '.join(init)}]")
            return containers[0]
        if wanted not in containers + init:
            raise bad_request(f"container {wanted} is not valid for pod {self.name}")
        return wanted

    def _status(self, pod: dict) -> dict:
        status = pod.get("status") or {}
        for entry in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
            if entry.get("name") == self.container:
                return entry
        return {}

    def _check_state(self, pod: dict) -> None:
        # The kubelet's answers (validateContainerLogStatus) for a container with nothing to show.
        status = self._status(pod)
        state, last = status.get("state") or {}, status.get("lastState") or {}
        if self.previous:
            if not last.get("terminated"):
                raise bad_request(f'previous terminated container "{self.container}" in pod "{self.name}" not found')
            return
        if state.get("running") or state.get("terminated"):
            return
        waiting = state.get("waiting") or {}
        if last.get("terminated"):
            return  # restarting: the last instance's log is what there is
        reason = waiting.get("reason") or "ContainerCreating"
        what = {"ErrImagePull": "image can't be pulled", "ImagePullBackOff": "trying and failing to pull image"}
        raise bad_request(f'container "{self.container}" in pod "{self.name}" is waiting to start: '
                          f"{what.get(reason, reason)}")

    # -- reading -----------------------------------------------------------------------------

    def _cutoff(self) -> float | None:
        if self.since_seconds is not None:
            return time.time() - self.since_seconds
        if self.since_time:
            try:
                return datetime.fromisoformat(self.since_time.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise bad_request(f"sinceTime={self.since_time!r} is not an RFC 3339 time") from None
        return None

    def _lines(self, data: bytes, mtime: float) -> list[bytes]:
        lines = data.splitlines(keepends=True)
        cutoff = self._cutoff()
        if cutoff is not None and mtime < cutoff:
            lines = []
        if self.timestamps:
            stamp = _rfc3339nano(mtime).encode() + b" "
            lines = [stamp + line for line in lines]
        return lines

    def read(self) -> bytes:
        """The whole answer of a request without `follow`."""
        if not self.path.exists():
            return b""
        data = self.path.read_bytes()
        lines = self._lines(data, self.path.stat().st_mtime)
        if self.tail_lines is not None:
            lines = lines[-self.tail_lines:] if self.tail_lines > 0 else []
        text = b"".join(lines)
        return text[:self.limit_bytes] if self.limit_bytes is not None else text

    def stream(self, write: Callable[[bytes], None], stopping: Callable[[], bool]) -> None:
        """`follow`: what there is, then what the container writes, until it stops or the pod goes."""
        sent = 0
        first = self.read()
        offset = self.path.stat().st_size if self.path.exists() else 0
        if first:
            write(first)
            sent += len(first)
        while not stopping() and (self.limit_bytes is None or sent < self.limit_bytes):
            time.sleep(FOLLOW_POLL_SECONDS)
            pod = self.store.get(PODS, self.namespace, self.name)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size < offset:
                offset = 0  # a new instance started a new file
            if size > offset:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(size - offset)
                offset = size
                lines = self._lines(chunk, time.time()) if self.timestamps else [chunk]
                data = b"".join(lines)
                if self.limit_bytes is not None:
                    data = data[:self.limit_bytes - sent]
                if data:
                    write(data)
                    sent += len(data)
                continue
            if pod is None or not (self._status(pod).get("state") or {}).get("running"):
                return
