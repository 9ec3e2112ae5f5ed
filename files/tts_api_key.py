"""The TTS server's app (api.main:app) behind an API key: the same rule as vLLM's
AuthenticationMiddleware (vllm/entrypoints/openai/api_server.py, later server_utils.py): paths under
/v1 need `Authorization: Bearer KEY` (OPTIONS excepted), else 401 {"error": "Unauthorized"};
/health and the rest stay open for probes. The upstream server has no key of its own.

Run as `python -m uvicorn --app-dir /opt/qwen3-speech tts_api_key:app ...` in the image's working
directory; the key comes from QWEN3_SPEECH_API_KEY (a secretKeyRef), never from the command line.
"""

import hmac
import os
import sys

from api.main import app as upstream

KEY = os.environ.get("QWEN3_SPEECH_API_KEY", "").encode()
if not KEY:  # fail closed: a guarded server without its key would be an open one
    sys.exit("tts_api_key: QWEN3_SPEECH_API_KEY is empty; check the Secret named by api_key_secret (key api-key)")
UNAUTHORIZED = b'{"error":"Unauthorized"}'


async def app(scope, receive, send):
    if (scope["type"] == "http" and scope["path"].startswith("/v1") and scope["method"] != "OPTIONS"
            and not hmac.compare_digest(dict(scope["headers"]).get(b"authorization", b""), b"Bearer " + KEY)):
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(UNAUTHORIZED)).encode())]})
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
        return
    await upstream(scope, receive, send)
