"""The verify step's speech round trip: TTS speaks, ASR transcribes, the error rate is measured."""

from __future__ import annotations

import socket
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from qwen_speech.roundtrip import (
    DEFAULT_CASES, RoundTripError, UrlTransport, character_error_rate, encode_multipart, normalise_for_cer,
    round_trip, speak, strip_asr_prefix, transcribe,
)
from sandbox.speech import decode_speech, start_stand_in

ASR_MODEL = "/models/Qwen3-ASR-1.7B"


@pytest.fixture(scope="module")
def services():
    tts = start_stand_in("tts", time_scale=0.01)
    asr = start_stand_in("asr", served_model_name=ASR_MODEL)
    yield UrlTransport(tts.url), UrlTransport(asr.url)
    tts.stop()
    asr.stop()


def test_round_trip_of_the_guide_sentences_has_no_errors(services):
    tts, asr = services
    results = round_trip(tts, asr, asr_model=ASR_MODEL, max_cer=0.0)
    assert [(r.text, r.voice, r.model, r.transcript, r.cer, r.ok, r.language) for r in results] == [
        ("你好，这是语音合成测试。", "Vivian", "tts-1", "你好，这是语音合成测试。", 0.0, True, "Chinese"),
        ("Hello, this is a TTS test.", "Ryan", "tts-1-en", "Hello, this is a TTS test.", 0.0, True, "English"),
    ]
    assert all(r.tts_seconds >= 0 and r.asr_seconds >= 0 for r in results)


def test_round_trip_result_is_not_ok_when_the_error_rate_passes_the_threshold(services):
    tts, asr = services
    results = round_trip(tts, asr, asr_model=ASR_MODEL, max_cer=-0.5, cases=DEFAULT_CASES[:1])
    assert [r.ok for r in results] == [False]


def test_round_trip_with_the_wrong_asr_model_name_names_endpoint_status_and_fix(services):
    tts, asr = services
    with pytest.raises(RoundTripError) as caught:
        round_trip(tts, asr, asr_model="Qwen/Qwen3-ASR-1.7B", max_cer=0.1)
    err = caught.value
    assert err.status == 404
    assert "POST /v1/audio/transcriptions" in str(err) and asr.base_url in str(err)
    assert "The model `Qwen/Qwen3-ASR-1.7B` does not exist." in str(err)
    assert "served model name" in str(err)


def test_round_trip_when_the_tts_address_leads_to_the_asr_fails_clearly(services):
    _, asr = services
    with pytest.raises(RoundTripError, match=r"POST /v1/audio/speech .* answered 404.*TTS container"):
        round_trip(asr, asr, asr_model=ASR_MODEL, max_cer=0.1)


def test_round_trip_case_without_a_voice_is_refused_before_any_request(services):
    tts, asr = services
    with pytest.raises(ValueError, match="lacks voice"):
        round_trip(tts, asr, asr_model=ASR_MODEL, max_cer=0.1, cases=[{"text": "hi", "model": "tts-1"}])


def test_speak_returns_wav_audio(services):
    tts, _ = services
    audio, seconds = speak(tts, "Hello", "Aiden", "tts-1-en")
    assert decode_speech(audio) == ("Hello", "English")
    assert seconds >= 0


def test_speak_with_the_model_directory_as_model_explains_the_model_names(services):
    tts, _ = services
    with pytest.raises(RoundTripError, match=r"answered 400.*invalid_model.*use tts-1") as caught:
        speak(tts, "Hello", "Vivian", "/models/Qwen3-TTS-12Hz-1.7B-CustomVoice")
    assert caught.value.status == 400


def test_speak_with_an_unknown_voice_names_the_nine_speakers(services):
    tts, _ = services
    with pytest.raises(RoundTripError, match=r"answered 500.*Unsupported speakers.*Ono_Anna"):
        speak(tts, "Hello", "nova", "tts-1")


def test_transcribe_returns_the_raw_text_with_its_prefix(services):
    tts, asr = services
    audio, _ = speak(tts, "Hello", "Ryan", "tts-1-en")
    text, _ = transcribe(asr, audio, ASR_MODEL)
    assert text == "language English<asr_text>Hello"


def test_transcribe_of_non_audio_reports_the_servers_error(services):
    _, asr = services
    with pytest.raises(RoundTripError, match=r"answered 400.*Invalid or unsupported audio file"):
        transcribe(asr, b"not audio", ASR_MODEL)


def test_a_service_that_does_not_answer_is_reported_with_status_0():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with pytest.raises(RoundTripError, match="no answer") as caught:
            speak(UrlTransport(f"http://127.0.0.1:{port}"), "Hello", "Ryan", "tts-1", timeout=5)
    assert caught.value.status == 0


@pytest.mark.parametrize("raw, expected", [
    ("language English<asr_text>Hello, this is a TTS test.", ("English", "Hello, this is a TTS test.")),
    ("language Chinese<asr_text>你好", ("Chinese", "你好")),
    ("  language English <asr_text> spaced ", ("English", "spaced")),
    ("language None<asr_text>", ("", "")),
    ("plain transcript", ("", "plain transcript")),
    ("", ("", "")),
])
def test_strip_asr_prefix(raw, expected):
    assert strip_asr_prefix(raw) == expected


@pytest.mark.parametrize("reference, hypothesis", [
    ("你好，这是语音合成测试。", "你好这是语音合成测试"),
    ("Hello, this is a TTS test.", "hello this is a tts test"),
    ("ＡＢＣ！", "abc"),
])
def test_error_rate_ignores_case_whitespace_and_punctuation(reference, hypothesis):
    assert character_error_rate(reference, hypothesis) == 0.0


def test_error_rate_counts_one_wrong_character_of_ten():
    assert character_error_rate("你好，这是语音合成测试。", "你好，这是语音合成测验。") == pytest.approx(0.1)


@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("abcd", "abd", 0.25),      # deletion
    ("abcd", "abxcd", 0.25),    # insertion
    ("ab", "xyzw", 2.0),        # more errors than reference characters
    ("你好", "", 1.0),
    ("", "", 0.0),
    ("", "x", 1.0),
])
def test_error_rate_examples(reference, hypothesis, expected):
    assert character_error_rate(reference, hypothesis) == pytest.approx(expected)


def test_normalised_text_keeps_letters_and_digits_only():
    assert normalise_for_cer("Room 101 — “ok”, 好的！") == "room101ok好的"


def test_multipart_encoding_is_read_back_by_the_stdlib_mime_parser():
    audio = b"RIFF\r\n--\x00\xffdata" * 20
    body, content_type = encode_multipart({"model": ASR_MODEL, "language": "zh"},
                                          {"file": ("speech.wav", audio, "audio/wav")})
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = {part.get_param("name", header="content-disposition"):
             (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
             for part in message.iter_parts()}
    assert parts == {"model": (None, "text/plain", ASR_MODEL.encode()), "language": (None, "text/plain", b"zh"),
                     "file": ("speech.wav", "audio/wav", audio)}


class ScriptedTransport:
    """Answers a request with the next of `answers` ((status, body) or an exception), as a proxy would."""

    def __init__(self, *answers):
        self.answers, self.asked = list(answers), 0

    def request(self, method, path, body=None, headers=None, timeout=300.0):
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer[0], {}, answer[1]


NO_ENDPOINTS = (503, b'{"kind":"Status","code":503,"message":"no endpoints available for service \\"qwen3-asr-service\\""}')
API_500 = (500, b'{"kind":"Status","code":500,"message":"Internal error occurred"}')


def _retrying(inner, seconds):
    from kubeops.retry import RetryLog, RetryPolicy
    from qwen_speech.roundtrip import RetryingTransport

    return RetryingTransport(inner, RetryPolicy(budget_seconds=seconds, first_delay=0.01, max_delay=0.05),
                             RetryLog("transient answer"))


def test_a_retrying_transport_asks_again_while_the_answer_is_transient_and_says_so_once():
    inner = ScriptedTransport(NO_ENDPOINTS, API_500, RoundTripError("no answer", endpoint="GET /health"), (200, b"ok"))
    transport = _retrying(inner, seconds=30)
    assert transport.request("GET", "/health")[0] == 200
    summary = transport.log.take_summary()
    assert summary.startswith("3 transient answers retried over 0 s: ")
    assert "503 no endpoints available x1" in summary and "500 x1" in summary and "no answer x1" in summary


def test_a_services_own_error_is_a_real_answer_and_is_not_asked_again():
    inner = ScriptedTransport((500, b'{"detail":"model failed to load"}'), (200, b"ok"))
    assert _retrying(inner, seconds=30).request("GET", "/health")[0] == 500
    assert inner.asked == 1


def test_at_the_deadline_the_last_transient_answer_is_what_the_caller_gets():
    inner = ScriptedTransport(NO_ENDPOINTS)
    status, _, body = _retrying(inner, seconds=0.2).request("GET", "/health")
    assert status == 503 and b"no endpoints available" in body and inner.asked >= 2
