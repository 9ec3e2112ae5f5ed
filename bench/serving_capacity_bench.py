"""What one and two serving nodes serve: requests per minute through the sandbox ALB. Prints; asserts nothing.

For 1 and 2 GPU nodes (each one ASR and one TTS pod, the shipped manifests, tests/serving_helpers.py)
it sends a fixed 30-character Chinese text (the guide's "short text") through the ALB from several
client threads for a while and counts the answers: TTS synthesis, ASR transcription of that speech,
and the round trip (synthesise, then transcribe). The sandbox runs in fast mode, where the TTS
stand-in synthesises at 1/100 of a T4's time, so the measured rates are the stand-ins' and mostly
show how capacity scales with nodes (the ASR stand-in spends no model time, so its rate is only
the sandbox's HTTP path on this machine). The T4 lines are arithmetic from the guide: TTS is
single-threaded at RTF ~2.16 (one pod does one synthesis at a time), ASR serves ~3 concurrent
requests (max_model_len 4096, KV cache ~1.32 GiB); the guide gives no ASR latency, so its T4 line
is a concurrency, not a rate.

    python bench/serving_capacity_bench.py [--seconds 6] [--clients 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.speech import TTS_RTF, speech_seconds, tts_synthesis_seconds  # noqa: E402
from tests.cluster_helpers import running_cluster  # noqa: E402
from tests.serving_helpers import Stream, start_serving  # noqa: E402

TEXT = "你好，这是一段用来测试服务容量的三十个字的中文文本，谢谢大家"  # 30 characters
ASR_CONCURRENT_PER_T4 = 3  # the guide: max_model_len 4096, KV cache ~1.32 GiB


def measure(urls: dict[str, str], kind: str, clients: int, seconds: float) -> tuple[float, int]:
    """(answers per minute, failures) of `clients` threads asking `kind` back to back for `seconds`."""
    stream = Stream(urls, text=TEXT, clients=clients, pause=0.0, kinds=(kind,), retry=False)
    started = time.monotonic()
    stream.start()
    time.sleep(seconds)
    stream.stop()
    elapsed = time.monotonic() - started
    done = stream.since(started)
    return 60.0 * sum(1 for s in done if s.ok) / elapsed, sum(1 for s in done if not s.ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each measurement streams")
    parser.add_argument("--clients", type=int, default=4, help="client threads per measurement")
    args = parser.parse_args()
    print(f"text: {TEXT!r} ({len(TEXT)} characters, {speech_seconds(TEXT):.1f} s of speech)")
    print(f"stand-ins, fast mode (synthesis at 1/100 of a T4's time), {args.clients} clients, {args.seconds:g} s each:")
    rates: dict[int, dict[str, float]] = {}
    for nodes in (1, 2):
        with tempfile.TemporaryDirectory() as root, running_cluster(Path(root)) as cluster:
            urls = start_serving(cluster, nodes)
            rates[nodes] = {}
            for kind in ("tts", "asr", "roundtrip"):
                rate, failed = measure(urls, kind, args.clients, args.seconds)
                rates[nodes][kind] = rate
                print(f"  {nodes} node{'s' if nodes > 1 else ' '}  {kind:9}  {rate:8.0f} requests/min"
                      + (f"  ({failed} failed)" if failed else ""))
    for kind in ("tts", "asr", "roundtrip"):
        print(f"  2 nodes / 1 node, {kind:9}: x{rates[2][kind] / rates[1][kind]:.2f}")
    print("  (the ASR stand-in spends no model time: its rate is this machine's HTTP path, not a capacity)")
    synthesis = tts_synthesis_seconds(TEXT)
    per_node = 60.0 / synthesis
    print(f"on a T4 (the guide: TTS RTF ~{TTS_RTF}, single-threaded; ASR ~{ASR_CONCURRENT_PER_T4} concurrent requests):")
    print(f"  one synthesis of this text: {synthesis:.1f} s; the guide's own figure for ~30 characters: ~20 s")
    for nodes in (1, 2):
        print(f"  {nodes} node{'s' if nodes > 1 else ' '}  tts {nodes * per_node:5.1f} requests/min, "
              f"asr {nodes * ASR_CONCURRENT_PER_T4} concurrent, round trip <= {nodes * per_node:5.1f} requests/min "
              f"(TTS bound)")


if __name__ == "__main__":
    main()
