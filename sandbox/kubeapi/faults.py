"""API faults: what a flaky control plane does to clients (error bursts, slow answers, dropped connections).

Each fault kind is armed either by count (the next `count` matching requests) or at a rate (each
matching request with probability `rate`, from a seeded random stream so a test is repeatable,
until cleared or until `count` have fired). They are independent: a request can be slowed and
then answered with an error. Control requests never count.

    api-errors  codes=[500,503,429] retry_after=1   answer with these codes in turn (429 with Retry-After)
    api-drop                                        close the connection without an answer
    api-slow    seconds=1                           answer late

Common parameters: `count`, `rate` (0..1), `seed`, `path` (a substring or a list of substrings of
the request path, any of which selects the request; default every path, the service proxy too),
and for api-errors and api-drop `after=true`: the server does the work first (the write happens)
and then the answer is lost or replaced by the error, as when a load balancer or the network
fails between the API server and the client.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
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
    """What to do to one request. `after`: serve it first, then drop or replace the answer."""

    drop: bool = False
    delay_seconds: float = 0.0
    error_code: int | None = None
    retry_after: int | None = None
    after: bool = False

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


def _rate(params: dict, fault: str) -> float:
    value = params.get("rate", 0)
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if not 0 <= rate <= 1:
        raise ValueError(f"fault {fault}: rate={value!r} must be a probability from 0 to 1, e.g. rate=0.1")
    return rate


def _paths(params: dict, fault: str) -> list[str]:
    value = params.get("path") or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"fault {fault}: path={value!r} must be a path substring or a list of them, "
                         'e.g. path=/proxy/ or path=["/jobs","/deployments"]')
    return [p for p in value if p]


def _flag(params: dict, key: str, fault: str) -> bool:
    value = params.get(key, False)
    if isinstance(value, str):
        value = {"true": True, "false": False}.get(value.lower(), value)
    if not isinstance(value, bool):
        raise ValueError(f"fault {fault}: {key}={value!r} must be true or false")
    return value


@dataclass
class Armed:
    """One fault kind's trigger: the next `left` matching requests, or each with probability `rate`."""

    left: int = 0
    rate: float = 0.0
    limit: int | None = None  # with a rate: stop after this many firings (None: until cleared)
    paths: list[str] = field(default_factory=list)
    after: bool = False
    seed: int | None = None
    fired: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_params(cls, params: dict, fault: str, default_count: int) -> "Armed":
        rate = _rate(params, fault)
        seed = params.get("seed")
        if seed is not None:
            seed = _int(params, "seed", 0, fault)
        armed = cls(rate=rate, paths=_paths(params, fault), seed=seed, rng=random.Random(seed))
        if rate:
            armed.limit = _int(params, "count", 0, fault) if "count" in params else None
        else:
            armed.left = _int(params, "count", default_count, fault)
        return armed

    def fires(self, path: str) -> bool:
        if self.paths and not any(p in path for p in self.paths):
            return False
        if self.left > 0:
            self.left -= 1
        elif not (self.rate and (self.limit is None or self.fired < self.limit) and self.rng.random() < self.rate):
            return False
        self.fired += 1
        return True

    def active(self) -> dict:
        out: dict[str, Any] = {"left": self.left, "path": ",".join(self.paths)}
        if self.rate:
            out.update(rate=self.rate, seed=self.seed, fired=self.fired,
                       limit=self.limit)
        if self.after:
            out["after"] = True
        return out

    @property
    def armed(self) -> bool:
        return self.left > 0 or bool(self.rate and (self.limit is None or self.fired < self.limit))


class ApiFaults:
    """The active API faults of one server; `inject` arms them, `take` spends one request's worth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[int] = [503]
        self._error_index = 0
        self._retry_after = 1
        self._slow_seconds = 0.0
        self._armed: dict[str, Armed] = {name: Armed() for name in KUBE_FAULTS}

    def inject(self, name: str, params: dict | None = None) -> dict:
        """Arm `api-errors` {codes, retry_after}, `api-slow` {seconds}, `api-drop` (all with count, rate,
        seed, path; errors and drops with after), or `clear` them all."""
        params = params or {}
        with self._lock:
            if name == "api-errors":
                codes = params.get("codes", [503])
                if isinstance(codes, (int, str)):
                    codes = [c for c in str(codes).strip("[]").split(",") if c.strip()]
                try:
                    codes = [int(c) for c in codes]
                except (TypeError, ValueError):
                    raise ValueError(f"fault api-errors: codes={params.get('codes')!r} must be HTTP codes, "
                                     "e.g. codes=[503,429]") from None
                bad = [c for c in codes if c < 400 or c > 599]
                if not codes or bad:
                    raise ValueError(f"fault api-errors: codes={codes!r} must be 4xx/5xx codes, e.g. codes=[503,429]")
                armed = Armed.from_params(params, name, len(codes))
                armed.after = _flag(params, "after", name)
                self._errors, self._error_index = codes, 0
                self._retry_after = _int(params, "retry_after", 1, name)
            elif name == "api-slow":
                try:
                    seconds = float(params.get("seconds", 1.0))
                except (TypeError, ValueError):
                    raise ValueError(f"fault api-slow: seconds={params.get('seconds')!r} is not a number") from None
                armed = Armed.from_params(params, name, 1)
                self._slow_seconds = seconds
            elif name == "api-drop":
                armed = Armed.from_params(params, name, 1)
                armed.after = _flag(params, "after", name)
            elif name == "clear":
                self._armed = {kind: Armed() for kind in KUBE_FAULTS}
                return self.active()
            else:
                raise ValueError(f"unknown API fault {name!r}; known: {', '.join(KUBE_FAULTS)}, clear")
            self._armed[name] = armed
            return self.active()

    def active(self) -> dict:
        errors, slow = self._armed["api-errors"].active(), self._armed["api-slow"].active()
        return {"api-errors": {"codes": self._errors, "retry_after": self._retry_after, **errors},
                "api-slow": {"seconds": self._slow_seconds, **slow},
                "api-drop": self._armed["api-drop"].active()}

    def armed(self) -> dict:
        """Only the fault kinds that can still fire."""
        return {name: info for name, info in self.active().items() if self._armed[name].armed}

    def take(self, path: str = "") -> FaultDecision:
        decision = FaultDecision()
        with self._lock:
            if self._armed["api-slow"].fires(path):
                decision.delay_seconds = self._slow_seconds
            drop, errors = self._armed["api-drop"], self._armed["api-errors"]
            if drop.fires(path):
                decision.drop, decision.after = True, drop.after
            elif errors.fires(path):
                decision.error_code = self._errors[self._error_index % len(self._errors)]
                decision.after = errors.after
                self._error_index += 1
                if decision.error_code == 429:  # as API priority and fairness answers
                    decision.retry_after = self._retry_after
        return decision
