"""What every step of a run shares: the validated inventory, the connection, what was found.

Filled once per host while the deploy is prepared (connect + preflight), read by the steps.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from kubeops.client import Kube
from qwen_speech.settings import Settings


class DeployBlocked(PyinfraError):
    """The run stops before anything is written; the message says what to fix."""


@dataclass
class DevicePlugin:
    """Who runs the device plugin, and where time-slicing is configured through that owner.

    owner: static (its DaemonSet, patched), helm (the chart's config ConfigMap + node label),
    gpu-operator (the ClusterPolicy), bottlerocket (the EC2NodeClass user data).
    """
    namespace: str
    name: str
    container: str
    owner: str = "static"
    config_map: str | None = None  # helm: the chart's ConfigMap config-manager reads

    def describe(self) -> str:
        where = {"static": "DaemonSet", "helm": "Helm release, DaemonSet", "gpu-operator": "GPU Operator ClusterPolicy",
                 "bottlerocket": "Bottlerocket nodes of EC2NodeClass"}[self.owner]
        return f"{where} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass
class Model:
    key: str  # "asr" or "tts"
    repo: str
    revision: str
    commit: str
    path: str  # inside the pods, e.g. /models/Qwen3-ASR-1.7B
    # Where the GPU nodes have this commit on their own disk (the image-cache snapshot holds it), or None.
    node_path: str | None = None


@dataclass
class DeployContext:
    settings: Settings
    kube: Kube
    aws: Any = None  # qwen_speech.aws session when AWS is used
    device_plugin: DevicePlugin | None = None
    gpu_nodes: list[dict] = field(default_factory=list)
    file_system_id: str | None = None
    efs_action: str | None = None  # given, found, would-create (qwen_speech.aws.resolve_efs)
    tts_image: str | None = None
    asr_image: str | None = None  # asr_image, or the digest asr_ecr_repository's tag points at
    models: dict[str, Model] = field(default_factory=dict)
    # The Hub's answers for each model's revision, asked in the background (models.look_up_commits).
    hub_commits: dict[str, Future] = field(default_factory=dict)
    # The ConfigMap qwen3-speech-models as read while preparing (resolve_models), then as step 4 read it.
    recorded_models: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    image_cache: Any = None  # the gpu_image_cache_snapshot_id snapshot as preflight found it (image_cache.CacheSnapshot)
    storage_class_changes: list[str] = field(default_factory=list)  # live vs wanted, when it must be replaced
    # Step 4's Jobs this run started, by model key, and whether the model was re-seeded because its
    # pods' model guard had found it damaged (their pods are restarted once it is whole again).
    seeding: dict[str, bool] = field(default_factory=dict)

    def wait_for(self, step: str) -> bool | str:
        """`wait` of a step's k8s.applied: at once in the guide's order, else later, by k8s.awaited(step)."""
        return True if self.settings.deploy_order == "guide" else step

    @property
    def asr_pod_image(self) -> str:
        """The image the ASR pods run: the digest asr_ecr_repository's tag points at, else asr_image."""
        return self.asr_image or self.settings.asr_image

    @property
    def seed_image(self) -> str:
        """What seeding, audit and purge Jobs run: seed_image, else the TTS image (huggingface_hub and
        Python 3 as in the ASR image, at less than half its size; the GPU node pulls it anyway)."""
        return self.settings.seed_image or self.tts_image or self.asr_pod_image


_CONTEXTS: dict[str, DeployContext] = {}


def set_context(host, context: DeployContext) -> DeployContext:
    _CONTEXTS[host.name] = context
    return context


def context_of(host) -> DeployContext:
    try:
        return _CONTEXTS[host.name]
    except KeyError:
        raise DeployBlocked(f"host {host.name!r} has no deploy context: tasks.connect.connect() must run first") from None


def host_tag() -> str:
    """`[<host>] ` for a line printed inside a pyinfra host's deploy, as pyinfra names its own lines;
    empty for the same code run by `python -m qwen_speech status|drift`, where there is no host."""
    from pyinfra import host
    from pyinfra.context import ctx_host

    return f"[{host.name}] " if ctx_host.isset() else ""
