"""TTS init container: wait until ASR on this node answers /health 200, then let TTS load.

vLLM checks free GPU memory at start and profiles its own use; a TTS model loading on the shared
GPU meanwhile leaves it no memory for the KV cache and it exits. So TTS waits for ASR on the same
node, after every restart (a Spot replacement, a rollout, both pods deleted), not only the first
deploy. ASR is reached through the qwen3-asr-local Service (internalTrafficPolicy: Local): only the
ASR pod on this node answers. Host and port come from the Service env vars the kubelet sets,
falling back to the Service's DNS name. Stdlib only: it runs inside the TTS image.
"""
import os
import sys
import time
import urllib.request

timeout = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else 1800.0
poll = float(sys.argv[sys.argv.index("--poll") + 1]) if "--poll" in sys.argv else 5.0
host = os.environ.get("QWEN3_ASR_LOCAL_SERVICE_HOST", "qwen3-asr-local")
port = os.environ.get("QWEN3_ASR_LOCAL_SERVICE_PORT", "80")
url = "http://%s:%s/health" % (host, port)
print("waiting for ASR on this node to finish starting: GET %s (up to %ds)" % (url, timeout), flush=True)
start = time.monotonic()
last = None
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                print("ASR on this node is ready after %ds: TTS may load its model" % (time.monotonic() - start),
                      flush=True)
                sys.exit(0)
            reason = "HTTP %d" % response.status
    except Exception as exc:  # refused, reset, timeout: ASR not started (or not on this node)
        reason = "%s: %s" % (type(exc).__name__, exc)
    if reason != last:
        print("ASR not ready yet (%s)" % reason, flush=True)
        last = reason
    if time.monotonic() - start >= timeout:
        print("ASR on this node was not ready within %ds (timeout_asr_ready): giving up, the pod will retry"
              % timeout, flush=True)
        sys.exit(1)
    time.sleep(poll)
