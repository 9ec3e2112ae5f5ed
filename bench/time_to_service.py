"""Minutes to service on the real-world profile: first deploy, Spot recovery, Spot recovery with a rerun.

    .venv/bin/python bench/time_to_service.py [--time-scale 30] [--level middle]

Runs a sandbox on sandbox/cluster/profile.py (`--time-scale N`: N times faster than life) and the
shipped playbook with the shipped defaults against it, and prints in real-world (simulated) minutes:
(a) the first deploy from a cluster without a GPU node (Karpenter launches one) until both services
answer a round trip through the ALB; (b) recovery after a Spot interruption of the serving node with
nobody acting, until both answer again through the ALB; (c) the same with the playbook rerun right
after the interruption; (d) and (e): (a) and (b) with the GPU image cache, on a second sandbox (a
snapshot built by `python -m qwen_speech image-cache build` against the sandbox's AWS, as an
operator builds it, and the deploy run with `manage_gpu_nodepool=true gpu_image_cache_snapshot_id=
<snapshot>`: Karpenter launches every GPU node from the playbook's EC2NodeClass, which boots with
both images on its data volume). Each comes with its critical path, read from the sandbox's objects and events
as they change (node joined, each image pulled, models seeded, ASR and TTS ready, ALB active, first
round trip). Beside them: the guide's sequential order on the same profile (its steps one after the
other, computed from the profile). The last line is one JSON object with the figures.

Clocks: a figure is the sandbox's monotonic time between two moments, multiplied by the scale. The
playbook's own work is real seconds, not scaled: at scale 30 one second of its CPU is 30 simulated
seconds, which in life would be one. So (a) and (c) start at the playbook's first write to the
cluster (its interpreter start, imports and preflight are left out and printed), and each prints the
playbook's CPU time times the scale: the most of that figure that can be the playbook's own work
rather than the cluster's (in life it is that many seconds, not minutes). (b) has no playbook in it.
In a first deploy, (a) and (d), the playbook's writes from its first one to the one its critical
path starts from (the ASR Deployment, whose pending pod makes Karpenter launch the GPU node; or the
seeding Jobs) are counted as the real seconds they took, as in life, not times the scale; the
figure with them scaled is printed beside it (`*_playbook_writes_scaled_min` in the JSON line).
What the cluster does meanwhile is still scaled, so a chain that starts from an earlier write (the
seeding Jobs come before the ASR Deployment) is ahead of the critical one here by those seconds x
(scale - 1) more than it would be in life (a few simulated seconds: compare its slack in the
printed path; only the critical chain gets the credit).
The round trip is tried every simulated second (at least 0.02 s of wall time) once both
serving pods of the scenario are ready: an interrupted pod answering while it goes is no recovery.

The scale: 30 by default. Measured on our 2-core machines, first deploy / recovery came out 32.3 / 18.7
at scale 15, 32.8 / 18.9 at 30, 44-46 / 22.1 at 60 and 65.7 / 24.2 at 120 (in an older order, when
every Python container also started an interpreter: sandbox/cluster/warm_python.py now forks one):
above 30 the sandbox's own real seconds (the playbook, the API server and the control loop sharing
the CPU) swamp the simulated ones; at 30 the five scenarios take about three minutes of wall time
(169 s on a quiet machine).

`--playbook-data KEY=VALUE` passes inventory data to every playbook run (pyinfra --data), e.g. a
setting that keeps the guide's order, to measure that order too. `--scenarios` picks a subset
(default all: abcde; b and c need a, e needs d).

Asserts nothing; figures for the README (issue 13).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qwen_speech import roundtrip  # noqa: E402
from sandbox.cluster import profile  # noqa: E402
from sandbox.runtime import Sandbox, SandboxOptions  # noqa: E402

NS = "hosthree"
SERVERS = {"qwen3-asr": "ASR", "qwen3-tts": "TTS"}
ASR_PORT, TTS_PORT = "8000", "8880"
ASR_MODEL = "/models/Qwen3-ASR-1.7B"
PROBE_EVERY = 1.0  # simulated seconds between round-trip attempts (at least 0.02 s of wall time)
DEFAULT_SCALE = 30.0


class Timeline:
    """The moments that make a critical path, stamped as the sandbox's store changes (its own clock)."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self._lock = threading.Lock()
        self.marks: dict[str, float] = {}
        self.first_write: float | None = None
        self.old_pods: set[str] = set()
        self.gpu_nodes: set[str] = {n["metadata"]["name"] for n in sandbox.store.list(_res("nodes"))
                                    if (n["metadata"].get("labels") or {}).get("node-type") == "gpu"}
        self.started = time.monotonic()
        sandbox.store.add_listener(self._on_change)

    def reset(self) -> None:
        """A new scenario: forget the marks; pods alive now are the old ones."""
        with self._lock:
            self.marks, self.first_write = {}, None
            self.old_pods = {p["metadata"]["uid"] for p in self.sandbox.store.list(_res("pods"))}
            self.started = time.monotonic()

    def mark(self, name: str, at: float | None = None) -> None:
        with self._lock:
            self.marks.setdefault(name, time.monotonic() if at is None else at)

    def _on_change(self, event) -> None:  # called by the store on every write: stay cheap
        now = time.monotonic()
        key, obj = event.resource_key, event.object
        meta = obj.get("metadata") or {}
        if self.first_write is None and key != "events" and (
                meta.get("namespace") == NS or (key == "namespaces" and meta.get("name") == NS)):
            self.first_write = now  # the playbook's first write (its deploy lock or namespace)
        if key == "nodes" and event.type == "ADDED":
            labels = meta.get("labels") or {}
            if labels.get("node.kubernetes.io/instance-type", "").startswith("g4dn"):
                self.gpu_nodes.add(meta.get("name"))
                self.mark("GPU node joined", now)
        elif key == "events" and obj.get("reason") == "Pulled":
            # The seeders pull on a node the cluster had; the serving pods on the GPU node (whose
            # images an image cache brings along: "already present on machine").
            message = obj.get("message") or ""
            on_gpu = (obj.get("source") or {}).get("host") in self.gpu_nodes
            image = _short(message.split(chr(34))[1]) if chr(34) in message else "?"
            if message.startswith("Successfully pulled image"):
                self.mark(f"pulled {image}" + ("" if on_gpu else " for the seeders"), now)
            elif on_gpu and message.endswith("already present on machine") and f"pulled {image}" not in self.marks:
                self.mark(f"{image} already on the GPU node", now)  # not a second container of a pulled image
        elif key == "jobs.batch" and meta.get("name", "").startswith("qwen3-seed-"):
            if event.type == "ADDED":
                self.mark("seed Jobs created", now)
            if ((obj.get("status") or {}).get("succeeded") or 0) >= 1:
                model = (meta.get("labels") or {}).get("qwen3-speech.io/model", "?")
                self.mark(f"{model.upper()} model seeded", now)
        elif key == "ingresses.networking.k8s.io" and event.type == "ADDED" and meta.get("namespace") == NS:
            self.mark("Ingress applied", now)
        elif key == "deployments.apps" and event.type == "ADDED" and meta.get("namespace") == NS \
                and meta.get("name") in SERVERS:
            self.mark(f"{SERVERS[meta['name']]} Deployment applied", now)
        elif key == "pods" and meta.get("namespace") == NS and meta.get("uid") not in self.old_pods:
            server = SERVERS.get((meta.get("labels") or {}).get("app.kubernetes.io/name"))
            if server and event.type == "ADDED":
                self.mark(f"{server} pod created", now)
            if server and not meta.get("deletionTimestamp") and _ready(obj):
                self.mark(f"{server} ready", now)


def _res(key: str):
    from sandbox.kubeapi.resources import by_key
    return by_key(key)


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _short(image: str) -> str:
    name = image.split("@")[0].rsplit("/", 1)[-1]
    return f"{name.split(':')[0]} image"


class RoundTripProbe:
    """Tries the round trip through the ALB every PROBE_EVERY s once both serving pods of this
    scenario are ready (the old ones may still answer while they go: that is not a recovery);
    remembers when it first answered."""

    def __init__(self, sandbox: Sandbox, timeline: Timeline):
        self.sandbox, self.timeline = sandbox, timeline
        self.answered: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="round-trip-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        every = max(0.02, PROBE_EVERY / self.sandbox.options.time_scale)
        while not self._stop.wait(every):
            if not all(f"{server} ready" in self.timeline.marks for server in SERVERS.values()):
                continue
            listeners = self.sandbox.state.get("alb_listeners") or {}
            if ASR_PORT not in listeners or TTS_PORT not in listeners:
                continue
            try:
                results = roundtrip.round_trip(roundtrip.UrlTransport(listeners[TTS_PORT]),
                                               roundtrip.UrlTransport(listeners[ASR_PORT]),
                                               asr_model=ASR_MODEL, max_cer=0.2, timeout=30)
            except Exception:  # not answering yet (503, connection refused, model loading)
                continue
            if results and all(r.ok for r in results):
                self.answered = time.monotonic()
                return

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        self._stop.set()
        return self.answered


class Playbook:
    """`pyinfra inventories/sandbox.py deploy.py -y` in the background; its wall and CPU seconds."""

    def __init__(self, root: Path, data: list[str]):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
        env.update({"QWEN3_SANDBOX_DIR": str(root), "PYTHONUNBUFFERED": "1"})
        self.log = open(root / "playbook.log", "ab")
        self.began = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "pyinfra", "inventories/sandbox.py", "deploy.py", "-y",
                                         *[arg for pair in data for arg in ("--data", pair)]],
                                        cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.wall = self.cpu = None
        self.code = None

    def wait(self) -> None:
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = self.code = os.waitstatus_to_exitcode(status)
        self.wall = time.monotonic() - self.began
        self.cpu = usage.ru_utime + usage.ru_stime  # the playbook's own work (its children's too)
        self.log.close()


def minutes(seconds: float) -> str:
    return f"{seconds / 60:5.1f} min"


def critical_path(marks: dict[str, float], start: float, end: float, scale: float,
                  real_until: float | None = None) -> list[str]:
    """Lines: each moment on the way to the first round trip, in order, with its simulated time
    (up to `real_until`, the playbook's writes, real seconds: see the docstring)."""
    lines = []
    for name, at in sorted(list(marks.items()) + [("first round trip through the ALB", end)], key=lambda kv: kv[1]):
        if at < start:
            continue
        lines.append(f"    {minutes(simulated(at, start, scale, real_until))}  {name}")
    return lines


def simulated(at: float, start: float, scale: float, real_until: float | None = None) -> float:
    """Simulated seconds from `start` to `at`: wall seconds x scale, except that the wall seconds up
    to `real_until` count once (the playbook's own writes, as long as in life)."""
    if real_until is None:
        return (at - start) * scale
    if at <= real_until:
        return at - start
    return (real_until - start) + (at - real_until) * scale


# What each moment can only follow (the physics and the order the manifests enforce): the critical
# path is the chain of the latest of these, walked back from the first round trip.
AFTER = {
    "first round trip through the ALB": ("ASR ready", "TTS ready", "ALB active"),
    "ALB active": ("Ingress applied",),
    "Ingress applied": ("ASR ready", "TTS ready"),  # the playbook's order, when it waits for them
    "TTS ready": ("pulled qwen3-tts image", "qwen3-tts image already on the GPU node", "ASR ready", "TTS model seeded"),
    "ASR ready": ("pulled qwen3-asr image", "qwen3-asr image already on the GPU node", "ASR model seeded",
                  "ASR pod created"),
    "ASR pod created": ("ASR model seeded", "TTS model seeded", "ASR Deployment applied"),  # the playbook's order
    "TTS pod created": ("ASR ready", "ASR model seeded", "TTS model seeded", "TTS Deployment applied"),
    # With the image cache the seeders copy from the GPU node's disk: they wait for that node.
    "ASR model seeded": ("pulled qwen3-tts image for the seeders", "GPU node joined"),
    "TTS model seeded": ("ASR model seeded", "pulled qwen3-tts image for the seeders"),  # one after the other
    "pulled qwen3-tts image for the seeders": ("seed Jobs created",),
    "GPU node joined": ("ASR pod created",),  # Karpenter launches it for the pending ASR pod
    "pulled qwen3-asr image": ("GPU node joined",),
    # TTS's model guard runs in the ASR image: its own image is pulled after that one
    "pulled qwen3-tts image": ("pulled qwen3-asr image", "qwen3-asr image already on the GPU node", "TTS pod created"),
    "qwen3-asr image already on the GPU node": ("GPU node joined",),
    "qwen3-tts image already on the GPU node": ("GPU node joined",),
}


# The playbook's writes a critical path can start from.
PLAYBOOK_WRITES = ("ASR Deployment applied", "TTS Deployment applied", "seed Jobs created")


def chain_of_waits(marks: dict[str, float], end: float) -> list[str]:
    """The chain of waits that made the figure: from the round trip back, the latest prerequisite each time."""
    marks = {**marks, "first round trip through the ALB": end}
    chain, step = [], "first round trip through the ALB"
    while step in AFTER:
        before = [m for m in AFTER[step] if m in marks and marks[m] <= marks[step]]
        if not before:
            break
        step = max(before, key=lambda m: marks[m])
        chain.append(step)
    return chain


def waited_for(chain: list[str]) -> str:
    return "waited for, last first: " + " <- ".join(chain) if chain else "waited for nothing recorded"


def gpu_order(sandbox: Sandbox) -> str:
    """From the GPU memory ledger of the serving node: did ASR finish loading before TTS began?"""
    report = sandbox.cluster.kubelet.gpu_memory_report()
    for node, gpu in report.items():
        allocs = gpu.get("allocations") or []
        asr = [a["at"] for a in allocs if a["owner"].endswith("/asr") and "qwen3-asr" in a["owner"]]
        tts = [a["at"] for a in allocs if "qwen3-tts" in a["owner"]]
        if asr and tts and node in {p["spec"].get("nodeName") for p in sandbox.store.list(_res("pods"), NS)}:
            safe = min(tts) >= max(asr)
            return (f"GPU load order on {node}: ASR's last allocation (KV cache) {'before' if safe else 'AFTER'} "
                    f"TTS's first: {'safe' if safe else 'UNSAFE'}")
    return "GPU load order: no ledger of both loads on one node"


def guide_order(level: str) -> dict[str, tuple[float, list[tuple[str, float]]]]:
    """The guide's steps one after the other on this profile: (total seconds, [(step, seconds)])."""
    v = lambda name: profile.value(name, level)  # noqa: E731
    bandwidth, download = profile.pull_bandwidth(level), profile.model_download_bandwidth(level)
    node = [("Karpenter batch + g4dn Spot launch", v("karpenter_batch") + v("gpu_node_launch"))]
    asr_pull = ("ASR image pull", v("asr_image_bytes") / bandwidth)
    tts_pull = ("TTS image pull", v("tts_image_bytes") / bandwidth)
    loads = [("ASR load + CUDA graphs", v("asr_model_load"))]
    first = node + [asr_pull, ("ASR model download into EFS", v("asr_model_bytes") / download)] + loads + [
        tts_pull, ("TTS model download into EFS", v("tts_model_bytes") / download),
        ("TTS load", v("tts_model_load")), ("ALB provisioning", v("alb_provisioning"))]
    # After an interruption the models are on EFS; the new node pulls and loads both again.
    recovery = node + [asr_pull] + loads + [tts_pull, ("TTS load", v("tts_model_load"))]
    return {name: (sum(s for _, s in steps), steps) for name, steps in (("first", first), ("recovery", recovery))}


def run_scenario(sandbox: Sandbox, timeline: Timeline, name: str, scale: float, *, interrupt: bool,
                 rerun: bool, timeout: float, data: list[str]) -> dict:
    timeline.reset()
    began = time.monotonic()
    if interrupt:  # the node serving ASR (Karpenter may have launched more than one GPU node)
        serving = [p["spec"].get("nodeName") for p in sandbox.store.list(_res("pods"), NS)
                   if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "qwen3-asr"]
        sandbox.cluster.inject("spot-interruption", {"node": serving[0]} if serving else {})
    probe = RoundTripProbe(sandbox, timeline)
    playbook = Playbook(sandbox.root, data) if rerun else None
    answered = probe.wait(timeout)
    if playbook is not None:
        playbook.wait()
    start = began
    if playbook is not None and not interrupt and timeline.first_write is not None:
        start = timeline.first_write  # the first deploy starts when the playbook first writes
    marks = dict(timeline.marks)
    for group, at in sandbox.cluster.alb.active_at.items():
        if at >= start:
            marks["ALB active"] = at
    result = {"name": name, "answered": answered is not None}
    print(f"\n{name}:")
    if answered is None:
        print(f"  no round trip through the ALB within {timeout:.0f} s of wall time "
              f"({minutes(timeout * scale).strip()} simulated); see {sandbox.root}/playbook.log")
        result["minutes"] = None
    else:
        chain = chain_of_waits(marks, answered)
        # The playbook's writes up to the one its critical path starts from are its own work: real
        # seconds here and in life, not scale x as many (see the docstring). Printed both ways.
        root = chain[-1] if chain and chain[-1] in PLAYBOOK_WRITES and playbook is not None and start != began else None
        real_until = marks[root] if root else None
        all_scaled = (answered - start) * scale
        figure = simulated(answered, start, scale, real_until)
        result["minutes"] = round(figure / 60, 1)
        result["minutes_playbook_writes_scaled"] = round(all_scaled / 60, 1)
        print(f"  {minutes(figure).strip()} until both services answer a round trip through the ALB")
        if root:
            writes = real_until - start
            print(f"  (the playbook's writes from its first one to where the critical path starts ({root}): "
                  f"{writes:.2f} s, counted as the {writes:.2f} s they take in life; x {scale:g} like the rest "
                  f"the figure would be {minutes(all_scaled).strip()})")
        print("  critical path (simulated time since the start):")
        print("\n".join(critical_path(marks, start, answered, scale, real_until)))
        print(f"  {waited_for(chain)}")
    if playbook is not None:
        before = (start - playbook.began) if start > playbook.began else 0.0
        overhead = playbook.cpu * scale
        result.update({"playbook_wall_s": round(playbook.wall, 1), "playbook_cpu_s": round(playbook.cpu, 1),
                       "playbook_cpu_scaled_min": round(overhead / 60, 1), "playbook_exit": playbook.code})
        print(f"  playbook: exit {playbook.code}, {playbook.wall:.1f} s wall, {playbook.cpu:.1f} s CPU"
              + (f", {before:.1f} s of it before its first write (not counted)" if before else ""))
        print(f"  playbook overhead: its CPU x {scale:g} = {minutes(overhead).strip()} simulated: the most of the "
              f"figure that is its own work (in life: {playbook.cpu:.0f} s)")
    print(f"  {gpu_order(sandbox)}")
    return result


def _less(result: dict) -> float | None:
    """The figure with all of the playbook's time scaled, less its CPU x scale."""
    if result.get("minutes") is None or result.get("playbook_cpu_scaled_min") is None:
        return None
    return round(result["minutes_playbook_writes_scaled"] - result["playbook_cpu_scaled_min"], 1)


def image_cache_snapshot(sandbox: Sandbox) -> str:
    """`python -m qwen_speech image-cache build` against the sandbox's AWS, as an operator runs it
    (tests/test_image_cache.py does the same); the snapshot id it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update({"QWEN3_SANDBOX_DIR": str(sandbox.root), "PYTHONUNBUFFERED": "1"})
    result = subprocess.run([sys.executable, "-m", "qwen_speech", "image-cache", "build", "inventories/sandbox.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    found = re.search(r"gpu_image_cache_snapshot_id = '(snap-[0-9a-f]+)'", result.stdout)
    if result.returncode != 0 or not found:
        raise SystemExit(f"image-cache build failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return found.group(1)


def run_sandbox(root: Path, scale: float, scenarios: str, args, *, cached: bool) -> list[dict]:
    """One sandbox without a GPU node: the first deploy, then the interruptions the selection asks for."""
    results = []
    sandbox = Sandbox(root, SandboxOptions(time_scale=scale, gpu_node=False))
    sandbox.start()
    try:
        data = list(args.playbook_data)
        label = ""
        if cached:
            began = time.monotonic()
            snapshot = image_cache_snapshot(sandbox)
            print(f"\nimage cache: built {snapshot} with `python -m qwen_speech image-cache build` "
                  f"({time.monotonic() - began:.0f} s of wall time, not counted)")
            data += ["manage_gpu_nodepool=true", f"gpu_image_cache_snapshot_id={snapshot}"]
            label = ", with the image cache"
        timeline = Timeline(sandbox)
        first, spot, rerun = ("d", "e", None) if cached else ("a", "b", "c")
        results.append(run_scenario(sandbox, timeline, f"({first}) first deploy, no GPU node yet{label}", scale,
                                    interrupt=False, rerun=True, timeout=args.timeout, data=data))
        if spot in scenarios:
            results.append(run_scenario(sandbox, timeline, f"({spot}) Spot interruption, nobody acting{label}", scale,
                                        interrupt=True, rerun=False, timeout=args.timeout, data=data))
        if rerun and rerun in scenarios:
            results.append(run_scenario(sandbox, timeline, f"({rerun}) Spot interruption, playbook rerun at once",
                                        scale, interrupt=True, rerun=True, timeout=args.timeout, data=data))
    finally:
        sandbox.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-scale", type=float, default=DEFAULT_SCALE,
                        help=f"simulated seconds per wall second (default {DEFAULT_SCALE:g})")
    parser.add_argument("--timeout", type=float, default=150.0, help="wall seconds each scenario may take")
    parser.add_argument("--playbook-data", action="append", default=[], metavar="KEY=VALUE",
                        help="inventory data for every playbook run (pyinfra --data), e.g. a setting that "
                             "keeps the guide's order, to measure it on the same profile")
    parser.add_argument("--scenarios", default="abcde",
                        help="which to run, any of a-e: (a) first deploy, (b) Spot recovery, (c) with a rerun, "
                             "(d) and (e) a and b with the image cache; b and c need a, e needs d; default abcde")
    args = parser.parse_args()
    chosen = set(args.scenarios)
    if not chosen or chosen - set("abcde") or (chosen & set("bc") and "a" not in chosen) or ("e" in chosen and "d" not in chosen):
        parser.error(f"--scenarios {args.scenarios!r}: letters from abcde; b and c need a (they start from its "
                     "deploy), e needs d")
    scale = args.time_scale
    wall_began = time.monotonic()
    print(f"time scale {scale:g}: one wall second is {scale:g} simulated seconds; profile (middle values, "
          "sandbox/cluster/profile.py):")
    for name, text, source in profile.table():
        print(f"  {name:26} {text:18} {source}")
    results = []
    with tempfile.TemporaryDirectory(prefix="qwen3-tts-bench-") as tmp:
        if "a" in chosen:
            results += run_sandbox(Path(tmp) / "sandbox", scale, args.scenarios, args, cached=False)
        if "d" in chosen:
            results += run_sandbox(Path(tmp) / "sandbox-cached", scale, args.scenarios, args, cached=True)
    guide = guide_order("middle")
    print("\nthe guide's order (each step after the previous one), same profile:")
    for name, label in (("first", "first deploy"), ("recovery", "after a Spot interruption")):
        total, steps = guide[name]
        print(f"  {label}: {minutes(total).strip()} = " + " + ".join(f"{step} {s / 60:.1f}" for step, s in steps))
    print(f"\nwall time of this bench: {time.monotonic() - wall_began:.0f} s")
    by = {r["name"][:3]: r for r in results}
    summary = {"time_scale": scale, "playbook_data": args.playbook_data,
               "first_deploy_min": by.get("(a)", {}).get("minutes"),
               "spot_recovery_min": by.get("(b)", {}).get("minutes"),
               "spot_recovery_with_rerun_min": by.get("(c)", {}).get("minutes"),
               "first_deploy_cached_min": by.get("(d)", {}).get("minutes"),
               "spot_recovery_cached_min": by.get("(e)", {}).get("minutes"),
               "guide_first_deploy_min": round(guide["first"][0] / 60, 1),
               "guide_spot_recovery_min": round(guide["recovery"][0] / 60, 1),
               # each first deploy with the playbook's writes before its critical path scaled too
               "first_deploy_playbook_writes_scaled_min": by.get("(a)", {}).get("minutes_playbook_writes_scaled"),
               "first_deploy_cached_playbook_writes_scaled_min": by.get("(d)", {}).get("minutes_playbook_writes_scaled"),
               # that figure less its playbook's CPU x scale: the least it can be once all of the
               # playbook's own work counts as the seconds it is in life
               "first_deploy_less_playbook_cpu_min": _less(by.get("(a)", {})),
               "spot_recovery_with_rerun_less_playbook_cpu_min": _less(by.get("(c)", {})),
               "first_deploy_playbook_cpu_scaled_min": by.get("(a)", {}).get("playbook_cpu_scaled_min"),
               "spot_recovery_with_rerun_playbook_cpu_scaled_min": by.get("(c)", {}).get("playbook_cpu_scaled_min")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
