"""Issue 10 item 4, the API key: the ASR stand-in answers as vLLM with VLLM_API_KEY set, and the
playbook puts the key in a Secret from $QWEN3_SPEECH_API_KEY, into the pod only by secretKeyRef."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from sandbox import speech
from tests.deploy_helpers import assert_ok, deploy, output
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


def test_asr_manifest_reads_the_key_from_the_secret():
    asr = next(m for m in all_manifests(api_key_secret="speech-api-key")
               if m["kind"] == "Deployment" and m["metadata"]["name"] == "qwen3-asr")
    env = {e["name"]: e for e in asr["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VLLM_API_KEY"] == {"name": "VLLM_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "speech-api-key", "key": "api-key"}}}
    assert "VLLM_API_KEY" not in {e["name"] for m in all_manifests() if m["kind"] == "Deployment"
                                  for c in m["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}


def _secret_free(root: Path) -> list[str]:
    """Files under the sandbox's directory (audit log, server and container logs) holding the key."""
    return [str(p) for p in root.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000
            and KEY.encode() in p.read_bytes() and p.suffix in (".log", ".jsonl", ".txt", ".json", "")]


def test_a_deploy_with_a_key_guards_asr_and_shows_the_key_nowhere(sandbox):
    result = deploy(sandbox, "-vv", "--diff", "--data", "api_key_secret=speech-api-key",
                    env={"QWEN3_SPEECH_API_KEY": KEY})
    assert_ok(result)
    text = output(result)
    assert KEY not in text and base64.b64encode(KEY.encode()).decode() not in text  # diffs mask Secret data
    assert 'Authorization: Bearer $QWEN3_SPEECH_API_KEY' in text and "through the ALB: round trip" in text
    asr = sandbox.state["alb_listeners"]["8000"]
    for key, status in ((None, 401), ("wrong", 401), (KEY, 200)):
        req = urllib.request.Request(asr + "/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == status
        except urllib.error.HTTPError as err:
            assert err.code == status
    with urllib.request.urlopen(asr + "/health", timeout=10) as resp:
        assert resp.status == 200
    assert _secret_free(sandbox.root) == []
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p)]
    assert not [c for c in cmdlines if KEY.encode() in c]


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False
