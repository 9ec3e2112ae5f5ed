"""TTS readiness: the server's /health answers 200 even while loading, so read the JSON.

Ready only when status is "healthy" and the backend says ready. Port from $PORT, as the server
itself reads it. Stdlib only: it runs inside the TTS image.
"""
import json
import os
import sys
import urllib.request

url = "http://127.0.0.1:%s/health" % os.environ.get("PORT", "8880")
try:
    with urllib.request.urlopen(url, timeout=8) as response:
        body = json.load(response)
except Exception as exc:  # any failure to get an answer means not ready
    print("not ready: %s: %s" % (url, exc))
    sys.exit(1)
backend = body.get("backend") or {}
if body.get("status") == "healthy" and backend.get("ready"):
    sys.exit(0)
print("not ready: status=%r backend.ready=%r" % (body.get("status"), backend.get("ready")))
sys.exit(1)
