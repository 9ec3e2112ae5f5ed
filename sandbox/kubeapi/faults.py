"""API faults: what a flaky control plane does to clients (error bursts, slow answers, dropped connections).

Each fault kind counts down over the next requests that reach the API (control requests do not
count). They are independent: a request can be slowed and then answered with an error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

KUBE_FAULTS = ("api-errors", "api-slow", "api-drop")

_REASONS = {
    403: ("Forbidden", "forbidden: the caller may not do this (injected by the sandbox, fault api-errors)"),
    422: ("Invalid", "the object is invalid (injected by the sandbox, fault api-errors)"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected by the sandbox (fault api-errors)"),
    502: ("InternalError", "Bad Gateway (injected by the sandbox, fault api-errors)"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing "
                     "the request"),
}


@dataclass
class FaultDecision:
    """What to do to one request."""

    drop: bool = False
    delay_seconds: float = 0.0
    error_code: int | None = None
    retry_after: int | None = None

    def error_status(self) -> dict:
        reason, message = _REASONS.get(self.error_code or 500, ("InternalError", "injected error"))
        details: dict[str, Any] = {"causes": [{"reason": "UnexpectedServerResponse",
                                               "message": "injected by the sandbox (fault api-errors)"}]}
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "details": details, "code": self.error_code}


def _int(params: dict, key: str, default: int, fault: str) -> int:
    value = params.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"fault {fault}: {key}={value!r} is not an integer; e.g. {key}={default}") from None


class ApiFaults:
    """The active API faults of one server; `inject` arms them, `take` spends one request's worth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[int] = []
        self._errors_left = 0
        self._error_index = 0
        self._retry_after = 1
        self._errors_path = ""
        self._slow_seconds = 0.0
        self._slow_left = 0
        self._drop_left = 0

    def inject(self, name: str, params: dict | None = None) -> dict:
        """Arm `api-errors` {codes, count, retry_after, path}, `api-slow` {seconds, count}, `api-drop` {count} or `clear`."""
        params = params or {}
        with self._lock:
            if name == "api-errors":
                codes = params.get("codes", [503])
                if isinstance(codes, (int, str)):
                    codes = [c for c in str(codes).split(",") if c.strip()]
                try:
                    codes = [int(c) for c in codes]
                except (TypeError, ValueError):
                    raise ValueError(f"fault api-errors: codes={params.get('codes')!r} must be HTTP codes, "
                                     "e.g. codes=[503,429]") from None
                bad = [c for c in codes if c < 400 or c > 599]
                if not codes or bad:
                    raise ValueError(f"fault api-errors: codes={codes!r} must be 4xx/5xx codes, e.g. codes=[503,429]")
                self._errors = codes
                self._errors_left = _int(params, "count", len(codes), name)
                self._error_index = 0
                self._retry_after = _int(params, "retry_after", 1, name)
                # Only requests whose path contains this (e.g. "/deployments/qwen3-asr"); "" = all.
                self._errors_path = str(params.get("path") or "")
            elif name == "api-slow":
                try:
                    self._slow_seconds = float(params.get("seconds", 1.0))
                except (TypeError, ValueError):
                    raise ValueError(f"fault api-slow: seconds={params.get('seconds')!r} is not a number") from None
                self._slow_left = _int(params, "count", 1, name)
            elif name == "api-drop":
                self._drop_left = _int(params, "count", 1, name)
            elif name == "clear":
                self._errors_left = self._slow_left = self._drop_left = 0
            else:
                raise ValueError(f"unknown API fault {name!r}; known: {', '.join(KUBE_FAULTS)}, clear")
            return self.active()

    def active(self) -> dict:
        return {"api-errors": {"codes": self._errors, "left": self._errors_left, "retry_after": self._retry_after,
                               "path": self._errors_path},
                "api-slow": {"seconds": self._slow_seconds, "left": self._slow_left},
                "api-drop": {"left": self._drop_left}}

    def take(self, path: str = "") -> FaultDecision:
        decision = FaultDecision()
        with self._lock:
            if self._slow_left > 0:
                self._slow_left -= 1
                decision.delay_seconds = self._slow_seconds
            if self._drop_left > 0:
                self._drop_left -= 1
                decision.drop = True
            elif self._errors_left > 0 and self._errors_path in path:
                self._errors_left -= 1
                decision.error_code = self._errors[self._error_index % len(self._errors)]
                self._error_index += 1
                if decision.error_code == 429:  # as API priority and fairness answers
                    decision.retry_after = self._retry_after
        return decision
