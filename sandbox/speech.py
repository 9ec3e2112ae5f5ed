"""Stand-ins for the two speech servers, and the audio encoding they share.

The kubelet starts one of these for each running container of the ASR or TTS image, on a loopback
port, instead of the real GPU servers. They implement the HTTP surface the playbook and an
operator use, with the request checks of the real servers (see upstream-facts.md sections 1 and
2), so a round trip through the sandbox passes only when routing, model names and requests are
right:

- ASR: vLLM's OpenAI server as `qwen-asr-serve` runs it. Like vLLM, the socket is bound at start
  but listens only after the model has "loaded" (`load_seconds`), so probes see connection
  refused meanwhile. `GET /health` answers 200 with an empty body, `GET /v1/models` lists the
  served model names (`--served-model-name` aliases, else the model argument), and
  `POST /v1/audio/transcriptions` takes a multipart upload (at most
  `VLLM_MAX_AUDIO_CLIP_FILESIZE_MB`, default 25) for one of them and answers
  `{"text": "language Chinese<asr_text>...", "usage": {...}}`: the prefix qwen-asr-serve leaves
  in. A model directory without `config.json`, or `--dtype bfloat16` on a GPU below compute
  capability 8.0 (a T4 is 7.5), makes `start_stand_in` raise `StandInCrashed` (vLLM exits before
  binding), so the kubelet can show a crashing container; `auto` falls back to float16 there
  with a warning, as vLLM does.
- TTS: groxaxo/Qwen3-TTS-Openai-Fastapi. It listens once its model has loaded (uvicorn opens
  the socket after the lifespan hook, which loads the model); after a failed load it listens
  anyway and `GET /health` answers 200 reporting `initializing` for as long as the model
  directory lacks the files the real loader needs, then `healthy`: readiness has to read the
  JSON. `POST /v1/audio/speech` validates like the real one (422 for schema errors, 400 for an
  unknown model or empty input, 500 "Unsupported speakers" for unknown voices), then holds the
  server for the synthesis (RTF 2.16 x the speech's length, on the sandbox's time scale): the
  real server synthesises inside its one event loop, so nothing else, `/health` included, is
  answered meanwhile; connections are still accepted.
- Keep-alive: both close a connection idle for their uvicorn keep-alive, 5 s unless told: vLLM
  reads `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`, the TTS server takes `--timeout-keep-alive` only when
  started through the uvicorn CLI (its own `python -m api.main` passes none).

Audio is a real 24 kHz 16-bit mono WAV: a 440 Hz tone, then a frame (magic, length, CRC-32, JSON
with text, language, voice, speed) with one payload byte per 5 ms as a constant sample level,
then silence, so the length grows with the text like speech does. `decode_speech` reverses it
exactly and refuses anything else; the ASR stand-in answers 400 for audio it cannot decode.
"""

from __future__ import annotations

import array
import binascii
import hmac
import http.server
import io
import json
import math
import socket
import struct
import sys
import threading
import time
import unicodedata
import wave
from collections import deque
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

SAMPLE_RATE = 24000
PREAMBLE = array.array("h", (round(6000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) for i in range(2400)))
SAMPLES_PER_BYTE = 120      # 5 ms per payload byte
LEVEL_STEP = 200            # sample level = (byte - 128) * LEVEL_STEP, exact in int16
FRAME_MAGIC = b"QSPK"
FRAME_VERSION = 1
FRAME_HEADER = struct.Struct(">4sBII")  # magic, version, payload length, CRC-32 of payload
# Non-WAV formats (mp3, opus, aac, flac) come back as this marker, the format, a newline and the
# WAV: the right Content-Type without an encoder; the ASR stand-in unwraps it as a real
# decoder would decode the real thing.
STUB_MAGIC = b"QSPK-STUB "
# Rough speaking rates, so durations (and `usage.seconds`) look like speech.
SECONDS_PER_CJK_CHAR = 0.25
SECONDS_PER_OTHER_CHAR = 0.07
MAX_SPEECH_SECONDS = 660.0  # the guide: about 11 minutes at most (max_new_tokens=8192 at 12 Hz)

TTS_LANGUAGES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "de": "German",
                 "fr": "French", "es": "Spanish", "ru": "Russian", "pt": "Portuguese", "it": "Italian"}
TTS_MODELS = ("qwen3-tts", "tts-1", "tts-1-hd") + tuple(
    f"{prefix}-{code}" for code in TTS_LANGUAGES for prefix in ("tts-1", "tts-1-hd"))
TTS_SPEAKERS = ("Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden", "Ono_Anna", "Sohee")
# The wrapper maps OpenAI voice names to speakers; four of them name speakers that the
# CustomVoice model does not have, so they fail at generation time (upstream-facts.md 2).
OPENAI_VOICES = {"alloy": "Vivian", "echo": "Ryan", "fable": "Sophia", "nova": "Isabella",
                 "onyx": "Evan", "shimmer": "Lily"}
TTS_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
TTS_KEY_APP = "tts_api_key:app"  # files/tts_api_key.py: the TTS app behind the API key
TTS_BACKENDS = ("official", "vllm_omni", "vllm-omni", "vllm", "pytorch", "openvino")
TTS_MODEL_FILES = ("config.json", "generation_config.json", "speech_tokenizer/config.json")
TTS_DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
TTS_MAX_INPUT = 4096

ASR_LANGUAGES = dict(TTS_LANGUAGES, yue="Cantonese", ar="Arabic", id="Indonesian", th="Thai", vi="Vietnamese",
                     tr="Turkish", hi="Hindi", ms="Malay", nl="Dutch", sv="Swedish", da="Danish", fi="Finnish",
                     pl="Polish", cs="Czech", fil="Filipino", fa="Persian", el="Greek", hu="Hungarian",
                     mk="Macedonian", ro="Romanian")
ASR_DEFAULT_MODEL = "Qwen/Qwen3-ASR-1.7B"
ASR_RESPONSE_FORMATS = ("json", "text", "verbose_json")
VLLM_VERSION = "0.14.0"
# GPU memory the real servers take, in GiB: the weights as the repos list them (upstream-facts:
# ASR ~4.7 GB, TTS ~4.52 GB), plus the sandbox's estimate of activations and CUDA context.
ASR_WEIGHTS_GIB, ASR_ACTIVATIONS_GIB = 4.4, 0.6
TTS_LOAD_GIB = 4.2 + 0.6
VLLM_DEFAULT_UTILIZATION = 0.9  # vllm engine/arg_utils.py: --gpu-memory-utilization default

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # above this the connection is refused outright (413)


class SpeechDecodeError(ValueError):
    """Audio that does not carry the stand-in speech encoding."""


class StandInCrashed(RuntimeError):
    """The server would have exited at start; the message is its last log line."""


# ---------------------------------------------------------------------------------------------
# The audio encoding


def detect_language(text: str) -> str:
    """The language name the stand-in TTS speaks for `language="Auto"`, judged by script."""
    counts = {"Japanese": 0, "Korean": 0, "Chinese": 0, "Russian": 0}
    for ch in text:
        name = unicodedata.name(ch, "")
        if name.startswith(("HIRAGANA", "KATAKANA")):
            counts["Japanese"] += 1
        elif name.startswith("HANGUL"):
            counts["Korean"] += 1
        elif name.startswith("CJK UNIFIED IDEOGRAPH"):
            counts["Chinese"] += 1
        elif name.startswith("CYRILLIC"):
            counts["Russian"] += 1
    if counts["Japanese"]:
        return "Japanese"  # Japanese text mixes kana with kanji
    best = max(counts, key=counts.get)
    return best if counts[best] else "English"


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long the stand-in's speech for `text` lasts, roughly a speaking rate."""
    seconds = 0.0
    for ch in text:
        if ch.isspace():
            continue
        wide = unicodedata.east_asian_width(ch) in ("W", "F")
        seconds += SECONDS_PER_CJK_CHAR if wide else SECONDS_PER_OTHER_CHAR
    return min(seconds / speed, MAX_SPEECH_SECONDS)


def encode_speech(text: str, language: str, voice: str, speed: float = 1.0) -> bytes:
    """Speak `text`: a 24 kHz 16-bit mono WAV that `decode_speech` turns back into (text, language).

    + text: what is said
    + language: the language name it is said in (`Chinese`, `English`, ...)
    + voice: the speaker, recorded in the payload
    + speed: 0.25..4.0; faster speech is shorter (only the trailing silence shrinks)
    """
    payload = json.dumps({"text": text, "language": language, "voice": voice, "speed": speed},
                         ensure_ascii=False, sort_keys=True).encode()
    frame = FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, len(payload), binascii.crc32(payload)) + payload
    samples = array.array("h", PREAMBLE)
    for byte in frame:
        samples.extend(array.array("h", ((byte - 128) * LEVEL_STEP,)) * SAMPLES_PER_BYTE)
    silence = round(speech_seconds(text, speed) * SAMPLE_RATE) - len(samples)
    if silence > 0:
        samples.extend(array.array("h", bytes(2 * silence)))
    return _wav(samples)


def _wav(samples: array.array) -> bytes:
    if sys.byteorder == "big":
        samples = array.array("h", samples)
        samples.byteswap()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def decode_speech(audio: bytes) -> tuple[str, str]:
    """Recover (text, language) from audio made by `encode_speech` (or a TTS stand-in stub).

    Silence decodes to ("", "None"), as Qwen3-ASR reports `language None` for no speech.
    Raises SpeechDecodeError for anything else: not a WAV, another sample format, other audio.
    """
    payload, _ = _decode(audio)
    return payload["text"], payload["language"]


def _decode(audio: bytes) -> tuple[dict, float]:
    """(payload, duration in seconds) of stand-in audio; see decode_speech."""
    if audio.startswith(STUB_MAGIC):
        _, _, audio = audio.partition(b"\n")
    try:
        with wave.open(io.BytesIO(audio), "rb") as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, struct.error) as err:
        raise SpeechDecodeError(f"not a WAV file ({err}); the stand-in decodes only WAV") from None
    if shape != (1, 2, SAMPLE_RATE):
        raise SpeechDecodeError(f"WAV with {shape[0]} channel(s), {8 * shape[1]}-bit, {shape[2]} Hz; the stand-in "
                                f"decodes only its own 1 channel, 16-bit, {SAMPLE_RATE} Hz speech")
    samples = array.array("h")
    samples.frombytes(frames[: len(frames) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    duration = len(samples) / SAMPLE_RATE
    if not any(samples):
        return {"text": "", "language": "None"}, duration
    if samples[: len(PREAMBLE)] != PREAMBLE:
        raise SpeechDecodeError("audio without the stand-in's 440 Hz preamble: the sandbox ASR can transcribe "
                                "only speech made by the sandbox TTS")
    header = bytes(_symbols(samples, 0, FRAME_HEADER.size))
    magic, version, length, crc = FRAME_HEADER.unpack(header)
    room = (len(samples) - len(PREAMBLE)) // SAMPLES_PER_BYTE - FRAME_HEADER.size
    if magic != FRAME_MAGIC or version != FRAME_VERSION or length > room:
        raise SpeechDecodeError(f"bad speech frame header (magic {magic!r}, version {version}, length {length})")
    payload = bytes(_symbols(samples, FRAME_HEADER.size, length))
    if binascii.crc32(payload) != crc:
        raise SpeechDecodeError("speech frame fails its CRC-32: the audio was altered")
    try:
        data = json.loads(payload)
        if not isinstance(data.get("text"), str) or not isinstance(data.get("language"), str):
            raise ValueError("text and language must be strings")
    except (ValueError, AttributeError) as err:
        raise SpeechDecodeError(f"speech frame payload is not the expected JSON: {err}") from None
    return data, duration


def _symbols(samples: array.array, first: int, count: int):
    for index in range(first, first + count):
        start = len(PREAMBLE) + index * SAMPLES_PER_BYTE
        block = samples[start:start + SAMPLES_PER_BYTE]
        level = block[0] if block else 1
        if len(block) != SAMPLES_PER_BYTE or block.count(level) != SAMPLES_PER_BYTE or level % LEVEL_STEP:
            raise SpeechDecodeError(f"speech frame symbol {index} is not a constant multiple of {LEVEL_STEP}")
        byte = level // LEVEL_STEP + 128
        if not 0 <= byte <= 255:
            raise SpeechDecodeError(f"speech frame symbol {index} level {level} is out of range")
        yield byte


def _pcm(wav_bytes: bytes) -> bytes:
    with wave.open(io.BytesIO(wav_bytes), "rb") as w:
        return w.readframes(w.getnframes())


# ---------------------------------------------------------------------------------------------
# HTTP plumbing shared by both stand-ins


class _Request:
    def __init__(self, method: str, target: str, headers, body: bytes):
        parts = urlsplit(target)
        self.method, self.path, self.query, self.headers, self.body = method, parts.path, parts.query, headers, body


class _Response:
    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None,
                 headers: dict[str, str] | None = None):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}


def _json(status: int, obj: Any) -> _Response:
    return _Response(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json")


def bearer_refused(req: _Request, key: str | None) -> bool:
    """vLLM's AuthenticationMiddleware (vllm/entrypoints/openai/api_server.py, later server_utils.py),
    also files/tts_api_key.py's: with a key, paths under /v1 need "Authorization: Bearer KEY"
    (OPTIONS excepted), answered 401 {"error": "Unauthorized"}; /health stays open."""
    return bool(key) and req.path.startswith("/v1") and req.method != "OPTIONS" \
        and not hmac.compare_digest(req.headers.get("Authorization", ""), f"Bearer {key}")


def read_http_body(rfile, headers, limit: int) -> bytes:
    """A request's whole body (Content-Length or chunked); ValueError "... too large" above `limit` bytes."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        chunks, total = [], 0
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                raise ValueError(f"request body too large (over {limit} bytes)")
            chunks.append(rfile.read(size))
            rfile.readline()
    length = int(headers.get("Content-Length") or 0)
    if length > limit:
        raise ValueError(f"request body too large ({length} bytes, at most {limit})")
    return rfile.read(length) if length else b""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Reads a whole request, asks the app, writes the answer; logs like uvicorn."""

    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "uvicorn"  # both real servers run under uvicorn

    def handle_one_request(self):
        """One request, as BaseHTTPRequestHandler does, with the server's keep-alive timer while idle.

        uvicorn closes a connection that stays idle for `timeout_keep_alive` after a response
        (the timer starts when a response is complete, so a new connection waits for its first
        request); it covers only the wait for the next request line, not a slow upload.
        """
        stand_in: StandIn = self.server.stand_in  # type: ignore[attr-defined]
        answered = getattr(self, "_answered", False)
        self.connection.settimeout(stand_in.keep_alive_wait() if answered else None)
        self._answered = True
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            self.close_connection = True  # idle past keep-alive: closed quietly, as uvicorn does
            return
        self.connection.settimeout(None)
        self.server.mark(self.connection, busy=bool(self.raw_requestline))  # type: ignore[attr-defined]
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(http.HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        method = getattr(self, "do_" + self.command, None)
        if method is None:
            self.send_error(http.HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")
            return
        try:
            method()
            self.wfile.flush()
        except ConnectionError:  # the client (a probe that timed out, the ALB) hung up first
            self.close_connection = True
        finally:
            self.server.mark(self.connection, busy=False)  # type: ignore[attr-defined]

    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _serve(self) -> None:
        stand_in: StandIn = self.server.stand_in  # type: ignore[attr-defined]
        try:
            body = self._read_body()
        except ValueError as err:
            self.close_connection = True
            self._write(_json(413 if "large" in str(err) else 400, {"detail": str(err)}))
            return
        try:
            response = stand_in.app.handle(_Request(self.command, self.path, self.headers, body))
        except Exception as err:  # an app bug must show as a 500, not a dropped connection
            response = _json(500, {"detail": f"stand-in error: {type(err).__name__}: {err}"})
        self._write(response)

    def _read_body(self) -> bytes:
        return read_http_body(self.rfile, self.headers, MAX_REQUEST_BYTES)

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.server.stand_in.draining:  # type: ignore[attr-defined]
            # uvicorn after SIGTERM: the answer in flight ends its connection (h11_impl.py
            # shutdown(): keep_alive = False once the response completes).
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_request(self, code="-", size="-"):
        code = int(code) if str(code).isdigit() else 0
        phrase = http.HTTPStatus(code).phrase if code in http.HTTPStatus._value2member_map_ else ""
        self.server.stand_in.log(  # type: ignore[attr-defined]
            f'INFO:     {self.client_address[0]}:{self.client_address[1]} - "{self.requestline}" {code} {phrase}')

    def log_message(self, format, *args):
        self.server.stand_in.log("WARNING:  " + format % args)  # type: ignore[attr-defined]


class _Server(http.server.ThreadingHTTPServer):
    """Keeps its open connections and whether a request is being served on each: a graceful stop
    closes the idle ones and waits for the others, a kill cuts them all."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.connections: dict[Any, bool] = {}  # socket -> a request is being served on it
        self.connections_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections[request] = False
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.pop(request, None)
        super().shutdown_request(request)

    def mark(self, connection, busy: bool) -> None:
        with self.connections_lock:
            if connection in self.connections:
                self.connections[connection] = busy

    def cut(self, idle_only: bool) -> None:
        """Shut down the open connections (only those waiting for their next request, when `idle_only`)."""
        with self.connections_lock:
            chosen = [c for c, busy in self.connections.items() if not (idle_only and busy)]
        for connection in chosen:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def open_connections(self) -> int:
        with self.connections_lock:
            return len(self.connections)


class StandIn:
    """A running stand-in: `.port`, `.url`, `.kind`, `.log_lines` (recent log), `.stop()`."""

    def __init__(self, kind: str, app, server: _Server, log_path: Path | None, time_scale: float = 1.0):
        self.kind, self.app, self._server = kind, app, server
        self.time_scale = time_scale
        self.port: int = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_lines: deque[str] = deque(maxlen=2000)
        self._log_path = log_path
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()  # no longer listening (SIGTERM, SIGKILL, stop)
        # Work in flight is abandoned (SIGKILL, stop); SIGTERM lets it finish, as uvicorn does.
        self._abandoned = threading.Event()
        self._serving = False
        self._serving_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.exit_message: str | None = None  # set when the server exits after start (the kubelet sees it)
        self.draining = False  # SIGTERM received: no new connections, requests in flight finish
        self.finished = threading.Event()  # the process has exited (after SIGTERM or SIGKILL)
        self._released = False
        server.stand_in = self  # type: ignore[attr-defined]

    def scaled(self, seconds: float) -> float:
        """A duration of the real server as this stand-in lives it (the sandbox's time scale)."""
        return seconds * self.time_scale

    def keep_alive_wait(self) -> float:
        """Socket timeout while a connection waits for its next request (the server's keep-alive)."""
        return max(self.scaled(self.app.keep_alive_seconds), 0.01)

    def log(self, line: str) -> None:
        """Append a line to the stand-in's log (and to `log_path`, when given)."""
        with self._log_lock:
            self.log_lines.append(line)
            if self._log_path is not None:
                try:
                    with open(self._log_path, "a", encoding="utf-8") as f:
                        f.write(line + "\n")
                except OSError:
                    pass  # a removed pod directory must not break the server

    def _start(self, listen_after: float, startup_lines: Callable[[], list[str]]) -> None:
        def listen() -> bool:
            try:
                self.app.finish_start()
            except StandInCrashed as err:
                if listen_after <= 0:
                    raise
                self.log(str(err))
                self.exit_message = str(err)
                self.app.release()
                return False
            with self._serving_lock:
                if self._stopping.is_set():
                    return False
                self._server.server_activate()
                self._serving = True
            for line in startup_lines():
                self.log(line)
            return True

        # Listening now (not in the thread) means a client may connect as soon as this returns.
        listening = listen_after <= 0 and listen()

        def run() -> None:
            if not listening and (self._stopping.wait(listen_after) or not listen()):
                return
            self._server.serve_forever(poll_interval=0.05)

        self._thread = threading.Thread(target=run, name=f"speech-{self.kind}-{self.port}", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        self._stopping.set()
        with self._serving_lock:
            serving = self._serving
        if serving:
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _exit(self) -> None:
        """The process is gone: the driver frees its GPU memory."""
        with self._serving_lock:
            released, self._released = self._released, True
        if not released:
            self.app.release()
        self.finished.set()

    def stop(self) -> None:
        """Stop listening and close the socket; in-flight requests are abandoned (daemon threads)."""
        self._abandoned.set()
        self._close_listener()
        self._exit()

    def terminate(self) -> None:
        """SIGTERM, handled as uvicorn does (both servers run under it; uvicorn server.py
        handle_exit/shutdown): stop accepting (the listening socket closes, so new connections are
        refused), close connections waiting for their next request, let the requests in flight finish
        (their answers say `Connection: close`), then exit. Returns at once; `finished` is set on exit.
        The TTS server synthesises inside its event loop, so a request it is working on, and those
        queued behind it, finish before it exits."""
        if self.draining or self.finished.is_set():
            return
        self.draining = True
        self.log("INFO:     Shutting down")
        self._close_listener()
        self._server.cut(idle_only=True)

        def wait_for_requests() -> None:
            if self._server.open_connections():
                self.log("INFO:     Waiting for connections to close. (CTRL+C to force quit)")
            while self._server.open_connections() and not self.finished.is_set():
                time.sleep(0.01)
            if not self.finished.is_set():
                for line in ("INFO:     Waiting for application shutdown.", "INFO:     Application shutdown complete.",
                             "INFO:     Finished server process"):
                    self.log(line)
            self._exit()

        threading.Thread(target=wait_for_requests, name=f"speech-{self.kind}-{self.port}-exit", daemon=True).start()

    def kill(self) -> None:
        """SIGKILL (or the instance going away): every connection is cut where it stands."""
        if self.finished.is_set():
            return
        self._abandoned.set()
        self._close_listener()
        self._server.cut(idle_only=False)
        self._exit()


def start_stand_in(kind: str, port: int = 0, *, model_dir: Path | None = None, load_seconds: float = 0.0,
                   served_model_name: str | list[str] | None = None, args: list[str] | None = None,
                   env: dict | None = None, log_path: Path | None = None, time_scale: float = 1.0,
                   gpu: tuple[str, float] | None = None, gpu_memory=None, owner: str = "") -> StandIn:
    """Start an ASR or TTS stand-in on 127.0.0.1 in a daemon thread and return it.

    + kind: "asr" (vLLM OpenAI server via qwen-asr-serve) or "tts" (Qwen3-TTS FastAPI wrapper)
    + port: port to bind; 0 picks a free one (see `.port`)
    + model_dir: host directory holding the model the container would load; None skips the file checks
    + load_seconds: model load time (real seconds): both listen only afterwards; TTS reports
      `initializing` after a failed load
    + served_model_name: ASR model name(s) clients may send; default from args (`--served-model-name`
      aliases, else the model argument, e.g. `/models/Qwen3-ASR-1.7B`), else `Qwen/Qwen3-ASR-1.7B`
    + args: the container's arguments after its executable (`qwen-asr-serve MODEL --dtype half ...`;
      for TTS those of `python -m uvicorn api.main:app ...`, where `--timeout-keep-alive` is read)
    + env: the container's environment (TTS_BACKEND, TTS_MODEL_NAME/TTS_MODEL_ID,
      NVIDIA_VISIBLE_DEVICES, VLLM_MAX_AUDIO_CLIP_FILESIZE_MB, VLLM_HTTP_TIMEOUT_KEEP_ALIVE)
    + log_path: file to append the server's log lines to (the container log)
    + time_scale: factor from the real server's durations (synthesis, keep-alive) to this one's;
      the sandbox's fast mode uses 0.01
    + gpu: (name, compute capability) of the node's GPU, e.g. ("Tesla T4", 7.5); None skips the
      dtype check
    + gpu_memory: the node's GPU memory ledger (sandbox.cluster.gpu_memory.GpuMemory); None: no
      memory model. ASR checks free >= --gpu-memory-utilization x total at start, takes its weights,
      and after load_seconds (its profiling) its KV cache, shrunk by whatever a co-tenant allocated
      meanwhile (vllm v1/worker/gpu_worker.py); TTS takes its model's memory at start
    + owner: who allocates in gpu_memory (the container), freed when the stand-in stops

    Raises StandInCrashed when the real server would exit at start: ASR with a model_dir lacking
    config.json or a dtype the GPU cannot run, TTS with an unknown TTS_BACKEND. Raises ValueError
    for an unknown kind.
    """
    env = dict(env or {})
    args = [str(a) for a in args or []]
    if kind == "asr":
        names = ([served_model_name] if isinstance(served_model_name, str) else served_model_name) \
            or asr_served_names(args) or [ASR_DEFAULT_MODEL]
        app = _AsrApp(model_dir, names, env)
        app.dtype, app.dtype_warnings = asr_dtype(args, gpu)
        app.memory = _AsrMemory(gpu_memory, owner, args) if gpu_memory is not None else None
        app.keep_alive_seconds = asr_keep_alive_seconds(env)
        seqs = _flag_values(args, "--max-num-seqs")
        app.max_num_seqs = int(seqs[0]) if seqs and seqs[0].isdigit() else VLLM_MAX_NUM_SEQS
    elif kind == "tts":
        app = _TtsApp(model_dir, load_seconds, env)
        if TTS_KEY_APP in args:  # files/tts_api_key.py in front of the server's app
            app.api_key = env.get("QWEN3_SPEECH_API_KEY") or None
            if not app.api_key:
                raise StandInCrashed("tts_api_key: QWEN3_SPEECH_API_KEY is empty; check the Secret named by "
                                     "api_key_secret (key api-key)")
        app.memory = gpu_memory
        app.owner = owner
        app.keep_alive_seconds = tts_keep_alive_seconds(args)
    else:
        raise ValueError(f"kind {kind!r} is not a speech stand-in; use 'asr' or 'tts'")
    server = _Server(("127.0.0.1", port), _Handler, bind_and_activate=False)
    try:
        server.server_bind()
    except OSError:
        server.server_close()
        raise
    stand_in = StandIn(kind, app, server, log_path, time_scale)
    app.stand_in = stand_in
    for line in app.boot_lines():
        stand_in.log(line)
    try:
        app.begin_start()
    except StandInCrashed:
        server.server_close()
        app.release()
        raise
    # Both bind early and listen once the model is loaded: vLLM after the engine is up, uvicorn
    # after the TTS server's lifespan hook (which loads the model) returns. Connection refused
    # meanwhile.
    stand_in._start(load_seconds, app.ready_lines)
    return stand_in


# ---------------------------------------------------------------------------------------------
# How the real servers' settings shape connections and time (keep-alive, dtype, synthesis time)

UVICORN_KEEP_ALIVE_SECONDS = 5.0  # uvicorn's --timeout-keep-alive default; api.main passes none
VLLM_KEEP_ALIVE_SECONDS = 5.0     # vllm envs.py: VLLM_HTTP_TIMEOUT_KEEP_ALIVE default
VLLM_MAX_NUM_SEQS = 256           # vllm engine arg_utils.py: --max-num-seqs default on a GPU
TTS_RTF = 2.16                    # the guide: a T4 needs 2.16 s of inference per second of speech
VLLM_DTYPES = {"auto": "auto", "half": "float16", "float16": "float16", "bfloat16": "bfloat16",
               "float": "float32", "float32": "float32"}
ASR_MODEL_DTYPE = "bfloat16"      # Qwen3-ASR's config.json torch_dtype, what `auto` asks for


def _flag_values(args: list[str], flag: str) -> list[str] | None:
    """Values after `flag` (argparse nargs='+': up to the next option) or in `flag=value`; None if absent."""
    for i, arg in enumerate(args):
        if arg == flag:
            values = []
            for value in args[i + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
            return values
        if arg.startswith(flag + "="):
            return [arg.split("=", 1)[1]]
    return None


def asr_served_names(args: list[str]) -> list[str]:
    """The names vLLM serves: every `--served-model-name` alias (the first is reported), else the model argument."""
    names = _flag_values(args, "--served-model-name")
    if names:
        return names
    model = next((a for i, a in enumerate(args) if not a.startswith("-")
                  and (i == 0 or not args[i - 1].startswith("--") or "=" in args[i - 1])), None)
    return [model] if model else []


def asr_dtype(args: list[str], gpu: tuple[str, float] | None) -> tuple[str, list[str]]:
    """(dtype vLLM runs, warning lines), or StandInCrashed as vLLM exits for a dtype the GPU lacks.

    vLLM (vllm/platforms/cuda.py) refuses bfloat16 below compute capability 8.0 and resolves
    `auto` for a bfloat16 model to float16 there, with a warning.
    """
    given = (_flag_values(args, "--dtype") or ["auto"])[0]
    if given not in VLLM_DTYPES:
        raise StandInCrashed(f"vllm serve: error: argument --dtype: invalid choice: {given!r} "
                             f"(choose from {', '.join(repr(d) for d in VLLM_DTYPES)})")
    dtype = VLLM_DTYPES[given]
    if gpu is None:
        return (ASR_MODEL_DTYPE if dtype == "auto" else dtype), []
    name, capability = gpu
    if capability >= 8.0:
        return (ASR_MODEL_DTYPE if dtype == "auto" else dtype), []
    if dtype == "bfloat16":
        raise StandInCrashed(f"ValueError: Bfloat16 needs compute capability 8.0 or higher; this {name} has "
                             f"{capability}. Pass --dtype=half to run in float16.")
    if dtype == "auto":
        return "float16", [f"WARNING {name} (compute capability {capability}) has no torch.bfloat16 support; "
                           f"falling back to torch.float16"]
    return dtype, []


def asr_keep_alive_seconds(env: dict) -> float:
    """vLLM's uvicorn keep-alive: VLLM_HTTP_TIMEOUT_KEEP_ALIVE seconds (default 5)."""
    raw = env.get("VLLM_HTTP_TIMEOUT_KEEP_ALIVE")
    try:
        return float(raw) if raw not in (None, "") else VLLM_KEEP_ALIVE_SECONDS
    except ValueError:
        raise StandInCrashed(f"ValueError: VLLM_HTTP_TIMEOUT_KEEP_ALIVE={raw!r} is not a number") from None


def tts_keep_alive_seconds(args: list[str]) -> float:
    """uvicorn's keep-alive for the TTS server: `--timeout-keep-alive N` when started through the
    uvicorn CLI; `python -m api.main` calls uvicorn.run without it, so 5 s (api/main.py `main`)."""
    values = _flag_values(args, "--timeout-keep-alive")
    if not values:
        return UVICORN_KEEP_ALIVE_SECONDS
    try:
        return float(values[0])
    except ValueError:
        raise StandInCrashed(f"Error: Invalid value for '--timeout-keep-alive': {values[0]!r} is not a valid "
                             f"integer.") from None


def tts_synthesis_seconds(text: str) -> float:
    """How long the official backend works on `text` (real seconds): RTF x the speech's length."""
    return TTS_RTF * speech_seconds(text)


# ---------------------------------------------------------------------------------------------
# ASR: vLLM's OpenAI server as qwen-asr-serve runs it


def _vllm_error(status: int, message: str, err_type: str = "BadRequestError", param: str | None = None) -> _Response:
    return _json(status, {"error": {"message": message, "type": err_type, "param": param, "code": status}})


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename or None, content). ValueError if malformed."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise ValueError(f"Content-Type {content_type!r} is not multipart/form-data")
    boundary = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ValueError("multipart/form-data without a boundary")
    fields: dict[str, tuple[str | None, bytes]] = {}
    parts = body.split(b"--" + boundary.encode())
    if len(parts) < 3:
        raise ValueError("multipart body without parts or closing boundary")
    for part in parts[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a blank line after its headers")
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            header, _, value = line.partition(":")
            if header.strip().lower() == "content-disposition":
                for item in value.split(";"):
                    key, _, val = item.strip().partition("=")
                    if key == "name":
                        name = val.strip('"')
                    elif key == "filename":
                        filename = val.strip('"')
        if name is None:
            raise ValueError("multipart part without a Content-Disposition name")
        fields[name] = (filename, content.removesuffix(b"\r\n"))
    return fields


GIB = 1024 ** 3


class _AsrMemory:
    """vLLM's start on a shared GPU (vllm v1/worker/gpu_worker.py): free >= utilization x total
    first; then weights and a profiling run; the KV cache gets the rest of the reservation, less
    any memory that grew on the device meanwhile (vLLM counts it as its own non-torch memory)."""

    def __init__(self, ledger, owner: str, args: list[str]):
        self.ledger, self.owner = ledger, owner
        values = _flag_values(args, "--gpu-memory-utilization")
        self.utilization = float(values[0]) if values else VLLM_DEFAULT_UTILIZATION
        self.requested = self.utilization * ledger.total
        self.kv = 0.0
        self._others_at_start = 0.0

    def begin(self) -> None:
        free, total = self.ledger.free(), self.ledger.total
        if free < self.requested:
            raise StandInCrashed(
                f"ValueError: Free memory on device cuda:0 ({free / GIB:.2f}/{total / GIB:.2f} GiB) on startup is "
                f"less than desired GPU memory utilization ({self.utilization}, {self.requested / GIB:.2f} GiB). "
                "Decrease GPU memory utilization or reduce GPU memory used by other processes.")
        self._others_at_start = self.ledger.allocated_by_others(self.owner)
        self._allocate((ASR_WEIGHTS_GIB + ASR_ACTIVATIONS_GIB) * GIB)

    def finish(self) -> None:
        grown = max(0.0, self.ledger.allocated_by_others(self.owner) - self._others_at_start)
        self.kv = self.requested - self.ledger.used_by(self.owner) - grown
        if self.kv <= 0:
            raise StandInCrashed("ValueError: No available memory for the cache blocks. Try increasing "
                                 "`gpu_memory_utilization` when initializing the engine.")
        self._allocate(self.kv)

    def _allocate(self, size: float) -> None:
        try:
            self.ledger.allocate(self.owner, size)
        except Exception as err:  # OutOfMemory
            raise StandInCrashed(str(err)) from None


class _AsrApp:
    def __init__(self, model_dir: Path | None, served_names: list[str], env: dict):
        self.served_names = list(served_names)
        self.served_model_name = served_names[0]  # the one vLLM reports in answers and logs
        self.dtype, self.dtype_warnings = ASR_MODEL_DTYPE, []
        self.keep_alive_seconds = VLLM_KEEP_ALIVE_SECONDS
        self.max_upload_mb = float(env.get("VLLM_MAX_AUDIO_CLIP_FILESIZE_MB") or 25)
        self.api_key = env.get("VLLM_API_KEY") or None
        self.created = int(time.time())
        self.stand_in: StandIn | None = None
        self.max_num_seqs = VLLM_MAX_NUM_SEQS
        self.in_flight = 0  # transcriptions being answered now: what /metrics reports
        self.in_flight_lock = threading.Lock()
        if model_dir is not None and not (Path(model_dir) / "config.json").is_file():
            raise StandInCrashed(
                f"OSError: {self.served_model_name} does not appear to have a file named config.json "
                f"(model directory {model_dir}); the model was not downloaded completely: seed it again")

    memory: "_AsrMemory | None" = None

    def begin_start(self) -> None:
        if self.memory is not None:
            self.memory.begin()

    def finish_start(self) -> None:
        if self.memory is not None:
            self.memory.finish()
            self.stand_in.log(f"INFO Available KV cache memory: {self.memory.kv / GIB:.2f} GiB")

    def release(self) -> None:
        if self.memory is not None:
            self.memory.ledger.release(self.memory.owner)

    def boot_lines(self) -> list[str]:
        return ([f"INFO vLLM API server version {VLLM_VERSION}",
                 f"INFO non-default args: {{'model': {self.served_model_name!r}}}"] + self.dtype_warnings
                + [f"INFO Loading model weights (dtype {self.dtype})..."])

    def ready_lines(self) -> list[str]:
        return [f"INFO Starting vLLM API server 0 on http://0.0.0.0:{self.stand_in.port}",
                "INFO:     Application startup complete."]

    def handle(self, req: _Request) -> _Response:
        if bearer_refused(req, self.api_key):
            return _json(401, {"error": "Unauthorized"})
        routes = {("GET", "/health"): lambda: _Response(200),
                  ("GET", "/v1/models"): self._models,
                  ("GET", "/version"): lambda: _json(200, {"version": VLLM_VERSION}),
                  ("GET", "/metrics"): self._metrics,
                  ("POST", "/v1/audio/transcriptions"): lambda: self._counted(self._transcribe, req)}
        route = routes.get((req.method, req.path))
        if route is not None:
            return route()
        if any(path == req.path for _, path in routes):
            return _json(405, {"detail": "Method Not Allowed"})
        return _json(404, {"detail": "Not Found"})

    def _counted(self, work: Callable[[_Request], _Response], req: _Request) -> _Response:
        with self.in_flight_lock:
            self.in_flight += 1
        try:
            return work(req)
        finally:
            with self.in_flight_lock:
                self.in_flight -= 1

    def _metrics(self) -> _Response:
        """vLLM's scheduler gauges (vllm/v1/metrics/loggers.py PrometheusStatLogger), in Prometheus
        text format, labelled model_name as vLLM labels them; the stand-in schedules every request
        at once up to --max-num-seqs, so only requests beyond that wait."""
        with self.in_flight_lock:
            in_flight = self.in_flight
        running, waiting = min(in_flight, self.max_num_seqs), max(0, in_flight - self.max_num_seqs)
        name = self.served_model_name.replace("\\", "\\\\").replace('"', '\\"')
        label = '{engine="0",model_name="%s"}' % name  # V1 labels each engine's gauges
        lines = ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
                 "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{label} {float(running)}",
                 "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                 "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{label} {float(waiting)}"]
        return _Response(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _models(self) -> _Response:
        return _json(200, {"object": "list", "data": [{
            "id": name, "object": "model", "created": self.created, "owned_by": "vllm",
            "root": self.served_model_name, "parent": None, "max_model_len": 65536, "permission": []}
            for name in self.served_names]})

    def _transcribe(self, req: _Request) -> _Response:
        try:
            fields = parse_multipart(req.body, req.headers.get("Content-Type", ""))
        except ValueError:
            fields = {}  # FastAPI reads an unparsable form as empty: the missing file is what it reports
        if "file" not in fields or fields["file"][0] is None:
            return _vllm_error(400, "1 validation error for TranscriptionRequest\nfile\n  Field required "
                                    "[type=missing, input_value={}, input_type=dict]")
        text_field = {name: value.decode("utf-8", "replace") for name, (filename, value) in fields.items()
                      if filename is None}
        model = text_field.get("model") or self.served_model_name
        if model not in self.served_names:
            return _vllm_error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        response_format = text_field.get("response_format") or "json"
        if response_format not in ASR_RESPONSE_FORMATS:
            return _vllm_error(400, "Currently only support response_format `text`, `json` or `verbose_json`",
                               param="response_format")
        try:
            float(text_field.get("temperature") or 0.0)
        except ValueError:
            return _vllm_error(400, f"temperature: Input should be a valid number, unable to parse string as a "
                                    f"number (got {text_field['temperature']!r})", param="temperature")
        language = text_field.get("language") or None
        if language is not None and language not in ASR_LANGUAGES:
            return _vllm_error(400, f"Unsupported language: {language!r}.  Language should be one of: "
                                    f"{list(ASR_LANGUAGES)}", param="language")
        audio = fields["file"][1]
        size_mb = len(audio) / 1024 ** 2
        if size_mb > self.max_upload_mb:
            return _vllm_error(400, "Maximum file size exceeded", param="audio_filesize_mb")
        try:
            payload, duration = _decode(audio)
        except SpeechDecodeError as err:
            return _vllm_error(400, f"Invalid or unsupported audio file: {err}", param="file")
        if language is not None:
            # qwen-asr pre-fills the prompt with `language X<asr_text>`, so the model's output is
            # the transcript alone.
            text = payload["text"]
        else:
            text = f"language {payload['language']}<asr_text>{payload['text']}"
        if response_format == "text":
            return _Response(200, text.encode(), "text/plain; charset=utf-8")
        if response_format == "verbose_json":
            return _json(200, {"task": "transcribe", "language": (ASR_LANGUAGES.get(language or "") or
                                                                  payload["language"]).lower(),
                               "duration": duration, "text": text,
                               "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text}]})
        return _json(200, {"text": text, "usage": {"type": "duration", "seconds": math.ceil(duration)}})


# ---------------------------------------------------------------------------------------------
# TTS: groxaxo/Qwen3-TTS-Openai-Fastapi


def _detail(status: int, error: str, message: str, err_type: str = "invalid_request_error") -> _Response:
    return _json(status, {"detail": {"error": error, "message": message, "type": err_type}})


def _field_error(kind: str, field: str, msg: str, value: Any, ctx: dict | None = None) -> dict:
    error = {"type": kind, "loc": ["body", field], "msg": msg, "input": value}
    if ctx:
        error["ctx"] = ctx
    return error


class _TtsApp:
    def __init__(self, model_dir: Path | None, load_seconds: float, env: dict):
        backend = env.get("TTS_BACKEND") or "official"
        if backend not in TTS_BACKENDS:
            raise StandInCrashed(f"ValueError: Unknown TTS backend: {backend!r}. Supported: official, vllm_omni, "
                                 f"pytorch, openvino")
        self.backend_name = backend
        self.model_id = env.get("TTS_MODEL_NAME") or env.get("TTS_MODEL_ID") or TTS_DEFAULT_MODEL
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.gpu = (env.get("NVIDIA_VISIBLE_DEVICES") or "").lower() not in ("", "void", "none")
        self.load_seconds = load_seconds
        self.started = time.monotonic()
        self.loaded = False
        self.load_lock = threading.Lock()
        # uvicorn's one event loop: the official backend's generate_speech is `async def` but calls
        # the model synchronously, so while it synthesises no other request (not even /health) is
        # answered (api/backends/official_qwen3_tts.py). Connections are still accepted.
        self.event_loop = threading.Lock()
        self.keep_alive_seconds = UVICORN_KEEP_ALIVE_SECONDS
        self.stand_in: StandIn | None = None

    memory = None
    owner = ""

    def begin_start(self) -> None:
        """The lifespan hook loads the model onto the GPU before the server listens: memory grows
        while the weights stream in, half at once and the rest halfway through the load."""
        if self.memory is None or not self.gpu:
            return
        half = TTS_LOAD_GIB * GIB / 2
        try:
            self.memory.allocate(self.owner, half)
        except Exception as err:  # OutOfMemory: the load fails, the server exits
            raise StandInCrashed(str(err)) from None

        def rest() -> None:
            if self.stand_in._stopping.wait(self.load_seconds / 2):
                return
            try:
                self.memory.allocate(self.owner, half)
            except Exception as err:
                self.stand_in.log(str(err))
                self.stand_in.exit_message = str(err)
                self.release()
        threading.Thread(target=rest, name="tts-load", daemon=True).start()

    def finish_start(self) -> None:
        pass

    def release(self) -> None:
        if self.memory is not None:
            self.memory.release(self.owner)

    def boot_lines(self) -> list[str]:
        return ["INFO:     Started server process", "INFO:     Waiting for application startup.",
                f"INFO:     Loading TTS backend {self.backend_name} with model {self.model_id}"]

    def ready_lines(self) -> list[str]:
        missing = self.missing_model_files()
        # A failed load does not stop the server: the lifespan hook logs it and serves anyway,
        # /health says `initializing` and the first request tries again (api/main.py `lifespan`).
        failed = [f"WARNING:  Backend initialization delayed: {self.model_dir} has no {', '.join(missing)}",
                  "INFO:     Backend will be loaded on first request."] if missing else []
        return failed + ["INFO:     Application startup complete.",
                         f"INFO:     Uvicorn running on http://0.0.0.0:{self.stand_in.port} (Press CTRL+C to quit)"]

    def synthesise(self, text: str) -> None:
        """Hold the event loop for as long as the model works on `text` (the sandbox's time scale)."""
        # Not _stopping: after SIGTERM the synthesis in flight runs to its end (terminate()).
        self.stand_in._abandoned.wait(self.stand_in.scaled(tts_synthesis_seconds(text)))

    def missing_model_files(self) -> list[str]:
        if self.model_dir is None:
            return []
        return [name for name in TTS_MODEL_FILES if not (self.model_dir / name).is_file()]

    def is_ready(self) -> bool:
        """Loaded once load_seconds have passed and the model files are there (re-checked until then)."""
        with self.load_lock:
            if self.loaded:
                return True
            if time.monotonic() - self.started < self.load_seconds or self.missing_model_files():
                return False
            self.loaded = True
        self.stand_in.log(f"INFO:     Model {self.model_id} loaded ({'cuda:0' if self.gpu else 'cpu'})")
        return True

    def ensure_loaded(self) -> None:
        """What the first request does upstream: wait for the load; raise when it cannot load."""
        for _ in range(100):  # bounded: Event.wait may wake a hair early
            remaining = self.load_seconds - (time.monotonic() - self.started)
            if remaining <= 0 or self.stand_in._stopping.wait(remaining + 0.01):
                break
        if not self.is_ready():
            missing = self.missing_model_files()
            raise RuntimeError(f"Failed to load model {self.model_id}: {self.model_dir} has no "
                               f"{', '.join(missing) if missing else 'model (load not finished)'}")

    api_key: str | None = None

    def handle(self, req: _Request) -> _Response:
        if bearer_refused(req, self.api_key):
            return _json(401, {"error": "Unauthorized"})
        with self.event_loop:
            return self._route(req)

    def _route(self, req: _Request) -> _Response:
        path = req.path
        if path == "/health" and req.method == "GET":
            return self._health()
        if path == "/v1/audio/speech" and req.method == "POST":
            return self._speech(req)
        if path == "/v1/models" and req.method == "GET":
            return _json(200, {"object": "list", "data": [self._model_info(m) for m in TTS_MODELS]})
        if path.startswith("/v1/models/") and req.method == "GET":
            model_id = path[len("/v1/models/"):]
            if model_id in TTS_MODELS:
                return _json(200, self._model_info(model_id))
            return _detail(404, "model_not_found", f"Model '{model_id}' not found")
        if path in ("/v1/voices", "/v1/audio/voices") and req.method == "GET":
            return self._voices()
        if path == "/" and req.method == "GET":
            return _Response(200, b"<html><body>Qwen3-TTS (sandbox stand-in)</body></html>", "text/html")
        if path in ("/health", "/v1/audio/speech", "/v1/models", "/v1/voices", "/v1/audio/voices", "/"):
            return _json(405, {"detail": "Method Not Allowed"})
        return _json(404, {"detail": "Not Found"})

    def _health(self) -> _Response:
        ready = self.is_ready()
        device = {"type": "cuda" if self.gpu else "cpu", "gpu_available": self.gpu,
                  "gpu_name": "Tesla T4" if self.gpu else None,
                  "vram_total": "15.56 GB" if self.gpu else None,
                  "vram_used": ("4.21 GB" if ready else "0.00 GB") if self.gpu else None}
        return _json(200, {"status": "healthy" if ready else "initializing",
                           "backend": {"name": self.backend_name, "model_id": self.model_id, "ready": ready},
                           "device": device, "version": "0.1.0"})

    @staticmethod
    def _model_info(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": 1737734400, "owned_by": "qwen"}

    def _voices(self) -> _Response:
        aliases = [{"id": alias, "name": alias.capitalize(), "language": None,
                    "description": f"OpenAI-compatible voice (maps to {speaker})"}
                   for alias, speaker in OPENAI_VOICES.items()]
        languages = list(TTS_LANGUAGES.values())
        try:
            self.ensure_loaded()
        except RuntimeError:
            defaults = [{"id": v, "name": v, "language": "English", "description": "Default voice"}
                        for v in ("Vivian", "Ryan", "Sophia", "Isabella", "Evan", "Lily")]
            return _json(200, {"voices": defaults + aliases, "languages": languages})
        speakers = [{"id": v, "name": v, "language": "Auto", "description": f"Qwen3-TTS voice: {v}"}
                    for v in TTS_SPEAKERS]
        return _json(200, {"voices": speakers + aliases, "languages": languages})

    def _validate(self, body: bytes) -> tuple[dict | None, _Response | None]:
        """The request as FastAPI/pydantic would accept it, or the 422 it would answer."""
        try:
            data = json.loads(body or b"")
        except ValueError as err:
            return None, _json(422, {"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                                 "input": {}, "ctx": {"error": str(err)}}]})
        if not isinstance(data, dict):
            return None, _json(422, {"detail": [{"type": "model_attributes_type", "loc": ["body"],
                                                 "msg": "Input should be a valid dictionary or object to extract "
                                                        "fields from", "input": data}]})
        request = {"model": "qwen3-tts", "voice": "Vivian", "response_format": "mp3", "speed": 1.0,
                   "stream": False, "language": "Auto", "instruct": None}
        request.update(data)
        errors = []
        if "input" not in data:
            errors.append(_field_error("missing", "input", "Field required", data))
        for name in ("input", "model", "voice"):
            if name in request and not isinstance(request[name], str):
                errors.append(_field_error("string_type", name, "Input should be a valid string", request[name]))
        if isinstance(request.get("input"), str) and len(request["input"]) > TTS_MAX_INPUT:
            errors.append(_field_error("string_too_long", "input",
                                       f"String should have at most {TTS_MAX_INPUT} characters",
                                       request["input"], {"max_length": TTS_MAX_INPUT}))
        if request["response_format"] not in TTS_FORMATS:
            expected = "'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'"
            errors.append(_field_error("literal_error", "response_format", f"Input should be {expected}",
                                       request["response_format"], {"expected": expected}))
        speed = request["speed"]
        if isinstance(speed, str):
            try:
                speed = float(speed)
            except ValueError:
                pass
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or math.isnan(speed):
            errors.append(_field_error("float_parsing", "speed", "Input should be a valid number, unable to parse "
                                       "string as a number", request["speed"]))
        elif speed < 0.25:
            errors.append(_field_error("greater_than_equal", "speed", "Input should be greater than or equal to 0.25",
                                       request["speed"], {"ge": 0.25}))
        elif speed > 4.0:
            errors.append(_field_error("less_than_equal", "speed", "Input should be less than or equal to 4",
                                       request["speed"], {"le": 4.0}))
        else:
            request["speed"] = float(speed)
        if request["language"] is not None and not isinstance(request["language"], str):
            errors.append(_field_error("string_type", "language", "Input should be a valid string",
                                       request["language"]))
        if errors:
            return None, _json(422, {"detail": errors})
        return request, None

    def _speech(self, req: _Request) -> _Response:
        request, invalid = self._validate(req.body)
        if invalid is not None:
            return invalid
        model = request["model"]
        if model not in TTS_MODELS:
            return _detail(400, "invalid_model", f"Unsupported model: {model}. Supported: {list(TTS_MODELS)}")
        text = request["input"].strip()
        if not text:
            return _detail(400, "invalid_input", "Input text is empty after normalization")
        suffix = model.rsplit("-", 1)[-1]
        language = TTS_LANGUAGES[suffix] if suffix in TTS_LANGUAGES else (request["language"] or "Auto")
        try:
            self.ensure_loaded()
            voice = self._speaker(request["voice"])
            language = self._language(language, text)
        except (RuntimeError, ValueError) as err:
            return _detail(500, "processing_error", str(err), "server_error")
        self.synthesise(text)
        wav = encode_speech(text, language, voice, request["speed"])
        fmt = request["response_format"]
        if fmt == "wav":
            audio = wav
        elif fmt == "pcm":
            audio = _pcm(wav)
        else:
            audio = STUB_MAGIC + fmt.encode() + b"\n" + wav
        return _Response(200, audio, TTS_FORMATS[fmt], {"Content-Disposition": f"attachment; filename=speech.{fmt}",
                                                         "Cache-Control": "no-cache"})

    @staticmethod
    def _speaker(voice: str) -> str:
        speaker = OPENAI_VOICES.get(voice.lower(), voice)
        by_lower = {s.lower(): s for s in TTS_SPEAKERS}
        if speaker.lower() not in by_lower:
            raise ValueError(f"Speech generation failed: Unsupported speakers: [{speaker!r}]. "
                             f"Supported: {sorted(by_lower)}")
        return by_lower[speaker.lower()]

    @staticmethod
    def _language(language: str, text: str) -> str:
        by_lower = {name.lower(): name for name in TTS_LANGUAGES.values()}
        if language.lower() == "auto":
            return detect_language(text)
        if language.lower() not in by_lower:
            raise ValueError(f"Speech generation failed: Unsupported languages: [{language!r}]. "
                             f"Supported: {sorted(by_lower) + ['auto']}")
        return by_lower[language.lower()]
