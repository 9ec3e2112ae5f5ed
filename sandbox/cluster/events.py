"""v1 Events, recorded the way kubelet and controllers do: aggregated by object, reason and message.

A repeated event bumps `count` and `lastTimestamp` on the existing object instead of adding a new
one; bumps are written at most once per `throttle` seconds so a fast probe loop does not flood the
store (the pending count is flushed on the next occasion).
"""

from __future__ import annotations

import threading
import time
import uuid

from sandbox.kubeapi.store import ApiError, Store, now_iso

from .common import EVENTS


class EventRecorder:
    def __init__(self, store: Store, throttle: float = 1.0):
        self.store = store
        self.throttle = throttle
        self._lock = threading.Lock()
        # (namespace, involved uid, reason, message) -> [event name, count written, pending, last write]
        self._seen: dict[tuple, list] = {}

    def record(self, obj: dict, type_: str, reason: str, message: str, *, component: str,
               host: str | None = None, field_path: str | None = None) -> None:
        """Record an Event about `obj` (any stored object, or a deleted one's last copy)."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta.get("uid") or meta["name"], reason, message, field_path)
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None:
                entry[2] += 1
                if now - entry[3] < self.throttle:
                    return
                count, entry[1], entry[2], entry[3] = entry[1] + entry[2], entry[1] + entry[2], 0, now
                name = entry[0]
            else:
                name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
                count = 1
                self._seen[key] = [name, 1, 0, now]
        stamp = now_iso()
        existing = self.store.get(EVENTS, namespace, name)
        if existing is not None:
            existing["count"] = count
            existing["lastTimestamp"] = stamp
            try:
                self.store.update(EVENTS, existing)
            except ApiError:
                pass
            return
        involved = {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta["name"],
                    "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion"),
                    "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        if not meta.get("namespace"):
            involved.pop("namespace")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": type_,
            "count": count, "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": None,
            "source": {"component": component, **({"host": host} if host else {})},
            "reportingComponent": component, "reportingInstance": host or "",
        }
        try:
            self.store.create(EVENTS, event)
        except ApiError:
            pass

    def flush(self) -> None:
        """Write bumps that the throttle held back."""
        now = time.monotonic()
        with self._lock:
            due = [(k, e) for k, e in self._seen.items() if e[2] and now - e[3] >= self.throttle]
            for _, entry in due:
                entry[1] += entry[2]
                entry[2] = 0
                entry[3] = now
        for key, entry in due:
            event = self.store.get(EVENTS, key[0], entry[0])
            if event is not None:
                event["count"] = entry[1]
                event["lastTimestamp"] = now_iso()
                try:
                    self.store.update(EVENTS, event)
                except ApiError:
                    pass
