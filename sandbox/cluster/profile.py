"""How long things take on AWS: every real-world duration that decides the minutes to service.

Each figure is data with its source; the sandbox runs the middle value divided by a time scale
(`python -m sandbox up --time-scale 100` runs 100 times faster than life; `--fast` ignores this
file and keeps its own arbitrary delays). Change a figure here and every component that lives it
(kubelet pulls, Karpenter launches, model loads, the Hub, the ALB) follows: this is the one place.

Sources:
- GUIDE: /work/shared/reference/qwen3-speech-deployment-guide.md, step 4 ("Karpenter 拉起 g4dn.xlarge Spot
  实例 (~1-3 分钟)", "拉取 qwenllm/qwen3-asr:latest 镜像 (~7 分钟，14.4GB)", "initContainer 下载模型到 EFS
  (~3-5 分钟)", "主容器加载模型 + CUDA graph 编译 (~3-5 分钟)"), image sizes ("~14.4GB", "~6.2GB"),
  troubleshooting ("health 返回 initializing → 模型还在加载，等待 1-2 分钟").
- FACTS: /work/shared/reference/upstream-facts.md (model sizes: ASR ~4.7 GB, TTS ~4.5 GB; Spot notice 2 minutes).
- ISSUE13: `issues show 13` (TTS image ~3 minutes to pull; a new ALB active in 2 to 3 minutes).
- KARPENTER: https://karpenter.sh/docs/reference/settings/ (BATCH_IDLE_DURATION 1s, BATCH_MAX_DURATION 10s).
- EFS: docs.aws.amazon.com/efs/latest/ug/performance.html and Amazon Web Services in Action (3rd ed.,
  9.5.2: a single client cannot transfer more than 500 MiB/s to EFS).
- EBS: docs.aws.amazon.com, EC2 API reference CreateVolume (gp3 `Throughput`, 125 MiB/s at least and by
  default) and the EBS user guide's "Initialize Amazon EBS volumes" (volumes made from snapshots).
- EKS-AMI: awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go (`SerializeImagePulls: false`,
  no maxParallelImagePulls): pulls on one node run in parallel and share its bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1_000_000_000
LEVELS = ("low", "middle", "high")


@dataclass(frozen=True)
class Figure:
    """One real-world quantity: its range as the source gives it (low = the quick end), unit, source."""

    low: float
    middle: float
    high: float
    unit: str
    source: str

    def at(self, level: str = "middle") -> float:
        if level not in LEVELS:
            raise ValueError(f"profile level {level!r}: choose from {', '.join(LEVELS)}")
        return getattr(self, level)


def _one(value: float, unit: str, source: str) -> Figure:
    """A figure the source gives as one value, not a range."""
    return Figure(value, value, value, unit, source)


FIGURES: dict[str, Figure] = {
    # Nodes
    "gpu_node_launch": Figure(60, 120, 180, "s", "GUIDE step 4: Karpenter brings up a g4dn.xlarge Spot instance in ~1-3 min"),
    "karpenter_batch": Figure(1, 1, 10, "s", "KARPENTER settings: a batch ends 1 s after the last pending pod "
                                             "(BATCH_IDLE_DURATION), at most 10 s (BATCH_MAX_DURATION)"),
    "spot_notice": _one(120, "s", "FACTS / Karpenter docs: a Spot interruption warning comes 2 minutes ahead"),
    # Images: sizes, and the ASR pull that gives the node's pull bandwidth (pull + unpack)
    "asr_image_bytes": _one(14.4 * GB, "B", "GUIDE: qwenllm/qwen3-asr:latest ~14.4GB"),
    "asr_image_pull": _one(7 * 60, "s", "GUIDE step 4: the ASR image pulls in ~7 min (34 MB/s: the TTS image's "
                                        "6.2 GB then takes ~3 min, as ISSUE13 says)"),
    "tts_image_bytes": _one(6.2 * GB, "B", "GUIDE: the TTS image ~6.2GB"),
    "device_plugin_image_bytes": _one(0.15 * GB, "B", "estimate: nvcr.io/nvidia/k8s-device-plugin is ~150 MB "
                                                      "compressed (not checked; off every critical path here)"),
    "other_image_bytes": _one(0.05 * GB, "B", "estimate: a small utility image (busybox, python-slim layers)"),
    "manifest_check": _one(1.0, "s", "estimate: one registry round trip when the image is already on the node "
                                     "(pull policy Always)"),
    "container_start": _one(1.0, "s", "estimate: containerd create + start, about a second"),
    # Models: Hub download into EFS; ASR's 4.7 GB in 3-5 min gives the Hub -> EFS bandwidth
    "asr_model_bytes": _one(4.7 * GB, "B", "FACTS: Qwen3-ASR-1.7B weights ~4.7 GB"),
    "tts_model_bytes": _one(4.5 * GB, "B", "FACTS: Qwen3-TTS-12Hz-1.7B-CustomVoice ~4.5 GB with speech_tokenizer/"),
    "asr_model_download": Figure(180, 240, 300, "s", "GUIDE step 4: the init container downloads the model "
                                                     "into EFS in ~3-5 min"),
    "efs_client_write": _one(500 * 1024 * 1024, "B/s", "EFS: a single client moves at most 500 MiB/s (Amazon Web "
                                                       "Services in Action 3rd ed. 9.5.2; see the EFS performance page), "
                                                       "far above the Hub's pace"),
    "node_disk_read": _one(125 * 1024 * 1024, "B/s", "EBS: a gp3 volume without a throughput setting (the image "
                                                     "cache's data volume) moves 125 MiB/s, gp3's baseline "
                                                     "(EC2 API CreateVolume `Throughput`: 125 to 1000 MiB/s, default "
                                                     "125). Optimistic for a volume fresh from a snapshot: its blocks "
                                                     "come from S3 on first read at a fluctuating rate (EBS user guide, "
                                                     "\"Initialize Amazon EBS volumes\")"),
    "asr_model_load": Figure(180, 240, 300, "s", "GUIDE step 4: model load + CUDA graph capture ~3-5 min"),
    "tts_model_load": Figure(60, 90, 120, "s", "GUIDE troubleshooting: health says initializing for 1-2 min"),
    # Load balancer
    "alb_provisioning": Figure(120, 150, 180, "s", "ISSUE13: a new ALB becomes active in 2-3 min (ELBv2 state "
                                                   "`provisioning` until `active`)"),
}


def value(name: str, level: str = "middle") -> float:
    """The figure `name` at `level` (low = the quick end of the range, high = the slow end)."""
    figure = FIGURES.get(name)
    if figure is None:
        raise KeyError(f"profile figure {name!r}: known figures are {', '.join(sorted(FIGURES))}")
    return figure.at(level)


def pull_bandwidth(level: str = "middle") -> float:
    """Bytes per second a node pulls and unpacks, shared by the pulls running on it at once."""
    return value("asr_image_bytes", level) / value("asr_image_pull", level)


def model_download_bandwidth(level: str = "middle") -> float:
    """Bytes per second from the Hub into EFS, shared by the downloads running at once: the guide's
    end-to-end figure, unless EFS's per-client write limit is lower."""
    return min(value("asr_model_bytes", level) / value("asr_model_download", level), value("efs_client_write", level))


def local_copy_bandwidth(level: str = "middle") -> float:
    """Bytes per second a model moves from a node's own disk (the image cache's data volume) into EFS:
    the slower of the disk's read and EFS's per-client write."""
    return min(value("node_disk_read", level), value("efs_client_write", level))


def model_bytes(repo: str, level: str = "middle") -> float:
    """The real-world size of a model repo, by the ASR/TTS in its name."""
    return value("asr_model_bytes" if "asr" in repo.lower() else "tts_model_bytes", level)


def image_bytes(image: str, asr_marker: str = "qwen3-asr", tts_marker: str = "qwen3-tts",
                level: str = "middle") -> float:
    """The real-world size of `image` (by the same markers that give it a speech stand-in)."""
    lowered = image.lower()
    if asr_marker.lower() in lowered:
        return value("asr_image_bytes", level)
    if tts_marker.lower() in lowered:
        return value("tts_image_bytes", level)
    if "k8s-device-plugin" in lowered:
        return value("device_plugin_image_bytes", level)
    return value("other_image_bytes", level)


def table(level: str = "middle") -> list[tuple[str, str, str]]:
    """(name, value at `level` in readable units, source) for printing."""
    rows = []
    for name, figure in FIGURES.items():
        amount = value(name, level)
        if figure.unit == "B":
            text = f"{amount / GB:.2f} GB"
        elif figure.unit == "B/s":
            text = f"{amount / 1e6:.0f} MB/s"
        else:
            text = f"{amount:g} s" if figure.low == figure.high else f"{amount:g} s ({figure.low:g}-{figure.high:g})"
        rows.append((name, text, figure.source))
    return rows
