"""The ASR and TTS stand-ins answer like the real servers, over real HTTP on loopback."""

from __future__ import annotations

import http.client
import io
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import wave

import pytest

from qwen_speech.roundtrip import encode_multipart
from sandbox.speech import (
    SAMPLE_RATE, SpeechDecodeError, StandInCrashed, _decode, decode_speech, encode_speech, parse_multipart, start_stand_in,
)

ASR_MODEL = "/models/Qwen3-ASR-1.7B"


def call(stand_in, method, path, body=None, headers=None):
    """(status, headers, body) of one request; error statuses are answers, not exceptions."""
    req = urllib.request.Request(stand_in.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def speech(tts, **request):
    body = json.dumps({"input": "你好", **request}).encode()
    return call(tts, "POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})


def transcription(asr, audio, filename="speech.wav", **fields):
    fields.setdefault("model", ASR_MODEL)
    files = {"file": (filename, audio, "audio/wav")} if audio is not None else {}
    body, content_type = encode_multipart(fields, files)
    return call(asr, "POST", "/v1/audio/transcriptions", body, {"Content-Type": content_type})


def model_dir_with(tmp_path, *names):
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    return tmp_path


@pytest.fixture()
def tts():
    stand_in = start_stand_in("tts", time_scale=0.01)
    yield stand_in
    stand_in.stop()


@pytest.fixture()
def asr():
    stand_in = start_stand_in("asr", served_model_name=ASR_MODEL)
    yield stand_in
    stand_in.stop()


def silent_wav(seconds=0.5, rate=SAMPLE_RATE, channels=1):
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * channels * int(rate * seconds)))
    return out.getvalue()


def noise_wav():
    samples = [(i * 7919) % 20000 - 10000 for i in range(SAMPLE_RATE // 2)]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return out.getvalue()


# --- the audio encoding ------------------------------------------------------------------------


@pytest.mark.parametrize("text, language", [("你好，这是语音合成测试。", "Chinese"),
                                            ("Hello, this is a TTS test.", "English"),
                                            ("emoji 🎤 and\r\nnewlines\x00", "English")])
def test_speech_encoding_decodes_back_to_the_same_text_and_language(text, language):
    assert decode_speech(encode_speech(text, language, "Vivian")) == (text, language)


def test_encoded_speech_is_a_24khz_mono_16bit_wav_that_grows_with_the_text():
    short, long = encode_speech("你好", "Chinese", "Vivian"), encode_speech("你好" * 40, "Chinese", "Vivian")
    with wave.open(io.BytesIO(short)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        short_frames = w.getnframes()
    with wave.open(io.BytesIO(long)) as w:
        assert w.getnframes() > 10 * short_frames


def test_faster_speech_is_shorter():
    assert len(encode_speech("你好" * 40, "Chinese", "Vivian", 2.0)) < len(encode_speech("你好" * 40, "Chinese", "Vivian"))


def test_altered_speech_fails_to_decode():
    audio = bytearray(encode_speech("Hello there", "English", "Ryan"))
    audio[44 + 2 * (2400 + 120 * 20) + 10 : 44 + 2 * (2400 + 120 * 21)] = bytes(2 * 120 - 10)
    with pytest.raises(SpeechDecodeError):
        decode_speech(bytes(audio))


@pytest.mark.parametrize("audio", [b"", b"ID3\x04 not audio", noise_wav(), silent_wav(channels=2)])
def test_audio_the_tts_did_not_make_fails_to_decode(audio):
    with pytest.raises(SpeechDecodeError):
        decode_speech(audio)


def test_silence_decodes_to_no_speech():
    assert decode_speech(silent_wav()) == ("", "None")


def test_multipart_parser_reads_back_binary_content_with_line_breaks():
    content = b"\r\n--\r\n\x00\xff" * 50
    body, content_type = encode_multipart({"model": "/models/x"}, {"file": ("a.wav", content, "audio/wav")})
    assert parse_multipart(body, content_type) == {"model": (None, b"/models/x"), "file": ("a.wav", content)}


# --- TTS stand-in -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tts", "asr"])
def test_both_servers_refuse_connections_while_the_model_loads(kind):
    # vLLM listens once the engine is up; uvicorn once the TTS server's lifespan hook has loaded the model.
    stand_in = start_stand_in(kind, load_seconds=600, env={"TTS_MODEL_NAME": "/models/Qwen3-TTS"})
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", stand_in.port), timeout=5).close()
    finally:
        stand_in.stop()


def test_tts_health_answers_200_initializing_after_a_failed_load(tmp_path):
    tts = start_stand_in("tts", model_dir=tmp_path, env={"TTS_MODEL_NAME": "/models/Qwen3-TTS"})
    try:
        status, _, body = call(tts, "GET", "/health")
    finally:
        tts.stop()
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "initializing"
    assert health["backend"] == {"name": "official", "model_id": "/models/Qwen3-TTS", "ready": False}
    assert health["version"] == "0.1.0"
    assert any("Backend initialization delayed" in line for line in tts.log_lines)


def test_tts_health_turns_healthy_once_the_model_files_are_there(tmp_path):
    tts = start_stand_in("tts", model_dir=tmp_path, time_scale=0.01)
    try:
        before = json.loads(call(tts, "GET", "/health")[2])
        model_dir_with(tmp_path, "config.json", "generation_config.json", "speech_tokenizer/config.json")
        after = json.loads(call(tts, "GET", "/health")[2])
    finally:
        tts.stop()
    assert (before["status"], before["backend"]["ready"]) == ("initializing", False)
    assert (after["status"], after["backend"]["ready"]) == ("healthy", True)


def test_tts_speech_without_model_files_answers_500_processing_error(tmp_path):
    model_dir_with(tmp_path, "config.json", "generation_config.json")
    tts = start_stand_in("tts", model_dir=tmp_path, time_scale=0.01)
    try:
        status, _, body = speech(tts, model="tts-1")
    finally:
        tts.stop()
    assert status == 500
    detail = json.loads(body)["detail"]
    assert detail["error"] == "processing_error"
    assert "speech_tokenizer/config.json" in detail["message"]


def test_tts_speaks_wav_that_carries_text_and_language(tts):
    status, headers, body = speech(tts, model="tts-1", input="你好，这是语音合成测试。", voice="Vivian",
                                   response_format="wav")
    assert status == 200
    assert headers["Content-Type"] == "audio/wav"
    assert headers["Content-Disposition"] == "attachment; filename=speech.wav"
    assert decode_speech(body) == ("你好，这是语音合成测试。", "Chinese")


def test_tts_model_language_suffix_overrides_the_language_field(tts):
    _, _, body = speech(tts, model="tts-1-hd-en", input="你好", language="Chinese", response_format="wav")
    assert decode_speech(body) == ("你好", "English")


@pytest.mark.parametrize("fmt, content_type", [("mp3", "audio/mpeg"), ("opus", "audio/opus"), ("aac", "audio/aac"),
                                               ("flac", "audio/flac"), ("pcm", "audio/pcm")])
def test_tts_answers_each_format_with_its_content_type(tts, fmt, content_type):
    status, headers, _ = speech(tts, response_format=fmt)
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert headers["Content-Disposition"] == f"attachment; filename=speech.{fmt}"


def test_tts_defaults_to_mp3(tts):
    assert speech(tts)[1]["Content-Type"] == "audio/mpeg"


def test_tts_pcm_is_the_wav_samples_without_header(tts):
    wav = speech(tts, response_format="wav")[2]
    pcm = speech(tts, response_format="pcm")[2]
    with wave.open(io.BytesIO(wav)) as w:
        assert pcm == w.readframes(w.getnframes())


@pytest.mark.parametrize("model", ["Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", "/models/Qwen3-TTS", "tts-2", "tts-1-xx"])
def test_tts_rejects_unknown_model_names_with_400_invalid_model(tts, model):
    status, _, body = speech(tts, model=model)
    assert status == 400
    assert json.loads(body)["detail"]["error"] == "invalid_model"


@pytest.mark.parametrize("model", ["qwen3-tts", "tts-1", "tts-1-hd", "tts-1-zh", "tts-1-hd-it"])
def test_tts_accepts_the_documented_model_names(tts, model):
    assert speech(tts, model=model)[0] == 200


@pytest.mark.parametrize("voice, speaker", [("vivian", "Vivian"), ("UNCLE_FU", "Uncle_Fu"), ("alloy", "Vivian"),
                                            ("echo", "Ryan")])
def test_tts_accepts_speakers_case_insensitively_and_two_openai_aliases(tts, voice, speaker):
    status, _, body = speech(tts, voice=voice, response_format="wav")
    assert status == 200
    assert _decode(body)[0]["voice"] == speaker


@pytest.mark.parametrize("voice", ["fable", "nova", "onyx", "shimmer", "Bob"])
def test_tts_answers_500_unsupported_speakers_for_other_voices(tts, voice):
    status, _, body = speech(tts, voice=voice)
    assert status == 500
    detail = json.loads(body)["detail"]
    assert detail["error"] == "processing_error"
    assert "Unsupported speakers" in detail["message"]


@pytest.mark.parametrize("speed, kind", [(0.1, "greater_than_equal"), (4.5, "less_than_equal"),
                                         ("fast", "float_parsing")])
def test_tts_rejects_speed_out_of_range_with_422(tts, speed, kind):
    status, _, body = speech(tts, speed=speed)
    assert status == 422
    assert [(e["type"], e["loc"]) for e in json.loads(body)["detail"]] == [(kind, ["body", "speed"])]


@pytest.mark.parametrize("speed", [0.25, 4.0, 1])
def test_tts_accepts_speed_at_the_range_ends(tts, speed):
    assert speech(tts, speed=speed)[0] == 200


def test_tts_rejects_unknown_format_with_422(tts):
    status, _, body = speech(tts, response_format="ogg")
    assert status == 422
    assert json.loads(body)["detail"][0]["type"] == "literal_error"


def test_tts_rejects_blank_input_with_400_and_missing_or_long_input_with_422(tts):
    blank = speech(tts, input="   ")
    missing = call(tts, "POST", "/v1/audio/speech", b'{"model": "tts-1"}', {"Content-Type": "application/json"})
    long = speech(tts, input="x" * 4097)
    assert (blank[0], json.loads(blank[2])["detail"]["error"]) == (400, "invalid_input")
    assert (missing[0], json.loads(missing[2])["detail"][0]["type"]) == (422, "missing")
    assert (long[0], json.loads(long[2])["detail"][0]["type"]) == (422, "string_too_long")


def test_tts_lists_models_and_the_nine_voices(tts):
    models = json.loads(call(tts, "GET", "/v1/models")[2])
    voices = json.loads(call(tts, "GET", "/v1/voices")[2])
    assert {"tts-1", "tts-1-en", "tts-1-hd-zh", "qwen3-tts"} <= {m["id"] for m in models["data"]}
    assert len(models["data"]) == 23
    assert {"Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden", "Ono_Anna", "Sohee"} <= {
        v["id"] for v in voices["voices"]}


def test_tts_with_an_unknown_backend_crashes_at_start():
    with pytest.raises(StandInCrashed, match="Unknown TTS backend"):
        start_stand_in("tts", env={"TTS_BACKEND": "onnx"})


# --- ASR stand-in -------------------------------------------------------------------------------


def test_asr_health_is_200_with_an_empty_body_and_models_list_the_served_name(asr):
    status, _, body = call(asr, "GET", "/health")
    assert (status, body) == (200, b"")
    models = json.loads(call(asr, "GET", "/v1/models")[2])
    assert [m["id"] for m in models["data"]] == [ASR_MODEL]


def test_asr_with_a_model_dir_without_config_json_crashes_at_start(tmp_path):
    with pytest.raises(StandInCrashed, match="config.json"):
        start_stand_in("asr", model_dir=tmp_path, served_model_name=ASR_MODEL)


def test_asr_with_a_complete_model_dir_serves(tmp_path):
    asr = start_stand_in("asr", model_dir=model_dir_with(tmp_path, "config.json"), served_model_name=ASR_MODEL)
    try:
        assert call(asr, "GET", "/health")[0] == 200
    finally:
        asr.stop()


def test_asr_transcript_carries_the_language_prefix(asr):
    status, _, body = transcription(asr, encode_speech("你好，世界", "Chinese", "Vivian"))
    assert status == 200
    answer = json.loads(body)
    assert answer["text"] == "language Chinese<asr_text>你好，世界"
    assert answer["usage"]["type"] == "duration" and answer["usage"]["seconds"] >= 1


def test_asr_with_a_forced_language_answers_the_transcript_alone(asr):
    status, _, body = transcription(asr, encode_speech("Hello", "English", "Ryan"), language="en")
    assert (status, json.loads(body)["text"]) == (200, "Hello")


def test_asr_answers_plain_text_for_response_format_text(asr):
    status, headers, body = transcription(asr, encode_speech("Hello", "English", "Ryan"), response_format="text")
    assert (status, body.decode()) == (200, "language English<asr_text>Hello")
    assert headers["Content-Type"].startswith("text/plain")


def test_asr_reports_no_speech_for_silence(asr):
    assert json.loads(transcription(asr, silent_wav())[2])["text"] == "language None<asr_text>"


def test_asr_decodes_the_tts_mp3_stub(tts, asr):
    mp3 = speech(tts, input="Hello there", model="tts-1-en")[2]
    assert json.loads(transcription(asr, mp3, filename="speech.mp3")[2])["text"] == "language English<asr_text>Hello there"


def test_asr_rejects_a_wrong_model_name_with_404_like_vllm(asr):
    status, _, body = transcription(asr, encode_speech("Hello", "English", "Ryan"), model="Qwen/Qwen3-ASR-1.7B")
    assert status == 404
    assert json.loads(body)["error"] == {"message": "The model `Qwen/Qwen3-ASR-1.7B` does not exist.",
                                         "type": "NotFoundError", "param": "model", "code": 404}


@pytest.mark.parametrize("audio", [b"ID3\x04 not audio", noise_wav()])
def test_asr_rejects_audio_it_cannot_decode_with_400(asr, audio):
    status, _, body = transcription(asr, audio)
    assert status == 400
    assert json.loads(body)["error"]["type"] == "BadRequestError"


def test_asr_rejects_a_request_without_file_with_400(asr):
    status, _, body = transcription(asr, None)
    assert status == 400
    assert "file" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("fields", [{"response_format": "srt"}, {"language": "klingon"}, {"temperature": "hot"}])
def test_asr_rejects_unsupported_options_with_400(asr, fields):
    assert transcription(asr, encode_speech("Hello", "English", "Ryan"), **fields)[0] == 400


def test_asr_rejects_uploads_over_its_size_limit():
    asr = start_stand_in("asr", served_model_name=ASR_MODEL, env={"VLLM_MAX_AUDIO_CLIP_FILESIZE_MB": "0.01"})
    try:
        status, _, body = transcription(asr, encode_speech("Hello, this is long enough" * 3, "English", "Ryan"))
    finally:
        asr.stop()
    assert (status, json.loads(body)["error"]["message"]) == (400, "Maximum file size exceeded")


def test_stopped_stand_in_no_longer_answers():
    asr = start_stand_in("asr", served_model_name=ASR_MODEL)
    assert call(asr, "GET", "/health")[0] == 200
    asr.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", asr.port), timeout=5).close()


def test_stand_in_logs_requests_like_uvicorn(tmp_path):
    log = tmp_path / "tts.log"
    tts = start_stand_in("tts", log_path=log)
    try:
        call(tts, "GET", "/health")
    finally:
        tts.stop()
    assert '"GET /health HTTP/1.1" 200 OK' in log.read_text()


# --- what the servers' settings do to connections and time ------------------------------------


def test_asr_refuses_bfloat16_on_a_t4_as_vllm_does():
    with pytest.raises(StandInCrashed, match="Bfloat16 needs compute capability 8.0.*--dtype=half"):
        start_stand_in("asr", args=[ASR_MODEL, "--dtype", "bfloat16"], gpu=("Tesla T4", 7.5))


def test_asr_auto_dtype_falls_back_to_half_on_a_t4_with_a_warning_and_half_runs_silently():
    auto = start_stand_in("asr", args=[ASR_MODEL], gpu=("Tesla T4", 7.5))
    half = start_stand_in("asr", args=[ASR_MODEL, "--dtype", "half"], gpu=("Tesla T4", 7.5))
    try:
        assert any("falling back to torch.float16" in line for line in auto.log_lines)
        assert not any("falling back" in line for line in half.log_lines)
        assert any("dtype float16" in line for line in half.log_lines)
    finally:
        auto.stop()
        half.stop()


def test_asr_serves_every_served_model_name_alias_and_nothing_else():
    asr = start_stand_in("asr", args=[ASR_MODEL, "--served-model-name", ASR_MODEL, "qwen3-asr", "--port", "8000"])
    try:
        models = json.loads(call(asr, "GET", "/v1/models")[2])
        assert [m["id"] for m in models["data"]] == [ASR_MODEL, "qwen3-asr"]
        audio = encode_speech("Hello", "English", "Ryan")
        assert transcription(asr, audio, model=ASR_MODEL)[0] == 200
        assert transcription(asr, audio, model="qwen3-asr")[0] == 200
        assert transcription(asr, audio, model="Qwen/Qwen3-ASR-1.7B")[0] == 404
    finally:
        asr.stop()


def idle_connection_closed_after(stand_in, seconds: float) -> bool:
    """Whether the server closed a kept-alive connection left idle for `seconds` after one request."""
    conn = http.client.HTTPConnection("127.0.0.1", stand_in.port, timeout=5)
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.sock.settimeout(seconds)
        try:
            return conn.sock.recv(1) == b""  # EOF: the server closed it
        except TimeoutError:
            return False
    finally:
        conn.close()


def test_both_servers_close_idle_connections_after_their_keep_alive():
    # time_scale 0.01: 5 s of keep-alive are 0.05 s here.
    asr_default = start_stand_in("asr", served_model_name=ASR_MODEL, time_scale=0.01)
    asr_long = start_stand_in("asr", served_model_name=ASR_MODEL, time_scale=0.01,
                              env={"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "1860"})
    tts_default = start_stand_in("tts", time_scale=0.01)
    tts_long = start_stand_in("tts", time_scale=0.01, args=["-m", "uvicorn", "api.main:app", "--timeout-keep-alive",
                                                            "1860"])
    try:
        assert idle_connection_closed_after(asr_default, 0.3)
        assert idle_connection_closed_after(tts_default, 0.3)
        assert not idle_connection_closed_after(asr_long, 0.3)
        assert not idle_connection_closed_after(tts_long, 0.3)
    finally:
        for stand_in in (asr_default, asr_long, tts_default, tts_long):
            stand_in.stop()


def test_tts_answers_nothing_else_while_it_synthesises():
    tts = start_stand_in("tts", time_scale=0.01)
    text = "这是一段很长的文本。" * 15  # ~81 s of synthesis at RTF 2.16: ~0.8 s here
    try:
        worker = threading.Thread(target=lambda: speech(tts, input=text, model="tts-1"))
        worker.start()
        time.sleep(0.2)
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(tts.url + "/health", timeout=0.3).read()
        worker.join()
        assert call(tts, "GET", "/health")[0] == 200
    finally:
        tts.stop()
