"""One sandbox: the Hub, AWS (moto), the Kubernetes API server and the cluster, wired together.

`Sandbox(root, options).start()` brings the pieces up in dependency order and writes what
clients need under ROOT: `kubeconfig`, `env` (shell exports) and `state.json` (ports, URLs,
ids; its presence with `"ready": true` means "running"). `stop()` takes everything down and
removes `state.json`. The CLI (`python -m sandbox up`) runs one of these in a background
process; tests can run one in-process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shlex
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .kubeapi.resources import RESOURCES, by_key
from .kubeapi.server import KubeApiServer
from .kubeapi.store import Store
from .kubeapi.tls import generate_tls

logger = logging.getLogger("sandbox")

CLUSTER_NAME = "qwen3-sandbox"
REGION = "us-west-2"
ACCOUNT_ID = "123456789012"
BASE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Fault names each component answers (a component may also list its own in a FAULTS attribute).
COMPONENT_FAULTS = {
    "cluster": ("spot-interruption", "restart-pods", "image-pull-failure", "crash-loop"),
    "hub": ("hub-cut", "hub-429", "hub-corrupt", "hub-new-revision"),
    "aws": (),
}
# `--without` names -> SandboxOptions fields.
WITHOUT = {
    "gpu-node": "gpu_node", "device-plugin": "device_plugin", "efs-csi-driver": "efs_csi_driver",
    "alb-controller": "alb_controller", "karpenter-nodepool": "karpenter_nodepool",
    "efs-file-system": "efs_file_system", "ecr-image": "ecr_image", "sqs-queue": "sqs_queue",
    "aws": "with_aws", "hub": "with_hub", "cluster": "with_cluster",
}
# `--with` names -> SandboxOptions fields: add-ons a new EKS cluster does not have.
WITH = {"prometheus-operator": "prometheus_operator"}


@dataclass
class SandboxOptions:
    """What runs and what the account holds at start.

    + fast: scale every cluster delay down (tests, demos)
    + time_scale: live the real-world profile (sandbox/cluster/profile.py) this many times faster
      than life: the cluster's pulls, launches, loads and ALB, and the Hub's download throughput
    + with_aws / with_hub / with_cluster: run that component (the API server always runs)
    + gpu_node, device_plugin, efs_csi_driver, alb_controller, karpenter_nodepool: the guide's
      cluster prerequisites, each can be left out (passed to ClusterOptions)
    + device_plugin_setup: who installed the device plugin: static | helm | gpu-operator | bottlerocket
    + prometheus_operator: serve the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor); off,
      as on a new EKS cluster
    + efs_file_system, ecr_image, sqs_queue: AWS prerequisites (passed to AwsOptions)
    + token_ttl: seconds an EKS token is accepted after it was signed (EKS: 900)
    + hub_repo_sizes: HubServer repo_sizes ({repo_id: bytes or {path: bytes}}); None = small defaults
    + cluster_overrides: more ClusterOptions fields, e.g. {"image_pull": 0.5, "model_load": 2}
    + kube_port: fixed API server port (0 = a free one)
    """

    fast: bool = False
    time_scale: float | None = None
    with_aws: bool = True
    with_hub: bool = True
    with_cluster: bool = True
    gpu_node: bool = True
    device_plugin: bool = True
    efs_csi_driver: bool = True
    alb_controller: bool = True
    karpenter_nodepool: bool = True
    device_plugin_setup: str = "static"
    prometheus_operator: bool = False
    efs_file_system: bool = True
    ecr_image: bool = True
    sqs_queue: bool = True
    token_ttl: int = 900
    hub_repo_sizes: dict | None = None
    cluster_overrides: dict = field(default_factory=dict)
    kube_port: int = 0

    def __post_init__(self) -> None:
        if self.time_scale is not None and (not isinstance(self.time_scale, (int, float)) or self.time_scale <= 0):
            raise ValueError(f"time_scale={self.time_scale!r}: give a number > 0 (--time-scale 100 runs 100 times "
                             "faster than life)")
        if self.time_scale is not None and self.fast:
            raise ValueError(f"time_scale={self.time_scale!r} with fast: choose one (--fast keeps its own short "
                             "delays; --time-scale runs the real-world profile)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> "SandboxOptions":
        """Options from a dict; unknown keys are an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sandbox option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def without(self, names: list[str]) -> "SandboxOptions":
        """A copy with the `--without` pieces turned off (gpu-node, efs-file-system, hub, ...)."""
        changes = {}
        for name in names:
            if name not in WITHOUT:
                raise ValueError(f"--without {name!r} is not a piece of the sandbox; choose from {', '.join(WITHOUT)}")
            changes[WITHOUT[name]] = False
        return dataclasses.replace(self, **changes)


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (/proc/PID/stat field 22), or None without /proc:
    with the pid it names one process for good, since a recycled pid starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


class Sandbox:
    """A running sandbox under `root`. Use as a context manager or call start()/stop()."""

    def __init__(self, root: Path | str, options: SandboxOptions | None = None):
        self.root = Path(root).resolve()
        self.options = options or SandboxOptions()
        self.store: Store | None = None
        self.api: KubeApiServer | None = None
        self.aws: Any = None
        self.hub: Any = None
        self.cluster: Any = None
        self.hub_url: str | None = None
        self.timings: dict[str, float] = {}
        self.state: dict[str, Any] = {}
        self._alb_groups: dict[str, dict[int, str]] = {}
        self._state_lock = threading.Lock()

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Sandbox":
        """Start hub, AWS, the API server and the cluster (each as its option says); write kubeconfig/env/state."""
        began = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_components()
        except BaseException:
            self.stop()
            raise
        self.timings["total_seconds"] = time.perf_counter() - began
        self._write_client_files()
        logger.info("sandbox ready in %.2fs at %s (%s)", self.timings["total_seconds"], self.api.url,
                    ", ".join(f"{k}={v:.2f}s" for k, v in self.timings.items()))
        return self

    def _timed(self, name: str, began: float) -> None:
        self.timings[name] = round(time.perf_counter() - began, 3)

    def _start_components(self) -> None:
        opts = self.options
        self.store = Store()
        if opts.with_hub:
            began = time.perf_counter()
            from .hub import HubServer

            self.hub = HubServer(self.root, repo_sizes=opts.hub_repo_sizes, time_scale=opts.time_scale)
            self.hub_url = self.hub.start()
            self._timed("hub_seconds", began)

        began = time.perf_counter()
        tls = generate_tls(self.root / "tls", cluster_name=CLUSTER_NAME)
        self.api = KubeApiServer(self.root, self.store, tls=tls, admin_token=secrets.token_urlsafe(32),
                                 port=opts.kube_port)
        if opts.prometheus_operator:
            self.api.addons = frozenset({"prometheus-operator"})
        self._timed("api_bind_seconds", began)

        if opts.with_aws:
            began = time.perf_counter()
            from .aws import AwsOptions, SandboxAws

            self.aws = SandboxAws(self.root, cluster_name=CLUSTER_NAME, region=REGION, options=AwsOptions(
                efs_file_system=opts.efs_file_system, ecr_image=opts.ecr_image, sqs_queue=opts.sqs_queue,
                token_ttl_seconds=opts.token_ttl))
            self.aws.start(self.api.url, tls.ca_pem_b64, tls)
            self.api.aws = self.aws
            self.aws.model_source = self.hub  # what an image-cache build instance downloads models from
            self._timed("aws_seconds", began)
            self.timings.update({f"aws_{k}": round(v, 3) for k, v in getattr(self.aws, "timings", {}).items()})

        self.api.state_provider = lambda: self.state
        self.api.start()

        began = time.perf_counter()
        if opts.with_cluster:
            from .cluster import Cluster
            from .cluster.options import ClusterOptions

            self.cluster = Cluster(self.store, self.root, options=self._cluster_options(ClusterOptions),
                                   registry=self.api.registry, aws=self.aws)
            self.cluster.alb.on_listeners = self._alb_listeners_changed
            alb = self.cluster.alb
            # What the AWS console's target groups show: each ALB's targets and their health.
            self.api.status_provider = lambda: {"gpu_memory": self.cluster.kubelet.gpu_memory_report(),
                                                "alb_targets": {group: alb.target_health(group)
                                                                for group in list(alb.balancers)}}
            self.cluster.seed_initial_state()
        self._ensure_base_namespaces()
        if self.cluster is not None:
            self.cluster.start()
            self.api.cluster = self.cluster
        self._timed("cluster_seconds", began)
        self._register_faults()
        # Build the schema validators (about 0.1 s) in the background, before the first client write needs them.
        from .kubeapi.validation import warm_up

        threading.Thread(target=warm_up, args=(RESOURCES,), name="schema-warm-up", daemon=True).start()

    def _cluster_options(self, options_class: type) -> Any:
        opts = self.options
        wanted = {"fast": opts.fast, "time_scale": opts.time_scale, "gpu_node": opts.gpu_node, "device_plugin": opts.device_plugin,
                  "efs_csi_driver": opts.efs_csi_driver, "alb_controller": opts.alb_controller,
                  "karpenter_nodepool": opts.karpenter_nodepool, "device_plugin_setup": opts.device_plugin_setup,
                  **opts.cluster_overrides}
        known = {f.name for f in dataclasses.fields(options_class)}
        unknown = sorted(set(opts.cluster_overrides) - known)
        if unknown:
            raise ValueError(f"cluster_overrides {unknown} are not ClusterOptions fields; known: {sorted(known)}")
        return options_class(**{k: v for k, v in wanted.items() if k in known})

    def _ensure_base_namespaces(self) -> None:
        namespaces = by_key("namespaces")
        for name in BASE_NAMESPACES:
            if self.store.get(namespaces, None, name) is None:
                self.api.registry.create(namespaces, None, {"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": name}}, manager="kube-apiserver")

    def _register_faults(self) -> None:
        components = {"cluster": self.cluster, "hub": self.hub, "aws": self.aws}
        for kind, component in components.items():
            if component is None:
                continue
            for name in getattr(component, "FAULTS", None) or COMPONENT_FAULTS[kind]:
                self.api.register_fault(name, lambda fault, params, c=component: c.inject(fault, params))

        def clear(_: str, params: dict) -> dict:
            cleared = {"api": self.api.faults.inject("clear", params)}
            for kind, component in components.items():
                if component is not None:
                    cleared[kind] = component.inject("clear", params)
            return cleared

        self.api.register_fault("clear", clear)

    def stop(self) -> None:
        """Stop everything that started (in reverse order); safe to call twice."""
        took: dict[str, float] = {}

        def stop_one(name: str) -> None:
            component = getattr(self, name)
            if component is None:
                return
            began = time.perf_counter()
            try:
                component.stop()
            except Exception:  # keep stopping the others
                logger.exception("stopping the sandbox's %s failed", name)
            took[name] = time.perf_counter() - began
            setattr(self, name, None)

        stop_one("cluster")  # first: its controllers call the others
        # The servers do not depend on each other: stop them side by side (each waits for its own threads).
        stoppers = [threading.Thread(target=stop_one, args=(name,), daemon=True) for name in ("api", "aws", "hub")]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout=30)
        if took:
            logger.info("stopped: %s", ", ".join(f"{k} {v:.2f}s" for k, v in took.items()))
        if self.state and self.state_path.exists():
            try:
                if json.loads(self.state_path.read_text()).get("pid") == os.getpid():
                    self.state_path.unlink()
            except (OSError, ValueError):
                pass
        self.state = {}

    # -- what clients read -------------------------------------------------------------------

    def _write_client_files(self) -> None:
        assert self.api is not None
        arn = f"arn:aws:eks:{REGION}:{ACCOUNT_ID}:cluster/{CLUSTER_NAME}"
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": arn, "cluster": {"server": self.api.url,
                                                   "certificate-authority-data": self.api.tls.ca_pem_b64}}],
            "users": [{"name": "sandbox-admin", "user": {"token": self.api.admin_token}}],
            "contexts": [{"name": arn, "context": {"cluster": arn, "user": "sandbox-admin"}}],
            "current-context": arn,
        }
        _write_private(self.kubeconfig, yaml.safe_dump(kubeconfig, sort_keys=False))

        aws_url = self.aws.endpoint_url if self.aws is not None else None
        exports = {"KUBECONFIG": str(self.kubeconfig), "QWEN3_SANDBOX_DIR": str(self.root)}
        if aws_url:
            exports.update(AWS_ENDPOINT_URL=aws_url)
        exports.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
                       AWS_REGION=REGION)
        if self.hub_url:
            exports["HF_ENDPOINT"] = self.hub_url
        _write_private(self.root / "env", "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))

        facts = dict(self.aws.facts) if self.aws is not None else {}
        self.state = {
            "ready": True,
            "pid": os.getpid(),
            "pid_start_ticks": process_start_ticks(os.getpid()),
            "root": str(self.root),
            "started_at": _now_iso(),
            "startup_seconds": round(self.timings.get("total_seconds", 0.0), 3),
            "timings": self.timings,
            "cluster_name": CLUSTER_NAME,
            "cluster_arn": arn,
            "region": REGION,
            "account_id": facts.get("account_id", ACCOUNT_ID),
            "kube_url": self.api.url,
            "kube_port": self.api.port,
            "kubeconfig": str(self.kubeconfig),
            "ca_file": str(self.api.tls.ca_cert_path),
            "admin_token": self.api.admin_token,
            "control_url": f"{self.api.url}/sandbox/v1",
            "aws_endpoint_url": aws_url,
            "hub_url": self.hub_url,
            "audit_log": str(self.root / "audit.jsonl"),
            "server_log": str(self.root / "server.log"),
            "components": {"api": True, "aws": self.aws is not None, "hub": self.hub is not None,
                           "cluster": self.cluster is not None},
            "faults": sorted(self.api.fault_handlers),
            "options": dataclasses.asdict(self.options),
            **{k: v for k, v in facts.items() if k not in ("account_id",)},
        }
        self._write_state()

    def _alb_listeners_changed(self, groups: dict[str, dict[int, str]]) -> None:
        """The ALB stand-in opened or closed listeners: clients find them in state.json."""
        with self._state_lock:
            self._alb_groups = groups
        if self.state:
            self._write_state()

    def _write_state(self) -> None:
        # `alb_listeners` is what an operator uses instead of the ALB's DNS name: listen port -> URL
        # (all groups; `alb_groups` keeps them apart).
        with self._state_lock:
            groups = {group: {str(port): url for port, url in ports.items()} for group, ports in self._alb_groups.items()}
            self.state["alb_groups"] = groups
            self.state["alb_listeners"] = {port: url for ports in groups.values() for port, url in ports.items()}
            _write_private(self.state_path, json.dumps(self.state, indent=2) + "\n")
