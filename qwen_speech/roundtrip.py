"""The speech round trip the verify step runs: TTS speaks a sentence, ASR transcribes it, compare.

It proves more than /health: the TTS accepts the guide's model and voice names and returns
audio, the ASR accepts the served model name and an upload, and what comes back is what was said.
The character error rate (CER) is measured against the input text after dropping case,
whitespace and punctuation, so "你好，这是语音合成测试。" and "你好这是语音合成测试" match.

HTTP goes through a transport: any object with
`request(method, path, body=None, headers=None, timeout=...) -> (status, headers, body bytes)`
that answers non-2xx statuses instead of raising. `UrlTransport` is one for a plain base URL (the
ALB, a port-forward, a sandbox stand-in); the verify step passes one that goes through the
Kubernetes API server's service proxy. `RetryingTransport` wraps any of them so that an answer
that only says "not now" (no endpoints yet after a Spot replacement, a 429, a gateway error, a
dropped connection) is asked again within a deadline, and only a real answer fails the check.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from kubeops.retry import RetryLog, RetryPolicy

# The guide's examples (API 使用): auto language with Vivian, forced English with Ryan.
DEFAULT_CASES: tuple[dict, ...] = (
    {"text": "你好，这是语音合成测试。", "voice": "Vivian", "model": "tts-1"},
    {"text": "Hello, this is a TTS test.", "voice": "Ryan", "model": "tts-1-en"},
)
# About 60 s of speech: ~130 s of synthesis on a T4 at the guide's RTF 2.16, so longer than an
# ALB's default idle timeout (60 s) and short enough to run at every verify.
LONG_TEXT = "长文本语音合成会持续一分钟以上，负载均衡器和服务器都必须等到它结束，而不能中途断开连接。" * 6
SPEECH_PATH = "/v1/audio/speech"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
DEFAULT_TIMEOUT = 300.0  # the guide: ~20 s for a short sentence on a T4, minutes for long text

_ASR_PREFIX = re.compile(r"^\s*language\s+([^<]*?)\s*<asr_text>", re.IGNORECASE)


class RoundTripError(RuntimeError):
    """A speech endpoint refused a request or answered something unusable.

    `.endpoint` ("POST /v1/audio/speech on ..."), `.status` (0 when nothing answered), `.body`
    (the server's answer, text).
    """

    def __init__(self, message: str, *, endpoint: str = "", status: int = 0, body: str = ""):
        super().__init__(message)
        self.endpoint, self.status, self.body = endpoint, status, body


class Transport(Protocol):
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[int, dict, bytes]: ...


class UrlTransport:
    """HTTP to a base URL (e.g. `http://ALB:8880`) with urllib; error statuses are returned, not raised."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def __str__(self) -> str:
        return self.base_url

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[int, dict, bytes]:
        """Send one request; RoundTripError (status 0) when nothing answers."""
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers or {}), err.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RoundTripError(f"{method} {path} on {self}: no answer ({reason}); check that the service is "
                                 f"running and reachable from here", endpoint=f"{method} {path} on {self}") from None


def transient(status: int, body: bytes) -> bool:
    """An answer worth asking again: the way to the service is missing or hiccupped, not the service wrong.

    429 and 502-504 from anything (the API server's proxy answers 503 "no endpoints available" while
    no pod is Ready; an ALB 502/503 while its targets register), and a 500 that is a Kubernetes
    Status (the API server's own failure). A 500 from the service itself is a real answer.
    """
    if status in (429, 502, 503, 504):
        return True
    return status == 500 and _kubernetes_status(body) is not None


def _kubernetes_status(body: bytes) -> dict | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else None


def _cause(status: int, body: bytes) -> str:
    message = (_kubernetes_status(body) or {}).get("message") or ""
    if "no endpoints available" in message:
        return f"{status} no endpoints available"
    return str(status)


class RetryingTransport:
    """Another transport, asked again while its answers are transient (see `transient`), within a deadline.

    + transport: where the requests go
    + policy: how long and how often (kubeops.retry.RetryPolicy; its budget is the deadline)
    + log: where retries are noted, for one summary line per check

    At the deadline the last answer is returned (or its RoundTripError raised), so the caller
    reports what the service last said.
    """

    def __init__(self, transport: Transport, policy: RetryPolicy, log: RetryLog | None = None):
        self.transport, self.policy = transport, policy
        self.log = log if log is not None else RetryLog("transient answer")

    def __str__(self) -> str:
        return str(self.transport)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[int, dict, bytes]:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                status, answer_headers, answer = self.transport.request(method, path, body, headers, timeout=timeout)
            except RoundTripError as err:
                if err.status:
                    raise
                failure, cause, retry_after = err, "no answer", None
            else:
                if not transient(status, answer):
                    return status, answer_headers, answer
                failure, cause = None, _cause(status, answer)
                retry_after = {k.lower(): v for k, v in (answer_headers or {}).items()}.get("retry-after")
            attempt += 1
            pause = self.policy.delay(attempt, time.monotonic() - started, retry_after)
            if pause is None:
                if failure is not None:
                    raise failure
                return status, answer_headers, answer
            self.log.note(cause, pause)
            time.sleep(pause)


# ---------------------------------------------------------------------------------------------
# Text handling


def strip_asr_prefix(text: str) -> tuple[str, str]:
    """Split qwen-asr-serve's raw output into (language, transcript).

    `language English<asr_text>Hello` -> ("English", "Hello"); `language None<asr_text>` (no
    speech) -> ("", ""), as qwen_asr's parse_asr_output does; text without the prefix ->
    ("", text). Surrounding whitespace is dropped.
    """
    match = _ASR_PREFIX.match(text)
    if match is None:
        return "", text.strip()
    language = match.group(1).strip()
    if language.lower() == "none":
        return "", ""
    return language, text[match.end():].strip()


def normalise_for_cer(text: str) -> str:
    """Text as the CER compares it: NFKC, case-folded, without whitespace or punctuation (CJK too)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith(("P", "Z")))


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance between the normalised texts over the normalised reference's length.

    0.0 is a perfect transcript; it can exceed 1.0 when the hypothesis adds characters. An
    empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    ref, hyp = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def encode_multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type.

    + fields: form name -> text value
    + files: form name -> (filename, content, content type)
    """
    parts = [(name, None, str(value).encode(), None) for name, value in fields.items()]
    parts += [(name, filename, content, ctype) for name, (filename, content, ctype) in files.items()]
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in content for _, _, content, _ in parts):
        boundary = secrets.token_hex(16)
    out = []
    for name, filename, content, ctype in parts:
        disposition = f'form-data; name="{_quote(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quote(filename)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        out += [head.encode(), b"\r\n", content, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


# ---------------------------------------------------------------------------------------------
# The two calls


def speak(transport: Transport, text: str, voice: str, model: str, response_format: str = "wav",
          *, timeout: float = DEFAULT_TIMEOUT) -> tuple[bytes, float]:
    """Ask the TTS `POST /v1/audio/speech` for `text`; return (audio bytes, seconds the call took).

    Raises RoundTripError naming the endpoint, the status and the server's answer, with a hint.
    """
    endpoint = f"POST {SPEECH_PATH} on {transport}"
    body = json.dumps({"model": model, "input": text, "voice": voice, "response_format": response_format},
                      ensure_ascii=False).encode()
    started = time.monotonic()
    status, _, answer = transport.request("POST", SPEECH_PATH, body, {"Content-Type": "application/json"},
                                          timeout=timeout)
    seconds = time.monotonic() - started
    if status != 200:
        raise _endpoint_error(endpoint, status, answer, _tts_hint(status, answer, model, voice))
    if response_format == "wav" and not (answer[:4] == b"RIFF" and answer[8:12] == b"WAVE"):
        raise RoundTripError(f"{endpoint} answered 200 but not a WAV file (starts {answer[:16]!r}); is the Service "
                             f"routing to the TTS container?", endpoint=endpoint, status=status, body=_text(answer))
    return answer, seconds


def transcribe(transport: Transport, audio: bytes, model_name: str, language: str | None = None,
               *, filename: str = "speech.wav", timeout: float = DEFAULT_TIMEOUT) -> tuple[str, float]:
    """Upload `audio` to the ASR `POST /v1/audio/transcriptions`; return (raw text, seconds the call took).

    + model_name: the served model name (the model path given to qwen-asr-serve, e.g. /models/Qwen3-ASR-1.7B)
    + language: optional ISO-639-1 code to force the language

    The text is as the server returned it, possibly `language X<asr_text>...`: see strip_asr_prefix.
    """
    endpoint = f"POST {TRANSCRIPTIONS_PATH} on {transport}"
    fields = {"model": model_name, "response_format": "json"}
    if language:
        fields["language"] = language
    body, content_type = encode_multipart(fields, {"file": (filename, audio, "audio/wav")})
    started = time.monotonic()
    status, _, answer = transport.request("POST", TRANSCRIPTIONS_PATH, body, {"Content-Type": content_type},
                                          timeout=timeout)
    seconds = time.monotonic() - started
    if status != 200:
        raise _endpoint_error(endpoint, status, answer, _asr_hint(status, answer, model_name))
    try:
        text = json.loads(answer)["text"]
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}")
    except (ValueError, KeyError, TypeError) as err:
        raise RoundTripError(f"{endpoint} answered 200 without a JSON `text` ({err}): {_text(answer)[:300]}",
                             endpoint=endpoint, status=status, body=_text(answer)) from None
    return text, seconds


def _text(answer: bytes) -> str:
    return answer.decode("utf-8", errors="replace")


def _endpoint_error(endpoint: str, status: int, answer: bytes, hint: str) -> RoundTripError:
    body = _text(answer)
    message = f"{endpoint} answered {status}: {body[:500]}"
    return RoundTripError(message + (f"; {hint}" if hint else ""), endpoint=endpoint, status=status, body=body)


def _tts_hint(status: int, answer: bytes, model: str, voice: str) -> str:
    body = _text(answer)
    if status == 400 and "invalid_model" in body:
        return (f"model {model!r} is not a TTS model name: use tts-1, tts-1-<lang>, tts-1-hd or qwen3-tts, "
                f"not the model directory")
    if "Unsupported speakers" in body:
        return f"voice {voice!r} is not one of the nine speakers (Vivian, Serena, Uncle_Fu, Dylan, Eric, Ryan, " \
               f"Aiden, Ono_Anna, Sohee)"
    if status == 404:
        return f"no {SPEECH_PATH} there: does the Service port lead to the TTS container (8880)?"
    if status == 504:
        return ("the ALB's idle timeout ended before the synthesis did: raise ingress_idle_timeout_seconds "
                "(the load-balancer-attributes annotation, on both Ingresses of the group)")
    if status == 502:
        return ("the ALB lost its connection to the TTS: a backend keep-alive shorter than the ALB's idle "
                "timeout does that (backend_keep_alive_seconds), or the pod went away")
    if status == 503:
        return "the TTS has no registered ready target: check the TTS pod and its readiness"
    if status == 500 and "load" in body.lower():
        return "the TTS model did not load: check the model files on EFS and the pod log"
    return ""


def _asr_hint(status: int, answer: bytes, model_name: str) -> str:
    body = _text(answer)
    if status == 404 and "does not exist" in body:
        return (f"model {model_name!r} is not the served model name: send the model path given to qwen-asr-serve "
                f"(or its --served-model-name), as listed by GET /v1/models")
    if status == 404:
        return f"no {TRANSCRIPTIONS_PATH} there: does the Service port lead to the ASR container (8000)?"
    if status in (502, 503):
        return "the ASR Service has no ready endpoint: check the ASR pod and its readiness"
    if status == 400 and "file size" in body:
        return "the audio is over the server's upload limit (VLLM_MAX_AUDIO_CLIP_FILESIZE_MB, 25 MB by default)"
    return ""


# ---------------------------------------------------------------------------------------------
# The round trip


@dataclass
class RoundTripResult:
    """One sentence through TTS and ASR. `ok` is `cer <= max_cer`."""

    text: str
    voice: str
    model: str
    transcript: str
    cer: float
    tts_seconds: float
    asr_seconds: float
    ok: bool
    language: str = ""  # as the ASR reported it ("" when it did not say)


def round_trip(tts_transport: Transport, asr_transport: Transport, *, asr_model: str,
               cases: Iterable[Mapping[str, str]] = DEFAULT_CASES, max_cer: float,
               timeout: float = DEFAULT_TIMEOUT) -> list[RoundTripResult]:
    """Speak each case with the TTS (WAV), transcribe it with the ASR, and score the transcript.

    + tts_transport / asr_transport: how to reach each service (see Transport)
    + asr_model: the ASR served model name (e.g. /models/Qwen3-ASR-1.7B)
    + cases: mappings with text, voice and model (TTS model name); default: the guide's two examples
    + max_cer: a result is ok when its character error rate is at most this

    Endpoint failures raise RoundTripError; a poor transcript is a result with ok False.
    """
    results = []
    for case in cases:
        missing = [key for key in ("text", "voice", "model") if not case.get(key)]
        if missing:
            raise ValueError(f"round-trip case {dict(case)!r} lacks {', '.join(missing)}; give text, voice and model")
        audio, tts_seconds = speak(tts_transport, case["text"], case["voice"], case["model"], "wav", timeout=timeout)
        raw, asr_seconds = transcribe(asr_transport, audio, asr_model, timeout=timeout)
        language, transcript = strip_asr_prefix(raw)
        cer = character_error_rate(case["text"], transcript)
        results.append(RoundTripResult(text=case["text"], voice=case["voice"], model=case["model"],
                                       transcript=transcript, cer=cer, tts_seconds=tts_seconds,
                                       asr_seconds=asr_seconds, ok=cer <= max_cer, language=language))
    return results


@dataclass
class LongRequestResult:
    long_seconds: float
    short_seconds: float
    long_bytes: int


def long_request(tts_transport: Transport, *, text: str = LONG_TEXT, timeout: float = 3600.0,
                 short_case: Mapping[str, str] = DEFAULT_CASES[0]) -> LongRequestResult:
    """One long synthesis and, while it runs, a short one: both must answer 200.

    What it proves: the path to the TTS (the ALB's idle timeout, the servers' keep-alive, the
    probes) survives a request that sends nothing for minutes, and requests that arrive meanwhile
    are served (after it: the TTS server works on one synthesis at a time). Raises RoundTripError
    naming the request that failed.
    """
    outcome: dict[str, object] = {}

    def run_long() -> None:
        try:
            outcome["long"] = speak(tts_transport, text, "Vivian", "tts-1", "wav", timeout=timeout)
        except RoundTripError as err:
            outcome["long"] = err

    thread = threading.Thread(target=run_long, name="verify-long-synthesis", daemon=True)
    thread.start()
    thread.join(1.0)  # let the long one reach the server first
    short = speak(tts_transport, short_case["text"], short_case["voice"], short_case["model"], "wav",
                  timeout=timeout)
    thread.join(timeout)
    result = outcome.get("long")
    if isinstance(result, RoundTripError):
        raise RoundTripError(f"long synthesis ({len(text)} characters): {result}", endpoint=result.endpoint,
                             status=result.status, body=result.body)
    if result is None:
        raise RoundTripError(f"long synthesis ({len(text)} characters) did not answer within {timeout:.0f}s")
    audio, seconds = result
    return LongRequestResult(long_seconds=seconds, short_seconds=short[1], long_bytes=len(audio))
