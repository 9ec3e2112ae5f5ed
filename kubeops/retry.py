"""Retrying transient failures by time: a budget in seconds, backoff with jitter, one summary per step.

A flaky control plane (429 with Retry-After, 5xx, a dropped connection) is something every
request of a run may meet; what matters to an operator is how long the run keeps trying, not how
many attempts it makes, so the budget is in seconds (`api_retry_seconds`). Delays grow
exponentially from `first_delay` up to `max_delay`, each drawn at random from its upper half so
that clients that failed together do not retry together (AWS's "equal jitter"), and a server's
Retry-After is honoured. Every retry is noted in a RetryLog, and each step reports what it had to
retry once, in one line ("3 transient API errors retried over 4 s: 503 x2, connection reset x1"),
instead of one log line per attempt.

The API connection (kubeops.client) and the speech round trip (qwen_speech.roundtrip) both use it.
"""

from __future__ import annotations

import collections
import http.client
import random
import threading
from dataclasses import dataclass, field

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class RetryPolicy:
    """How long to keep retrying, and how to space the attempts.

    + budget_seconds: give up once a retry would start later than this after the first attempt
    + first_delay: the first pause, seconds
    + max_delay: no pause is longer (a Retry-After longer than what is left of the budget ends it)
    """

    budget_seconds: float = 60.0
    first_delay: float = 0.2
    max_delay: float = 5.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, elapsed: float, retry_after: str | float | None = None) -> float | None:
        """Seconds to pause before retry number `attempt` (1, 2, ...), or None when the budget is spent."""
        backoff = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        pause = backoff * (0.5 + self.rng.random() / 2)
        server_says = _seconds(retry_after)
        if server_says is not None:
            pause = max(server_says, pause / 4)
        if elapsed + pause > self.budget_seconds:
            return None
        return pause


def _seconds(value: str | float | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # an HTTP date: rare from an API server; fall back to our own backoff
    return seconds if seconds >= 0 else None


def cause_of(exc: BaseException) -> str:
    """A short name for why a request got no answer ("connection reset", "timeout", ...)."""
    seen = exc
    for _ in range(5):  # urllib3 wraps the socket error (ProtocolError, MaxRetryError ...)
        if isinstance(seen, ConnectionResetError):
            return "connection reset"
        if isinstance(seen, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionAbortedError)):
            return "connection dropped"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, TimeoutError) or "timed out" in str(seen).lower():
            return "timeout"
        nested = getattr(seen, "reason", None) or (seen.args[-1] if getattr(seen, "args", None) else None)
        if not isinstance(nested, BaseException):
            nested = seen.__cause__ or seen.__context__
        if not isinstance(nested, BaseException):
            break
        seen = nested
    text = str(exc).lower()
    if "reset" in text:
        return "connection reset"
    if "disconnected" in text or "aborted" in text or "closed" in text:
        return "connection dropped"
    return type(exc).__name__


class RetryLog:
    """The retries since the last summary: causes and time spent pausing. Thread-safe."""

    def __init__(self, noun: str = "transient API error") -> None:
        self.noun = noun
        self._lock = threading.Lock()
        self._causes: collections.Counter[str] = collections.Counter()
        self._paused = 0.0
        self.total = 0

    def note(self, cause: str, paused: float) -> None:
        with self._lock:
            self._causes[cause] += 1
            self._paused += paused
            self.total += 1

    def describe(self) -> str:
        """The causes so far, most frequent first ("503 x3, connection reset x1"), kept."""
        with self._lock:
            return _causes_text(self._causes)

    def take_summary(self) -> str | None:
        """One line for what was retried since the last call (None when nothing was), then forget it."""
        with self._lock:
            causes, paused = self._causes, self._paused
            self._causes, self._paused = collections.Counter(), 0.0
        count = sum(causes.values())
        if not count:
            return None
        noun = self.noun if count == 1 else self.noun + "s"
        return f"{count} {noun} retried over {paused:.0f} s: {_causes_text(causes)}"


def _causes_text(causes: collections.Counter) -> str:
    return ", ".join(f"{cause} x{n}" for cause, n in causes.most_common())

