"""The kubelet stand-in: runs bound pods through volumes, init containers and containers.

How a container runs depends on what it is:
- command (command + args) starting with python/python3/python3.X: a real local process (the
  sandbox's interpreter), cwd ROOT/pods/<ns>/<pod>/, its env resolved from the store, every
  argument and env value that starts with a container mountPath rewritten to the local directory
  standing in for that volume (PVC -> its EFS directory, ConfigMap/Secret -> materialised files,
  emptyDir -> a directory). Output goes to ROOT/logs/<ns>/<pod>/<container>.log.
- image containing the ASR/TTS marker: a speech stand-in HTTP server per declared containerPort
  (sandbox.speech), probed for readiness over HTTP like the real server; a TTS-image command that
  starts its server (`python -m api.main`, or `python -m uvicorn api.main:app ...`) is the stand-in
  too, with the arguments it was given.
- image containing `k8s-device-plugin`: by its command, the plugin reads its config file at start
  (device_plugin.py) and registers GPUs with the node, or exits 1 with the plugin's error line
  (crash loop); config-manager links the config the node label selects (the sidecar re-selects on
  a label change and restarts the plugin's config, as its SIGHUP does); gpu-feature-discovery runs.
- anything else: Running and Ready after the delays.

runAsNonRoot is checked as pkg/kubelet/kuberuntime/security_context_others.go (verifyRunAsNonRoot)
does, against the image's user: the TTS image's USER `appuser` (non-numeric, so it cannot be
verified without a numeric runAsUser), every other image root. A refusal is CreateContainerConfigError.

States, events and restarts follow the real kubelet: Pulling/Pulled, ErrImagePull then
ImagePullBackOff, Created/Started, CrashLoopBackOff with doubling back-off (10 s .. 5 min, scaled
in fast mode), Init:Error / Init:CrashLoopBackOff for failing init containers, restartPolicy
Always/OnFailure/Never. A pod being deleted (deletionTimestamp) stops as the kubelet stops it: a
Killing event, each running container's preStop hook (a sleep is waited out), SIGTERM (speech
stand-ins then stop accepting and finish their requests in flight, as uvicorn does), SIGKILL when
the grace period ends; the pod object goes once every container has stopped. Liveness probes
are not run. Probe timeouts are enforced on the sandbox's clock (exec probes too, as since
Kubernetes 1.20), so a server that accepts but does not answer fails its HTTP or exec probe as it
would in a cluster; an exec probe's timeout runs from when its interpreter is up (starting Python
on this machine is not part of the simulated time).
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import importlib.util
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.kubeapi.store import ApiError, now_iso
from sandbox.kubeapi.strategies.pods import qos_class

from .common import (CONFIGMAPS, NODES, PODS, PVCS, PVS, REPLICASETS, SECRETS, container_requests, controller_of,
                     hex_id, merge_condition, node_internal_ip, pod_requests)
from . import profile
from .gpu_memory import GIB, GIB_OF_GPU, T4_GIB, GpuMemory
from .warm_python import WarmPython, warm_args
from .device_plugin import (PluginConfigError, config_file_of, container_role, load_plugin_config,
                            plugin_error_line, run_config_manager)

if TYPE_CHECKING:
    from .cluster import Cluster

# Phases that end at `ContainerRun.until` (the loop wakes for them).
WAITING_PHASES = ("pull-error", "pull-backoff", "creating", "config-error", "exited", "backoff")
PYTHON_COMMAND = re.compile(r"^python(3(\.\d+)?)?$")
# The GPU of each GPU instance family and its CUDA compute capability (what vLLM's dtype checks read).
GPU_OF_FAMILY = {"g4dn": ("Tesla T4", 7.5), "p3": ("Tesla V100-SXM2-16GB", 7.0), "g5": ("NVIDIA A10G", 8.6),
                 "g6": ("NVIDIA L4", 8.9), "p4d": ("NVIDIA A100-SXM4-40GB", 8.0)}
EXEC_FAST_FLOOR = 2.0    # fast mode: the least an exec probe's check gets
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------
# Speech stand-ins

class _HealthOnlyStandIn:
    """Used when sandbox.speech is not installed: answers /health (200 once loaded), nothing else."""

    def __init__(self, kind: str, load_seconds: float):
        ready_at = time.monotonic() + load_seconds

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/health":
                    self.send_response(404)
                    self.end_headers()
                    return
                loaded = time.monotonic() >= ready_at
                body = json.dumps({"status": "healthy" if loaded else "initializing",
                                   "backend": {"ready": loaded, "kind": kind}}).encode()
                self.send_response(200 if loaded else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.finished = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"standin-{kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (any signal: nothing is ever in flight here)."""
        if not self.finished.is_set():
            self.finished.set()
            self._server.shutdown()
            self._server.server_close()

    terminate = kill = stop


def start_speech_stand_in(kind: str, *, model_dir: Path | None, load_seconds: float, args: list[str],
                          env: dict[str, str], log_path: Path | None = None, time_scale: float = 1.0,
                          gpu: tuple[str, float] | None = None, gpu_memory: GpuMemory | None = None,
                          owner: str = ""):
    """sandbox.speech's stand-in when that module exists, else a /health-only server.

    Raises StandInFailed with the server's last words when the real server would exit at start.
    """
    if importlib.util.find_spec("sandbox.speech") is None:
        return _HealthOnlyStandIn(kind, load_seconds)
    from sandbox import speech

    try:
        return speech.start_stand_in(kind, 0, model_dir=model_dir, load_seconds=load_seconds, args=args, env=env,
                                     log_path=log_path, time_scale=time_scale, gpu=gpu, gpu_memory=gpu_memory,
                                     owner=owner)
    except getattr(speech, "StandInCrashed", RuntimeError) as err:
        raise StandInFailed(str(err)) from None


class StandInFailed(Exception):
    """A speech server that would have exited at start (the message is its last log line)."""


# ---------------------------------------------------------------------------------------------
# Runtime records

class ContainerConfigError(Exception):
    """CreateContainerConfigError: a referenced Secret/ConfigMap or key is missing, or runAsNonRoot
    cannot be verified."""


@dataclass
class Probe:
    kind: str  # startup | readiness
    spec: dict
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    future: concurrent.futures.Future | None = None


@dataclass
class ContainerRun:
    name: str
    spec: dict
    init: bool
    kind: str  # process | asr | tts | device-plugin | config-manager | simulated
    phase: str = "new"  # new pulling pull-error pull-backoff creating running exited backoff config-error done
    until: float = 0.0
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "PodInitializing"}})
    last_state: dict = field(default_factory=dict)
    restart_count: int = 0
    pull_failures: int = 0
    ready: bool = False
    started: bool = False
    exit_code: int | None = None
    crash_at: float | None = None
    process: subprocess.Popen | None = None
    log_file: Any = None
    stand_ins: dict = field(default_factory=dict)  # containerPort (or None) -> stand-in
    probes: dict = field(default_factory=dict)
    container_id: str = ""
    image_id: str = ""
    env: dict = field(default_factory=dict)  # resolved, container paths rewritten to local ones
    raw_env: dict = field(default_factory=dict)  # resolved, as the container sees it
    mounts: list = field(default_factory=list)  # (mountPath, local dir), longest first
    registered: bool = False
    exit_with: int = 1  # the code a container exits with at crash_at (config-manager's one-shot: 0)
    selected: tuple | None = None  # config-manager: (node label value, config chosen)
    sigterm_at: float | None = None  # pod being deleted: when the preStop hook ends and SIGTERM is sent
    signalled: bool = False

    @property
    def field_path(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    node: str
    pod: dict  # last seen copy (for events after deletion)
    pod_dir: Path
    restart_policy: str
    init: list
    main: list
    deployment: tuple[str, str] | None
    started_at: str = field(default_factory=now_iso)
    volumes: dict = field(default_factory=dict)  # volume name -> local dir
    mounted: bool = False
    mount_retry_at: float = 0.0
    admission_error: str | None = None
    final: bool = False
    kill_at: float | None = None  # pod being deleted: when its grace period ends (SIGKILL)


# ---------------------------------------------------------------------------------------------

class Kubelet:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self.options = cluster.options
        self.runs: dict[str, PodRun] = {}
        self.gpu_memory: dict[str, GpuMemory] = {}  # node -> its GPU's memory, shared by the pods on it
        self._ports_lock = threading.Lock()
        self._ports: dict[tuple[str, str], dict[int, int]] = {}  # (ns, pod) -> containerPort -> local port
        self._dying: list[tuple[subprocess.Popen, float]] = []
        self._probes = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe")
        self._warm_python = WarmPython(self.options.python)  # runs Python containers and exec probes

    # -- public --------------------------------------------------------------------------------

    def local_port(self, namespace: str, pod: str, container_port: int) -> int | None:
        """The loopback port serving a pod's containerPort (stand-in or local process), if any."""
        with self._ports_lock:
            return (self._ports.get((namespace, pod)) or {}).get(int(container_port))

    def gpu_memory_report(self) -> dict[str, dict]:
        """Per GPU node, what each container holds (GiB), as `nvidia-smi --query-compute-apps`
        would list it: the measured footprint of ASR and TTS side by side."""
        names = {run.uid: f"{run.namespace}/{run.name}" for run in list(self.runs.values())}

        def who(owner: str) -> str:
            uid, _, container = owner.partition("/")
            return f"{names.get(uid, uid)}/{container}"
        report = {}
        for node, ledger in list(self.gpu_memory.items()):
            used = {who(owner): round(size / GIB, 2) for owner, size in ledger.allocations().items()}
            # Every allocation in order (seconds on the sandbox's monotonic clock): a load's last
            # allocation ends it (ASR's KV cache after profiling), a load's first one starts it.
            allocations = [{"at": round(at, 3), "owner": who(owner), "gib": round(size / GIB, 2)}
                           for at, owner, size in list(ledger.history)]
            report[node] = {"total_gib": round(ledger.total / GIB, 2), "free_gib": round(ledger.free() / GIB, 2),
                            "used_gib": used, "allocations": allocations}
        return report

    def stop(self) -> None:
        for run in list(self.runs.values()):
            self._teardown(run, emit=False)
        self.runs.clear()
        deadline = time.monotonic() + 2.0
        for proc, _ in self._dying:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        self._dying.clear()
        self._probes.shutdown(wait=False, cancel_futures=True)
        self._warm_python.stop()

    def next_due(self, now: float) -> float | None:
        """The soonest moment after `now` at which a pass has something to do here (a phase's
        deadline, a probe's period, a pull's end, a grace period): the loop sleeps until then, not a
        whole tick, so the sandbox's clock does not add a tick to every step of a pod's start."""
        due = [self.cluster.images.next_finish(now)]
        for run in list(self.runs.values()):
            due += [run.kill_at, None if run.mounted else run.mount_retry_at]
            for c in run.init + run.main:
                due += [c.sigterm_at, c.crash_at]
                if c.phase in WAITING_PHASES:
                    due.append(c.until)
                due += [p.next_at for p in c.probes.values() if p.future is None]
        later = [at for at in due if at is not None and at > now]
        return min(later) if later else None

    def forget_node(self, node: str) -> None:
        """The node left: its image cache and its disk (hostPath data) go with it."""
        self.cluster.images.forget(node)
        shutil.rmtree(self.cluster.root / "hostpath" / node, ignore_errors=True)
        self.gpu_memory.pop(node, None)

    # -- the pass ------------------------------------------------------------------------------

    def sync(self, pods: list[dict], nodes: list[dict]) -> None:
        """Advance every pod bound to an existing node; tear down those that went away."""
        node_names = {n["metadata"]["name"]: n for n in nodes}
        live = {p["metadata"]["uid"]: p for p in pods
                if (p.get("spec") or {}).get("nodeName") in node_names}
        for uid in [u for u in self.runs if u not in live]:
            self._teardown(self.runs.pop(uid))
        now = time.monotonic()
        for uid, pod in live.items():
            run = self.runs.get(uid)
            if run is None:
                run = self._admit(pod)
                self.runs[uid] = run
            run.pod = pod
            if pod["metadata"].get("deletionTimestamp"):
                if self._terminate(run, now):
                    self._teardown(run, emit=False)
                    self.runs.pop(uid, None)
                    try:
                        self.store.delete(PODS, run.namespace, run.name)
                    except ApiError:
                        pass
                continue
            if not run.final:
                try:
                    self._advance_pod(run, now)
                except Exception:
                    self.cluster.log_exception(f"kubelet: pod {run.namespace}/{run.name}")
            self._write_status(run, node_names[run.node])
        self._reap(now)

    def kill_pods_on(self, node: str) -> None:
        """The instance is gone: whatever still runs on it dies where it stands (no SIGTERM)."""
        for uid, run in list(self.runs.items()):
            if run.node != node:
                continue
            for c in run.init + run.main:
                self._sigkill(c)
            self._teardown(run, emit=False)
            self.runs.pop(uid, None)

    # -- graceful termination ------------------------------------------------------------------

    def _terminate(self, run: PodRun, now: float) -> bool:
        """A pod being deleted, as the kubelet's killPod does it (pkg/kubelet/kuberuntime/
        kuberuntime_container.go killContainer): per running container a Killing event, the preStop
        hook, then SIGTERM; SIGKILL for whatever still runs when the grace period
        (deletionGracePeriodSeconds, else terminationGracePeriodSeconds) ends. The hook's time counts
        against the grace period. True once every container has stopped."""
        if run.kill_at is None:
            meta, spec = run.pod["metadata"], run.pod["spec"]
            grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30))
            run.kill_at = now + self.options.scaled(float(grace))
            for c in run.init + run.main:
                if c.phase == "running":
                    self._event(run, c, "Normal", "Killing", f"Stopping container {c.name}")
                    c.sigterm_at = min(now + self.options.scaled(prestop_seconds(c.spec)), run.kill_at)
        running = [c for c in run.init + run.main if c.phase == "running"]
        if now >= run.kill_at:
            for c in running:
                self._sigkill(c)
            return True
        for c in running:
            if not c.signalled and now >= (c.sigterm_at or 0):
                c.signalled = True
                if c.process is not None and c.process.poll() is None:
                    _signal_group(c.process, signal.SIGTERM)
                for stand_in in c.stand_ins.values():
                    stand_in.terminate()
        return not any(self._still_running(c) for c in running)

    @staticmethod
    def _still_running(c: ContainerRun) -> bool:
        if not c.signalled:
            return True
        if c.process is not None and c.process.poll() is None:
            return True
        return any(not s.finished.is_set() for s in c.stand_ins.values())

    @staticmethod
    def _sigkill(c: ContainerRun) -> None:
        if c.process is not None and c.process.poll() is None:
            _signal_group(c.process, signal.SIGKILL)
        for stand_in in c.stand_ins.values():
            stand_in.kill()

    def _reap(self, now: float) -> None:
        keep = []
        for proc, kill_at in self._dying:
            if proc.poll() is not None:
                continue
            if now >= kill_at:
                _signal_group(proc, signal.SIGKILL)
                proc.poll()
            keep.append((proc, kill_at))
        self._dying = keep

    # -- admission -----------------------------------------------------------------------------

    def _admit(self, pod: dict) -> PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        init = [ContainerRun(c["name"], c, True, self._kind(c)) for c in spec.get("initContainers") or []]
        main = [ContainerRun(c["name"], c, False, self._kind(c)) for c in spec.get("containers") or []]
        if not init:
            for c in main:
                c.state = {"waiting": {"reason": "ContainerCreating"}}
        run = PodRun(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"], node=spec["nodeName"],
                     pod=pod, pod_dir=self.cluster.root / "pods" / meta["namespace"] / meta["name"],
                     restart_policy=spec.get("restartPolicy") or "Always", init=init, main=main,
                     deployment=self._deployment_of(pod))
        run.admission_error = self._admission_error(pod)
        if run.admission_error:
            run.final = True
        return run

    def _admission_error(self, pod: dict) -> str | None:
        config = self.cluster.device_plugins.config_for_node(pod["spec"]["nodeName"])
        if config is None or not config.fail_requests_greater_than_one:
            return None
        resource = config.resource_name()
        want = pod_requests(pod["spec"]).get(resource, 0)
        if want > 1:
            return (f"Allocate failed due to rpc error: code = Unknown desc = request for '{resource}: {int(want)}' "
                    "too large: maximum request size for shared resources is 1, which is unexpected")
        return None

    def _deployment_of(self, pod: dict) -> tuple[str, str] | None:
        ref = controller_of(pod)
        if not ref or ref.get("kind") != "ReplicaSet":
            return None
        rs = self.store.get(REPLICASETS, pod["metadata"]["namespace"], ref["name"])
        owner = controller_of(rs) if rs else None
        if owner and owner.get("kind") == "Deployment":
            return pod["metadata"]["namespace"], owner["name"]
        return None

    def _kind(self, container: dict) -> str:
        argv = [str(a) for a in list(container.get("command") or []) + list(container.get("args") or [])]
        image = (container.get("image") or "").lower()
        if self.options.tts_image_marker.lower() in image and _starts_tts_server(argv):
            return "tts"
        if argv and PYTHON_COMMAND.match(os.path.basename(str(argv[0]))):
            return "process"
        if self.options.asr_image_marker.lower() in image:
            return "asr"
        if self.options.tts_image_marker.lower() in image:
            return "tts"
        role = container_role(container)
        if role in ("plugin", "config-manager"):
            return "device-plugin" if role == "plugin" else "config-manager"
        return "simulated"  # gpu-feature-discovery among them

    # -- pod progress --------------------------------------------------------------------------

    def _advance_pod(self, run: PodRun, now: float) -> None:
        if not run.mounted:
            if now < run.mount_retry_at:
                return
            problem = self._mount_volumes(run)
            if problem:
                run.mount_retry_at = now + self.options.scaled(2.0, 0.05, 2.0)
                self.cluster.events.record(run.pod, "Warning", "FailedMount", problem, component="kubelet",
                                           host=run.node)
                return
            run.mounted = True
        for c in run.init:
            if c.phase == "done":
                if c.exit_code == 0:
                    continue
                run.final = True  # restartPolicy Never: the pod has failed
                return
            self._advance_container(run, c, now)
            return
        for c in run.main:
            self._advance_container(run, c, now)
        if all(c.phase == "done" for c in run.main):
            run.final = True

    def _advance_container(self, run: PodRun, c: ContainerRun, now: float) -> None:
        if c.phase == "new":
            self._begin(run, c, now)
        elif c.phase == "pulling":
            took = self.cluster.images.pull_progress(run.node, c.spec.get("image", ""), now)
            if took is not None:
                self._pull_finished(run, c, now, took)
        elif c.phase == "pull-error" and now >= c.until:
            image = c.spec.get("image", "")
            c.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
            self._event(run, c, "Normal", "BackOff", f'Back-off pulling image "{image}"')
            self._event(run, c, "Warning", "Failed", "Error: ImagePullBackOff")
            c.phase, c.until = "pull-backoff", now + self._backoff(c.pull_failures - 1)
        elif c.phase == "pull-backoff" and now >= c.until:
            self._start_pull(run, c, now)
        elif c.phase in ("creating", "config-error") and now >= c.until:
            self._launch(run, c, now)
        elif c.phase == "running":
            self._check_running(run, c, now)
        elif c.phase == "exited" and now >= c.until:
            if c.restart_count == 0:  # the first restart is immediate; back-off starts after it
                c.phase, c.until = "backoff", now
                return
            delay = self._backoff(c.restart_count - 1)
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {_seconds_text(self._real_backoff(c.restart_count - 1))} "
                                              f"restarting failed container={c.name} "
                                              f"pod={run.name}_{run.namespace}({run.uid})"}}
            self._event(run, c, "Warning", "BackOff",
                        f"Back-off restarting failed container {c.name} in pod {run.name}_{run.namespace}({run.uid})")
            c.phase, c.until = "backoff", now + delay
        elif c.phase == "backoff" and now >= c.until:
            c.restart_count += 1
            if self._pull_policy(c) == "Always" or self._pull_fault(run):
                self._start_pull(run, c, now)
            else:
                self._event(run, c, "Normal", "Pulled",
                            f'Container image "{c.spec.get("image", "")}" already present on machine')
                c.phase, c.until = "creating", now + self.options.container_start

    def _begin(self, run: PodRun, c: ContainerRun, now: float) -> None:
        c.state = {"waiting": {"reason": "PodInitializing" if c.init or run.init else "ContainerCreating"}}
        image = c.spec.get("image", "")
        present = self.cluster.images.has(run.node, image)
        if self._pull_fault(run) or self._pull_policy(c) == "Always" or not present:
            self._start_pull(run, c, now)
        else:
            self._event(run, c, "Normal", "Pulled", f'Container image "{image}" already present on machine')
            c.image_id = _image_id(image)
            c.phase, c.until = "creating", now + self.options.container_start

    @staticmethod
    def _pull_policy(c: ContainerRun) -> str:
        policy = c.spec.get("imagePullPolicy")
        if policy:
            return policy
        image = c.spec.get("image", "")
        name = image.rsplit("/", 1)[-1]
        return "Always" if "@" not in image and (":" not in name or name.endswith(":latest")) else "IfNotPresent"

    def _pull_fault(self, run: PodRun) -> bool:
        return run.deployment is not None and run.deployment in self.cluster.faults.image_pull

    def _start_pull(self, run: PodRun, c: ContainerRun, now: float) -> None:
        self._event(run, c, "Normal", "Pulling", f'Pulling image "{c.spec.get("image", "")}"')
        self.cluster.images.start_pull(run.node, c.spec.get("image", ""), now)
        c.phase = "pulling"

    def _pull_finished(self, run: PodRun, c: ContainerRun, now: float, took: float) -> None:
        """The pull ended after `took` real-world seconds (sandbox/cluster/images.py decides how long)."""
        image = c.spec.get("image", "")
        if self._pull_fault(run):
            c.pull_failures += 1
            reference = image if ("/" in image.split(":")[0]) else f"docker.io/library/{image}"
            message = (f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack '
                       f'image "{reference}": failed to resolve reference "{reference}": {reference}: not found')
            self._event(run, c, "Warning", "Failed", message)
            self._event(run, c, "Warning", "Failed", "Error: ErrImagePull")
            c.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
            c.phase, c.until = "pull-error", now + self.options.scaled(1.0, 0.02, 1.0)
            return
        c.pull_failures = 0
        self.cluster.images.pulled(run.node, image)
        c.image_id = _image_id(image)
        size = int(self.cluster.images.size_of(image)) if self.options.pull_by_size else len(image) * 1048576
        self._event(run, c, "Normal", "Pulled",
                    f'Successfully pulled image "{image}" in {took:.3f}s ({took:.3f}s including waiting). '
                    f"Image size: {size} bytes.")
        c.phase, c.until = "creating", now + self.options.container_start

    # -- starting a container ------------------------------------------------------------------

    def _image_user(self, image: str) -> str:
        """The image's USER: `appuser` for the TTS image (groxaxo/Qwen3-TTS-Openai-Fastapi's Dockerfile),
        none (root) for the others, the ASR image included."""
        return "appuser" if self.options.tts_image_marker.lower() in image.lower() else ""

    def _verify_run_as_non_root(self, pod: dict, spec: dict) -> None:
        pod_context = (pod.get("spec") or {}).get("securityContext") or {}
        own = spec.get("securityContext") or {}
        non_root = own.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if not non_root:
            return
        meta = pod["metadata"]
        where = f'(pod: "{meta["name"]}_{meta["namespace"]}({meta.get("uid", "")})", container: {spec["name"]})'
        user = own.get("runAsUser", pod_context.get("runAsUser"))
        if user is not None:
            if user == 0:
                raise ContainerConfigError(f"container's runAsUser breaks non-root policy {where}")
            return
        image_user = self._image_user(spec.get("image") or "")
        if image_user.isdigit():
            if int(image_user) == 0:
                raise ContainerConfigError(f"container has runAsNonRoot and image will run as root {where}")
        elif image_user:
            raise ContainerConfigError(f"container has runAsNonRoot and image has non-numeric user ({image_user}), "
                                       f"cannot verify user is non-root {where}")
        else:  # no USER: the image runs as uid 0
            raise ContainerConfigError(f"container has runAsNonRoot and image will run as root {where}")

    def _launch(self, run: PodRun, c: ContainerRun, now: float) -> None:
        self._refresh_config_volumes(run)
        try:
            self._verify_run_as_non_root(run.pod, c.spec)
            c.mounts = self._mounts(run, c)
            # Service env vars first: the container's own env overrides them, as upstream.
            c.raw_env = {**self.cluster.kube_proxy.service_env(run.namespace, run.node),
                         **self._gpu_env(run, c), **self._resolve_env(run.pod, c.spec)}
            c.env = {k: self._rewrite(v, c.mounts) for k, v in c.raw_env.items()}
        except ContainerConfigError as err:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)}}
            self._event(run, c, "Warning", "Failed", f"Error: {err}")
            c.phase, c.until = "config-error", now + self.options.scaled(10.0, 0.1, 2.0)
            return
        c.container_id = "containerd://" + hex_id(64)
        self._event(run, c, "Normal", "Created", f"Created container: {c.name}")
        log_path = self.cluster.pod_log_path(run.namespace, run.name, c.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists() and log_path.stat().st_size:
            log_path.replace(log_path.with_suffix(".previous.log"))
        c.log_file = open(log_path, "ab")
        c.exit_code, c.crash_at, c.ready, c.exit_with = None, None, False, 1
        c.started = not (c.spec.get("startupProbe")) or c.kind in ("simulated", "device-plugin", "config-manager")
        c.state = {"running": {"startedAt": now_iso()}}
        c.phase = "running"
        self._event(run, c, "Normal", "Started", f"Started container {c.name}")
        crash = not c.init and run.deployment is not None and run.deployment in self.cluster.faults.crash_loop
        if crash:
            self._log(c, "sandbox fault crash-loop: the container exits with code 1")
            c.crash_at = now + self.options.scaled(2.0, 0.05, 1.0)
        elif c.kind == "process":
            self._start_process(run, c)
        elif c.kind in ("asr", "tts"):
            self._start_speech(run, c, now)
        elif c.kind == "device-plugin":
            self._start_device_plugin(run, c, now)
        elif c.kind == "config-manager":
            self._run_config_manager(run, c, now)
        else:
            self._log(c, f"sandbox: container {c.name} of image {c.spec.get('image', '')} is running (simulated)")
        c.probes = self._probes_for(c, now)

    def _start_process(self, run: PodRun, c: ContainerRun) -> None:
        argv = [str(a) for a in list(c.spec.get("command") or []) + list(c.spec.get("args") or [])]
        argv = [self.options.python] + [self._expand(self._rewrite(a, c.mounts), c.env) for a in argv[1:]]
        env = self._process_env(run, c)
        cwd = run.pod_dir
        working_dir = c.spec.get("workingDir")
        if working_dir:
            mapped = self._rewrite(working_dir, c.mounts)
            if mapped != working_dir:
                cwd = Path(mapped)
        cwd.mkdir(parents=True, exist_ok=True)
        identity = self._process_identity(run, c)
        switch_user = identity is not None and os.geteuid() == 0
        if switch_user:
            # Only root can switch users; an unprivileged sandbox runs every container as itself.
            for own in (run.pod_dir / "home", run.pod_dir / "tmp"):
                os.chown(own, *identity)
            argv = [self.options.python, str(Path(__file__).with_name("run_as.py")), str(identity[0]),
                    str(identity[1]), "--"] + argv
        warm = None if switch_user else warm_args(argv[1:])
        try:
            if warm is not None:  # a fork of the warm interpreter: no interpreter start (warm_python.py)
                c.process = self._warm_python.start(warm, str(cwd), env, c.log_file.fileno())
            else:
                c.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=c.log_file,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            self._log(c, f"exec {argv[0]}: {err}")
            c.crash_at = time.monotonic()
            return
        self._wake_on_exit(c.process)
        with self._ports_lock:
            ports = self._ports.setdefault((run.namespace, run.name), {})
            for port in c.spec.get("ports") or []:
                ports[int(port["containerPort"])] = int(port["containerPort"])

    def _wake_on_exit(self, process: subprocess.Popen) -> None:
        """The next pass sees the exit when it happens, not a tick later (an init container's exit
        starts the next one)."""
        def wait() -> None:
            process.wait()
            self.cluster.wake()
        threading.Thread(target=wait, name=f"wait-{process.pid}", daemon=True).start()

    @staticmethod
    def _gpu_env(run: PodRun, c: ContainerRun) -> dict[str, str]:
        """What the NVIDIA device plugin's Allocate answer sets for a container given a GPU
        (NVIDIA/k8s-device-plugin: the visible devices by env var, its default strategy)."""
        gpus = container_requests(c.spec).get("nvidia.com/gpu", 0)
        return {"NVIDIA_VISIBLE_DEVICES": "0"} if gpus else {}

    def _process_identity(self, run: PodRun, c: ContainerRun) -> tuple[int, int] | None:
        """Who the container's process is: the PosixUser of an EFS access point it mounts (EFS
        enforces it on every NFS operation, whatever the pod asks), else its effective
        securityContext runAsUser/runAsGroup (container over pod), else None (the sandbox's user)."""
        mounted = {m["name"] for m in c.spec.get("volumeMounts") or []}
        for volume in run.pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim or volume["name"] not in mounted:
                continue
            pvc = self.store.get(PVCS, run.namespace, claim)
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = self.store.get(PVS, None, pv_name) if pv_name else None
            posix = self.cluster.storage.posix_user(pv) if pv else None
            if posix is not None:
                return posix
        pod_ctx = run.pod["spec"].get("securityContext") or {}
        ctx = c.spec.get("securityContext") or {}
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if uid is None:
            return None
        return int(uid), int(ctx.get("runAsGroup", pod_ctx.get("runAsGroup", uid)))

    def _process_env(self, run: PodRun, c: ContainerRun) -> dict[str, str]:
        home, tmp = run.pod_dir / "home", run.pod_dir / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp),
               "HOSTNAME": run.name, "LANG": "C.UTF-8"}
        env.update(c.env)
        env.update(self._seeder_time_scale(c))
        return env

    def _seeder_time_scale(self, c: ContainerRun) -> dict[str, str]:
        """The seeder's own waits on the sandbox's time scale (files/seed_models.py's test-only
        variables): its 1 s settle before the manifest, and its copies from the node's disk."""
        argv = [str(a) for a in list(c.spec.get("command") or []) + list(c.spec.get("args") or [])]
        if "--repo" not in argv[:-1] or not (self.options.fast or self.options.time_scale):
            return {}
        # A fast sandbox lives a second as a hundredth; the floor keeps a margin over a disk's tick.
        settle = max(0.02, 0.01 if self.options.fast else self.options.sandbox_seconds(1.0))
        return {"QWEN3_SEED_TEST_SETTLE_SECONDS": repr(settle), **self._local_copy_pace(argv, c)}

    def _local_copy_pace(self, argv: list[str], c: ContainerRun) -> dict[str, str]:
        """Under a time scale, a seeder copying a model from the node's disk (`--local-source`, the
        image cache's data volume) is paced to the real model's size at the profile's disk -> EFS
        rate (files/seed_models.py honours QWEN3_SEED_TEST_COPY_SECONDS_PER_BYTE): the sandbox's
        repos are scaled down, and nothing else slows a local read."""
        if not self.options.time_scale or "--local-source" not in argv[:-1]:
            return {}
        source = Path(self._rewrite(argv[argv.index("--local-source") + 1], c.mounts))
        served = sum(f.stat().st_size for f in source.rglob("*") if f.is_file()) if source.is_dir() else 0
        if not served:
            return {}
        real = profile.model_bytes(argv[argv.index("--repo") + 1])
        seconds = real / profile.local_copy_bandwidth() / self.options.time_scale
        return {"QWEN3_SEED_TEST_COPY_SECONDS_PER_BYTE": repr(seconds / served)}

    def _start_speech(self, run: PodRun, c: ContainerRun, now: float) -> None:
        args = [str(a) for a in (list(c.spec.get("command") or [])[1:] + list(c.spec.get("args") or []))]
        model_arg = next((a for a in args if not a.startswith("-")), None)
        # The directory the server would load: ASR's model argument, TTS's TTS_MODEL_NAME.
        container_model = model_arg if c.kind == "asr" else (c.raw_env.get("TTS_MODEL_NAME")
                                                              or c.raw_env.get("TTS_MODEL_ID"))
        model_dir = None
        if container_model and container_model.startswith("/"):
            local = self._rewrite(container_model, c.mounts)
            # Not under any mount: the path does not exist in the container either.
            model_dir = Path(local) if local != container_model else run.pod_dir / "rootfs" / container_model.lstrip("/")
        ports = [int(p["containerPort"]) for p in c.spec.get("ports") or []] or [None]
        log_path = self.cluster.pod_log_path(run.namespace, run.name, c.name)
        for port in ports:
            try:
                stand_in = start_speech_stand_in(c.kind, model_dir=model_dir, load_seconds=self.options.load_seconds(c.kind),
                                                 args=args, env=dict(c.raw_env), log_path=log_path,
                                                 time_scale=self.options.scaled(1.0), gpu=self._node_gpu(run),
                                                 gpu_memory=self._node_gpu_memory(run), owner=f"{run.uid}/{c.name}")
            except StandInFailed as err:
                self._log(c, str(err))
                c.crash_at = now
                return
            c.stand_ins[port] = stand_in
            if port is not None:
                with self._ports_lock:
                    self._ports.setdefault((run.namespace, run.name), {})[port] = stand_in.port

    def _node_gpu_memory(self, run: PodRun) -> GpuMemory | None:
        """The memory of the GPU on the pod's node, for containers that were given the GPU."""
        gpu = self._node_gpu(run)
        if gpu is None or not _wants_gpu(run.pod):
            return None
        return self.gpu_memory.setdefault(run.node, GpuMemory(GIB_OF_GPU.get(gpu[0], T4_GIB)))

    def _node_gpu(self, run: PodRun) -> tuple[str, float] | None:
        """(GPU name, compute capability) of the pod's node, from its instance family; None without a GPU."""
        labels = ((self.store.get(NODES, None, run.node) or {}).get("metadata") or {}).get("labels") or {}
        family = labels.get("node.kubernetes.io/instance-type", "").split(".")[0]
        return GPU_OF_FAMILY.get(family)

    def _start_device_plugin(self, run: PodRun, c: ContainerRun, now: float) -> None:
        self._log(c, "I0000 main.go] Starting FS watcher.")
        self._log(c, "I0000 main.go] Starting OS watcher.")
        self._log(c, "I0000 main.go] Starting Plugins.")
        self._log(c, "I0000 main.go] Loading configuration.")
        path = config_file_of(c.spec, c.raw_env)
        local = Path(self._rewrite(path, c.mounts)) if path else None
        if local is not None and not local.is_absolute():
            local = None
        try:
            config = load_plugin_config(path, local if (local is not None and str(local) != path) else None)
        except PluginConfigError as err:
            self._log(c, f"E0000 main.go] {plugin_error_line(err)}")
            c.crash_at = now
            return
        physical = self.cluster.device_plugins.physical_gpus(self.store.get(NODES, None, run.node) or
                                                             {"metadata": {"name": run.node}})
        self._log(c, f"I0000 main.go] Running with config: sharing strategy {config.strategy}, "
                     f"replicas {config.replicas}")
        if not physical:
            self._log(c, "I0000 factory.go] No devices found. Waiting indefinitely.")
            return
        self.cluster.device_plugins.register(run.node, run.uid, config)
        c.registered = True
        self._log(c, f"I0000 server.go] Registered device plugin for '{config.resource_name()}' with Kubelet "
                     f"({physical} GPU x {config.replicas})")

    def _run_config_manager(self, run: PodRun, c: ContainerRun, now: float) -> None:
        """config-manager: link the config the node label selects; the init one exits, the sidecar watches."""
        labels = ((self.store.get(NODES, None, run.node) or {}).get("metadata") or {}).get("labels") or {}
        source = Path(self._rewrite(c.raw_env.get("CONFIG_FILE_SRCDIR", "/available-configs"), c.mounts))
        destination = Path(self._rewrite(c.raw_env.get("CONFIG_FILE_DST", "/config/config.yaml"), c.mounts))
        try:
            chosen = run_config_manager(c.raw_env, labels, source, destination)
        except PluginConfigError as err:
            self._log(c, f"E0000 main.go] Error: {err}")
            c.crash_at = now
            return
        self._log(c, f"I0000 main.go] Updating to config: {chosen or '(empty)'}")
        c.selected = (labels.get(c.raw_env.get("NODE_LABEL", "")), chosen)
        if (c.raw_env.get("ONESHOT") or "").lower() == "true":
            c.crash_at, c.exit_with = now, 0

    def _watch_config_label(self, run: PodRun, c: ContainerRun, now: float) -> None:
        """The sidecar: a changed node label re-selects and SIGHUPs the plugin, which reloads its config."""
        labels = ((self.store.get(NODES, None, run.node) or {}).get("metadata") or {}).get("labels") or {}
        if c.selected is None or labels.get(c.raw_env.get("NODE_LABEL", "")) == c.selected[0]:
            return
        self._refresh_config_volumes(run)
        before = c.selected
        self._run_config_manager(run, c, now)
        if c.crash_at is not None or c.selected == before or (c.raw_env.get("SEND_SIGNAL") or "").lower() != "true":
            return
        for plugin in run.main:
            if plugin.kind == "device-plugin" and plugin.phase == "running":
                self._log(plugin, "I0000 main.go] Received signal \"hangup\", restarting.")
                if plugin.registered:
                    self.cluster.device_plugins.unregister(run.uid)
                    plugin.registered = False
                self._start_device_plugin(run, plugin, now)

    # -- a running container -------------------------------------------------------------------

    def _check_running(self, run: PodRun, c: ContainerRun, now: float) -> None:
        if c.crash_at is not None:
            if now >= c.crash_at:
                self._terminated(run, c, c.exit_with, now)
            return
        if c.kind == "config-manager":
            self._watch_config_label(run, c, now)
        if c.process is not None:
            code = c.process.poll()
            if code is not None:
                self._terminated(run, c, code if code >= 0 else 128 - code, now)
                return
        if any(getattr(s, "exit_message", None) for s in c.stand_ins.values()):
            self._terminated(run, c, 1, now)  # the server exited after start (its log has why)
            return
        if not c.init:
            self._run_probes(run, c, now)

    def _terminated(self, run: PodRun, c: ContainerRun, code: int, now: float, reason: str | None = None) -> None:
        started = (c.state.get("running") or {}).get("startedAt")
        self._stop_container(run, c)
        terminated = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                      "startedAt": started, "finishedAt": now_iso(), "containerID": c.container_id}
        if code != 0:
            last = _last_line(self.cluster.pod_log_path(run.namespace, run.name, c.name))
            if last:
                terminated["message"] = last
        c.state = {"terminated": terminated}
        # A completed init container reports ready, as the kubelet does.
        c.exit_code, c.ready, c.started = code, c.init and code == 0, False
        c.probes = {}
        policy = run.restart_policy
        restart = policy == "Always" and not c.init or (policy in ("Always", "OnFailure") and code != 0)
        if restart:
            c.last_state = {"terminated": terminated}
            c.phase, c.until = "exited", now + self.options.scaled(1.0, 0.02, 0.5)
        else:
            c.phase = "done"

    def _stop_container(self, run: PodRun, c: ContainerRun) -> None:
        if c.process is not None:
            if c.process.poll() is None:
                _signal_group(c.process, signal.SIGTERM)
                grace = float(run.pod["spec"].get("terminationGracePeriodSeconds", 30))
                self._dying.append((c.process, time.monotonic() + self.options.scaled(grace, 0.2, 5.0)))
            c.process = None
        for stand_in in c.stand_ins.values():
            try:
                stand_in.stop()
            except Exception:
                self.cluster.log_exception(f"stopping a stand-in of {run.namespace}/{run.name}")
        if c.stand_ins:
            with self._ports_lock:
                ports = self._ports.get((run.namespace, run.name)) or {}
                for port in c.stand_ins:
                    if port is not None:
                        ports.pop(port, None)
        c.stand_ins = {}
        if c.registered:
            self.cluster.device_plugins.unregister(run.uid)
            c.registered = False
        if c.log_file is not None:
            try:
                c.log_file.close()
            except OSError:
                pass
            c.log_file = None
        for probe in c.probes.values():
            if probe.future is not None:
                probe.future.cancel()

    def _teardown(self, run: PodRun, emit: bool = True) -> None:
        for c in run.init + run.main:
            if c.phase == "running" and emit:
                self._event(run, c, "Normal", "Killing", f"Stopping container {c.name}")
            self._stop_container(run, c)
        with self._ports_lock:
            self._ports.pop((run.namespace, run.name), None)
        if run.pod_dir.exists() and not any(r.pod_dir == run.pod_dir for r in self.runs.values() if r is not run):
            shutil.rmtree(run.pod_dir, ignore_errors=True)

    # -- probes --------------------------------------------------------------------------------

    def _probes_for(self, c: ContainerRun, now: float) -> dict[str, Probe]:
        if c.init:
            return {}
        out = {}
        for kind, key in (("startup", "startupProbe"), ("readiness", "readinessProbe")):
            spec = c.spec.get(key)
            if spec:
                delay = self.options.scaled(float(spec.get("initialDelaySeconds", 0)), 0.0, 5.0)
                out[kind] = Probe(kind, spec, next_at=now + delay)
        return out

    def _run_probes(self, run: PodRun, c: ContainerRun, now: float) -> None:
        if c.kind in ("simulated", "device-plugin", "config-manager"):
            c.started, c.ready = True, True
            return
        startup, readiness = c.probes.get("startup"), c.probes.get("readiness")
        if not c.started:
            if startup is None:
                c.started = True
            else:
                result = self._probe_step(run, c, startup, now)
                if result is True:
                    c.started = True
                elif result is False and startup.failures >= int(startup.spec.get("failureThreshold", 3)):
                    self._event(run, c, "Normal", "Killing",
                                f"Container {c.name} failed startup probe, will be restarted")
                    self._terminated(run, c, 137, now)
                    return
        if not c.started:
            return
        if readiness is None:
            c.ready = True
            return
        result = self._probe_step(run, c, readiness, now)
        if result is True and readiness.successes >= int(readiness.spec.get("successThreshold", 1)):
            c.ready = True
        elif result is False and readiness.failures >= int(readiness.spec.get("failureThreshold", 3)):
            c.ready = False

    def _probe_step(self, run: PodRun, c: ContainerRun, probe: Probe, now: float) -> bool | None:
        """Start or collect one probe run: True/False when a result arrived, None otherwise."""
        if probe.future is not None:
            if not probe.future.done():
                return None
            try:
                ok, message = probe.future.result()
            except Exception as err:  # a probe that raised counts as failed
                ok, message = False, str(err)
            probe.future = None
            if ok:
                probe.successes, probe.failures = probe.successes + 1, 0
            else:
                probe.failures, probe.successes = probe.failures + 1, 0
                self._event(run, c, "Warning", "Unhealthy",
                            f"{probe.kind.capitalize()} probe failed: {message}".strip())
            return ok
        if now >= probe.next_at:
            # Fast until the container is ready; then at most once a second (an exec probe is a
            # Python process, and nothing waits on a probe that keeps passing).
            settled = probe.kind == "readiness" and c.ready
            period = float(probe.spec.get("periodSeconds", 10))
            probe.next_at = now + self.options.scaled(period, 1.0 if settled else 0.02, 2.0)
            try:
                probe.future = self._probes.submit(self._probe_call(run, c, probe.spec))
            except RuntimeError:  # executor shut down: the cluster is stopping
                return None
            probe.future.add_done_callback(lambda _: self.cluster.wake())  # its result, at once
        return None

    def _probe_call(self, run: PodRun, c: ContainerRun, spec: dict):
        # The kubelet enforces timeoutSeconds for every probe kind (exec too, since 1.20), on the
        # sandbox's clock: a server that accepts but does not answer fails its probe just as fast.
        # At least a second: in fast mode a busy machine must not fail a probe the cluster would pass.
        timeout = self.options.scaled(float(spec.get("timeoutSeconds", 1)), 1.0)
        if spec.get("httpGet"):
            get = spec["httpGet"]
            port = self._probe_port(run, c, get.get("port"))
            path = get.get("path") or "/"
            if port is None:
                return lambda: (True, "")

            def http_probe() -> tuple[bool, str]:
                url = f"http://127.0.0.1:{port}{path}"
                try:
                    with _NO_PROXY_OPENER.open(url, timeout=timeout) as response:
                        return 200 <= response.status < 400, f"HTTP probe failed with statuscode: {response.status}"
                except urllib.error.HTTPError as err:
                    return False, f"HTTP probe failed with statuscode: {err.code}"
                except (urllib.error.URLError, OSError) as err:
                    return False, f'Get "{url}": {getattr(err, "reason", err)}'
            return http_probe
        if spec.get("tcpSocket"):
            port = self._probe_port(run, c, spec["tcpSocket"].get("port"))
            if port is None:
                return lambda: (True, "")

            def tcp_probe() -> tuple[bool, str]:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                        return True, ""
                except OSError as err:
                    return False, f"dial tcp 127.0.0.1:{port}: {err}"
            return tcp_probe
        if spec.get("exec"):
            argv = [str(a) for a in spec["exec"].get("command") or []]
            if not argv or not PYTHON_COMMAND.match(os.path.basename(argv[0])):
                return lambda: (True, "")
            argv = [self.options.python] + [self._rewrite(a, c.mounts) for a in argv[1:]]
            env = self._process_env(run, c)
            # The probe runs "inside" the container: values naming a declared port point at the stand-in.
            with self._ports_lock:
                ports = dict(self._ports.get((run.namespace, run.name)) or {})
            for key, value in list(env.items()):
                if value.isdigit() and int(value) in ports:
                    env[key] = str(ports[int(value)])
            cwd = run.pod_dir

            # A fork of a warm interpreter (warm_python.py): how long this machine takes to start
            # Python and import the standard library is no part of the simulated world. In fast
            # mode the check's own work gets at least EXEC_FAST_FLOOR on a busy machine.
            command = shlex.join(spec["exec"].get("command") or [])
            limit = max(timeout, EXEC_FAST_FLOOR if self.options.fast else 0.0)

            def exec_probe() -> tuple[bool, str]:
                warm = warm_args(argv[1:])
                if warm is not None:
                    code, output = self._warm_python.run(warm, str(cwd), env, limit)
                else:  # interpreter options a fork cannot honour: a fresh interpreter
                    try:
                        done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                              timeout=limit)
                        code, output = done.returncode, (done.stdout + done.stderr).decode(errors="replace").strip()
                    except subprocess.TimeoutExpired:
                        code, output = None, ""
                if code is None:
                    return False, f"command timed out: {command} timed out after {spec.get('timeoutSeconds', 1)}s"
                return code == 0, output
            return exec_probe
        return lambda: (True, "")

    def _probe_port(self, run: PodRun, c: ContainerRun, port: Any) -> int | None:
        container_port = _container_port(c.spec, port)
        if container_port is None:
            return None
        if c.kind in ("asr", "tts"):
            stand_in = c.stand_ins.get(container_port)
            return stand_in.port if stand_in is not None else None
        if c.kind == "process":
            return container_port
        return None

    # -- volumes, env, paths -------------------------------------------------------------------

    def _mount_volumes(self, run: PodRun) -> str | None:
        volumes_dir = run.pod_dir / "volumes"
        for volume in run.pod["spec"].get("volumes") or []:
            name = volume["name"]
            try:
                run.volumes[name] = self._volume_dir(run, volume, volumes_dir / name)
            except ContainerConfigError as err:
                return f'MountVolume.SetUp failed for volume "{name}" : {err}'
        return None

    def _volume_dir(self, run: PodRun, volume: dict, target: Path) -> Path:
        ns = run.namespace
        if volume.get("persistentVolumeClaim"):
            claim = volume["persistentVolumeClaim"]["claimName"]
            pvc = self.store.get(PVCS, ns, claim)
            if pvc is None:
                raise ContainerConfigError(f'persistentvolumeclaim "{claim}" not found')
            pv_name = (pvc.get("spec") or {}).get("volumeName")
            pv = self.store.get(PVS, None, pv_name) if pv_name else None
            if pv is None:
                raise ContainerConfigError(f'persistentvolumeclaim "{claim}" is not bound')
            return self.cluster.storage.local_dir(pv)
        if volume.get("configMap") or volume.get("secret") or volume.get("projected") or volume.get("downwardAPI"):
            self._materialise(run, volume, target)
            return target
        if volume.get("hostPath"):
            path = self.cluster.root / "hostpath" / run.node / volume["hostPath"].get("path", "").lstrip("/")
            path.mkdir(parents=True, exist_ok=True)
            return path
        target.mkdir(parents=True, exist_ok=True)  # emptyDir and anything else: a plain directory
        target.chmod(0o777)  # as the kubelet makes emptyDirs: writable whoever the container runs as
        return target

    def _refresh_config_volumes(self, run: PodRun) -> None:
        """ConfigMap/Secret contents as of this container start (the kubelet syncs them)."""
        for volume in run.pod["spec"].get("volumes") or []:
            if volume["name"] in run.volumes and (volume.get("configMap") or volume.get("secret")
                                                  or volume.get("projected")):
                try:
                    self._materialise(run, volume, run.volumes[volume["name"]])
                except ContainerConfigError:
                    pass  # keep the files of the last successful mount

    def _materialise(self, run: PodRun, volume: dict, target: Path) -> None:
        files: dict[str, tuple[bytes, int]] = {}
        if volume.get("configMap"):
            self._source_files(run, volume["configMap"], "configMap", files, volume["configMap"].get("defaultMode"))
        elif volume.get("secret"):
            self._source_files(run, volume["secret"], "secret", files, volume["secret"].get("defaultMode"))
        elif volume.get("projected"):
            mode = volume["projected"].get("defaultMode")
            for source in volume["projected"].get("sources") or []:
                if source.get("configMap"):
                    self._source_files(run, source["configMap"], "configMap", files, mode)
                elif source.get("secret"):
                    self._source_files(run, source["secret"], "secret", files, mode)
                elif source.get("serviceAccountToken"):
                    files[source["serviceAccountToken"].get("path", "token")] = (b"sandbox-service-account-token", 0o600)
                elif source.get("downwardAPI"):
                    self._downward_files(run, source["downwardAPI"], files)
        elif volume.get("downwardAPI"):
            self._downward_files(run, volume["downwardAPI"], files)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        for rel, (data, mode) in files.items():
            parts = [p for p in rel.split("/") if p and p not in (".", "..")]
            if not parts:
                continue
            path = target.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, mode)

    def _source_files(self, run: PodRun, source: dict, kind: str, files: dict, default_mode: int | None) -> None:
        name = source.get("name") or source.get("secretName")
        resource = CONFIGMAPS if kind == "configMap" else SECRETS
        obj = self.store.get(resource, run.namespace, name) if name else None
        label = "configmap" if kind == "configMap" else "secret"
        if obj is None:
            if source.get("optional"):
                return
            raise ContainerConfigError(f'{label} "{name}" not found')
        data: dict[str, bytes] = {}
        if kind == "configMap":
            data.update({k: str(v).encode() for k, v in (obj.get("data") or {}).items()})
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        else:
            data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
            data.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
        mode = default_mode if default_mode is not None else (0o600 if kind == "secret" else 0o644)
        items = source.get("items")
        if items:
            for item in items:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    raise ContainerConfigError(f"{label} references non-existent config key: {item['key']}")
                files[item.get("path") or item["key"]] = (data[item["key"]], item.get("mode", mode))
        else:
            for key, value in data.items():
                files[key] = (value, mode)

    def _downward_files(self, run: PodRun, source: dict, files: dict) -> None:
        meta = run.pod["metadata"]
        for item in source.get("items") or []:
            path = (item.get("fieldRef") or {}).get("fieldPath", "")
            value = _field_value(run.pod, path)
            if path in ("metadata.labels", "metadata.annotations"):
                mapping = meta.get(path.split(".")[1]) or {}
                value = "\n".join(f'{k}="{v}"' for k, v in sorted(mapping.items()))
            files[item["path"]] = (str(value or "").encode(), item.get("mode", 0o644))

    def _mounts(self, run: PodRun, c: ContainerRun) -> list[tuple[str, str]]:
        mounts = []
        for mount in c.spec.get("volumeMounts") or []:
            base = run.volumes.get(mount["name"])
            if base is None:
                continue
            local = Path(base)
            if mount.get("subPath"):
                local = local.joinpath(*[p for p in mount["subPath"].split("/") if p and p != ".."])
                if not local.exists():  # the kubelet creates a missing subPath as a directory
                    local.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"], str(local)))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        return mounts

    @staticmethod
    def _rewrite(value: str, mounts: list[tuple[str, str]]) -> str:
        """A container path under a mount, as the path of the local directory standing in for it."""
        if not isinstance(value, str):
            return value
        if value.startswith("-") and "=" in value:
            flag, _, rest = value.partition("=")
            rewritten = Kubelet._rewrite(rest, mounts)
            return f"{flag}={rewritten}" if rewritten != rest else value
        for mount_path, local in mounts:
            base = mount_path.rstrip("/") or "/"
            if value == base or value.startswith(base + "/") or (base == "/" and value.startswith("/")):
                return local + value[len(base):] if base != "/" else local + value
        return value

    @staticmethod
    def _expand(value: str, env: dict[str, str]) -> str:
        """$(VAR) references in command and args, as the kubelet expands them."""
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)

    def _resolve_env(self, pod: dict, container: dict) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for key, ref in (("configMapRef", CONFIGMAPS), ("secretRef", SECRETS)):
                if not source.get(key):
                    continue
                name = source[key].get("name")
                obj = self.store.get(ref, ns, name)
                if obj is None:
                    if source[key].get("optional"):
                        continue
                    raise ContainerConfigError(f'{"configmap" if ref is CONFIGMAPS else "secret"} "{name}" not found')
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode(errors="replace") if ref is SECRETS else str(v)
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = self._expand(str(item.get("value", "")), env)
                continue
            value_from = item["valueFrom"]
            if value_from.get("secretKeyRef") or value_from.get("configMapKeyRef"):
                is_secret = bool(value_from.get("secretKeyRef"))
                ref = value_from.get("secretKeyRef") or value_from.get("configMapKeyRef")
                obj = self.store.get(SECRETS if is_secret else CONFIGMAPS, ns, ref.get("name"))
                label = "secret" if is_secret else "configmap"
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError(f'{label} "{ref.get("name")}" not found')
                data = obj.get("data") or {}
                if ref.get("key") not in data:
                    if ref.get("optional"):
                        continue
                    kind = "Secret" if is_secret else "ConfigMap"
                    raise ContainerConfigError(f"couldn't find key {ref.get('key')} in {kind} {ns}/{ref.get('name')}")
                raw = data[ref["key"]]
                env[name] = base64.b64decode(raw).decode(errors="replace") if is_secret else str(raw)
            elif value_from.get("fieldRef"):
                env[name] = str(_field_value(pod, value_from["fieldRef"].get("fieldPath", "")) or "")
            elif value_from.get("resourceFieldRef"):
                ref = value_from["resourceFieldRef"]
                value = container_requests(container).get(ref.get("resource", "").split(".", 1)[-1], 0)
                env[name] = str(int(value))
        return env

    # -- status --------------------------------------------------------------------------------

    def _write_status(self, run: PodRun, node: dict) -> None:
        phase, reason, message = self._phase(run)
        all_init_done = all(c.phase == "done" and c.exit_code == 0 for c in run.init)
        unready = [c.name for c in run.main if not c.ready]
        incomplete = [c.name for c in run.init if not (c.phase == "done" and c.exit_code == 0)]
        host_ip = node_internal_ip(node)
        statuses = [self._container_status(c) for c in run.main]
        init_statuses = [self._container_status(c) for c in run.init]
        sandbox_ready = run.mounted and phase not in ("Succeeded", "Failed")

        def write(obj: dict) -> None:
            status = obj.setdefault("status", {})
            conds = status.get("conditions")
            conds = merge_condition(conds, "PodReadyToStartContainers", "True" if sandbox_ready else "False",
                                    probe_time=True)
            if all_init_done:
                conds = merge_condition(conds, "Initialized", "True", probe_time=True)
            else:
                conds = merge_condition(conds, "Initialized", "False", "ContainersNotInitialized",
                                        f"containers with incomplete status: [{' '.join(incomplete)}]", probe_time=True)
            if phase in ("Succeeded", "Failed"):
                why = "PodCompleted" if phase == "Succeeded" else "PodFailed"
                conds = merge_condition(conds, "ContainersReady", "False", why, probe_time=True)
                conds = merge_condition(conds, "Ready", "False", why, probe_time=True)
            elif unready:
                text = f"containers with unready status: [{' '.join(unready)}]"
                conds = merge_condition(conds, "ContainersReady", "False", "ContainersNotReady", text, probe_time=True)
                conds = merge_condition(conds, "Ready", "False", "ContainersNotReady", text, probe_time=True)
            else:
                conds = merge_condition(conds, "ContainersReady", "True", probe_time=True)
                conds = merge_condition(conds, "Ready", "True", probe_time=True)
            order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
            conds.sort(key=lambda cnd: order.index(cnd["type"]) if cnd["type"] in order else len(order))
            status["conditions"] = conds
            status["phase"] = phase
            status["hostIP"] = host_ip
            status["hostIPs"] = [{"ip": host_ip}]
            status["podIP"] = "127.0.0.1"
            status["podIPs"] = [{"ip": "127.0.0.1"}]
            status["startTime"] = run.started_at
            status["containerStatuses"] = statuses
            if init_statuses:
                status["initContainerStatuses"] = init_statuses
            status["qosClass"] = qos_class(obj["spec"])
            if reason:
                status["reason"], status["message"] = reason, message
            else:
                status.pop("reason", None)
                status.pop("message", None)

        current = run.pod.get("status") or {}
        candidate = {"spec": run.pod.get("spec") or {}, "status": copy.deepcopy(current)}
        write(candidate)
        if candidate["status"] != current:
            self.store.mutate(PODS, run.namespace, run.name, write)

    def _phase(self, run: PodRun) -> tuple[str, str | None, str | None]:
        if run.admission_error:
            return "Failed", "UnexpectedAdmissionError", run.admission_error
        if any(c.phase == "done" and c.exit_code != 0 for c in run.init):
            return "Failed", None, None
        if not all(c.phase == "done" for c in run.init):
            return "Pending", None, None
        if run.main and all(c.phase == "done" for c in run.main):
            if all(c.exit_code == 0 for c in run.main):
                return "Succeeded", None, None
            return "Failed", None, None
        if any(c.phase in ("running", "exited", "backoff") or c.restart_count for c in run.main):
            return "Running", None, None
        return "Pending", None, None

    @staticmethod
    def _container_status(c: ContainerRun) -> dict:
        status = {"name": c.name, "image": c.spec.get("image", ""), "imageID": c.image_id,
                  "ready": c.ready, "restartCount": c.restart_count, "started": c.started and "running" in c.state,
                  "state": c.state, "lastState": c.last_state}
        if c.container_id:
            status["containerID"] = c.container_id
        return status

    # -- helpers -------------------------------------------------------------------------------

    def _event(self, run: PodRun, c: ContainerRun, type_: str, reason: str, message: str) -> None:
        self.cluster.events.record(run.pod, type_, reason, message, component="kubelet", host=run.node,
                                   field_path=c.field_path)

    def _log(self, c: ContainerRun, line: str) -> None:
        if c.log_file is not None:
            c.log_file.write((line + "\n").encode())
            c.log_file.flush()

    def _real_backoff(self, restarts: int) -> float:
        return min(10.0 * (2 ** max(restarts, 0)), 300.0)

    def _backoff(self, restarts: int) -> float:
        return self.options.scaled(self._real_backoff(restarts), 0.05)


TTS_KEY_APP = "tts_api_key:app"  # files/tts_api_key.py, the TTS app behind the API key (as in sandbox.speech)


def _starts_tts_server(argv: list[str]) -> bool:
    """Whether a TTS-image command starts its server: the image's own `python -m api.main`, or the
    uvicorn CLI on `api.main:app` (the way to pass uvicorn options such as --timeout-keep-alive) or on
    files/tts_api_key.py's wrapper of it."""
    if not argv or not PYTHON_COMMAND.match(os.path.basename(argv[0])):
        return False
    rest = argv[1:]
    return rest[:2] == ["-m", "api.main"] or (rest[:2] == ["-m", "uvicorn"] and bool({"api.main:app", TTS_KEY_APP} & set(rest[2:])))


def _container_port(spec: dict, port: Any) -> int | None:
    if port is None:
        return None
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in spec.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    return None


def _field_value(pod: dict, path: str) -> Any:
    if path.startswith("metadata.labels['") or path.startswith("metadata.annotations['"):
        which, _, key = path.partition("['")
        return (pod["metadata"].get(which.split(".")[1]) or {}).get(key.rstrip("']"))
    special = {"status.podIP": "127.0.0.1", "status.podIPs": "127.0.0.1"}
    if path in special:
        return special[path]
    cur: Any = pod
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def _image_id(image: str) -> str:
    import hashlib

    name = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image.split("@")[0]
    return f"{name}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:1024] if lines else ""


def _seconds_text(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the process leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def prestop_seconds(container: dict) -> float:
    """How long a container's preStop hook holds off SIGTERM: the `sleep` action (Kubernetes 1.29+)
    or an exec hook that sleeps (`sleep 15`, also through a shell), the form the ALB controller's
    users put there; any other hook is taken as instant."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return float((hook.get("sleep") or {}).get("seconds", 0))
    command = " ".join(map(str, (hook.get("exec") or {}).get("command") or []))
    found = re.search(r"(?:^|[\s;&|/])sleep\s+(\d+(?:\.\d+)?)\b", command)
    return float(found.group(1)) if found else 0.0


def _wants_gpu(pod: dict) -> bool:
    """A container asks for a GPU (whole or time-sliced share): the device plugin gives it the device."""
    return any(key.startswith("nvidia.com/gpu") for c in pod["spec"].get("containers") or []
               for key in ((c.get("resources") or {}).get("limits") or {}))
