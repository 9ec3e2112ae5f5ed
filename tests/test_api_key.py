"""Issue 10 item 4, the API key: the ASR stand-in answers as vLLM with VLLM_API_KEY set, and the
playbook puts the key in a Secret from $QWEN3_SPEECH_API_KEY, into the pod only by secretKeyRef."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sandbox import speech
from tests.deploy_helpers import ROOT, assert_ok, deploy, output
from tests.manifest_helpers import all_manifests

KEY = "sk-test-not-a-real-key-4f1c"


def _get(port: int, path: str, key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_asr_stand_in_wants_the_bearer_key_on_v1_only():
    asr = speech.start_stand_in("asr", args=["Qwen/Qwen3-ASR-1.7B"], env={"VLLM_API_KEY": KEY})
    try:
        deadline = time.monotonic() + 5
        while _get(asr.port, "/health")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(asr.port, "/health")[0] == 200  # probes and the TTS start-order check need no key
        status, body = _get(asr.port, "/v1/models")
        assert (status, json.loads(body)) == (401, {"error": "Unauthorized"})
        assert _get(asr.port, "/v1/models", "wrong")[0] == 401
        assert _get(asr.port, "/v1/models", KEY)[0] == 200
    finally:
        asr.stop()


def test_tts_stand_in_behind_the_wrapper_wants_the_key_and_refuses_to_start_without_one():
    args = ["-m", "uvicorn", "--app-dir", "/opt/qwen3-speech", speech.TTS_KEY_APP]
    tts = speech.start_stand_in("tts", args=args, env={"QWEN3_SPEECH_API_KEY": KEY})
    try:
        deadline = time.monotonic() + 5
        while _get(tts.port, "/health")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(tts.port, "/health")[0] == 200
        assert _get(tts.port, "/v1/models")[0] == 401
        assert _get(tts.port, "/v1/models", KEY)[0] == 200
    finally:
        tts.stop()
    with pytest.raises(speech.StandInCrashed, match="QWEN3_SPEECH_API_KEY is empty"):
        speech.start_stand_in("tts", args=args, env={})


def test_the_wrapper_script_answers_401_before_the_upstream_app(tmp_path, monkeypatch):
    """files/tts_api_key.py itself, as an ASGI app in front of a stand-in `api.main`."""
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("")
    (tmp_path / "api" / "main.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n")
    code = (f"import asyncio, sys; sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT / 'files')!r}]\n"
            "from tts_api_key import app\n"
            "async def call(path, headers):\n"
            "    sent = []\n"
            "    async def send(m): sent.append(m)\n"
            "    await app({'type': 'http', 'path': path, 'method': 'GET', 'headers': headers}, None, send)\n"
            "    return sent[0]['status']\n"
            "print(asyncio.run(call('/v1/audio/speech', [])), asyncio.run(call('/health', [])),\n"
            f"      asyncio.run(call('/v1/audio/speech', [(b'authorization', b'Bearer {KEY}')])))\n")
    run = subprocess.run([sys.executable, "-c", code], env={"QWEN3_SPEECH_API_KEY": KEY}, capture_output=True, text=True)
    assert run.stdout.split() == ["401", "200", "200"], run.stderr
    run = subprocess.run([sys.executable, "-c", code], env={}, capture_output=True, text=True)
    assert run.returncode != 0 and "QWEN3_SPEECH_API_KEY is empty" in run.stderr


def test_asr_manifest_reads_the_key_from_the_secret():
    asr = next(m for m in all_manifests(api_key_secret="speech-api-key")
               if m["kind"] == "Deployment" and m["metadata"]["name"] == "qwen3-asr")
    env = {e["name"]: e for e in asr["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VLLM_API_KEY"] == {"name": "VLLM_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "speech-api-key", "key": "api-key"}}}
    tts = next(m for m in all_manifests(api_key_secret="speech-api-key")
               if m["kind"] == "Deployment" and m["metadata"]["name"] == "qwen3-tts")
    container = tts["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][3:6] == ["--app-dir", "/opt/qwen3-speech", speech.TTS_KEY_APP]
    assert {"name": "QWEN3_SPEECH_API_KEY", "valueFrom": {"secretKeyRef": {"name": "speech-api-key", "key": "api-key"}}} \
        in container["env"]
    assert "VLLM_API_KEY" not in {e["name"] for m in all_manifests() if m["kind"] == "Deployment"
                                  for c in m["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}


def _secret_free(root: Path) -> list[str]:
    """Files under the sandbox's directory (audit log, server and container logs) holding the key."""
    return [str(p) for p in root.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000
            and KEY.encode() in p.read_bytes() and p.suffix in (".log", ".jsonl", ".txt", ".json", "")]


def test_a_deploy_with_a_key_guards_both_services_and_shows_the_key_nowhere(sandbox):
    result = deploy(sandbox, "-vv", "--diff", "--data", "api_key_secret=speech-api-key",
                    env={"QWEN3_SPEECH_API_KEY": KEY})
    assert_ok(result)
    text = output(result)
    assert KEY not in text and base64.b64encode(KEY.encode()).decode() not in text  # diffs mask Secret data
    assert 'Authorization: Bearer $QWEN3_SPEECH_API_KEY' in text and "through the ALB: round trip" in text
    for port in ("8000", "8880"):  # ASR, TTS
        url = sandbox.state["alb_listeners"][port]
        for key, status in ((None, 401), ("wrong", 401), (KEY, 200)):
            assert _status(url + "/v1/models", key) == status, (port, key)
        assert _status(url + "/health") == 200
    assert _secret_free(sandbox.root) == []
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p)]
    assert not [c for c in cmdlines if KEY.encode() in c]


def _status(url: str, key: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False
