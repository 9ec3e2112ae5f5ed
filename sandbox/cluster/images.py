"""The images on each node: what a node has on disk, and how long a pull takes there.

The one place that decides pulls (the kubelet asks it; a node image cache preloads it):
- `has(node, image)`: the image is on the node's disk (pulled before, or preloaded); references are
  compared as containerd stores them (`normalized`).
- `preload(node, images)`: the node booted with these on its data volume (an image-cache snapshot).
- `forget(node)`: the node left the cluster; its disk and images with it.
- `start_pull(node, image, policy)` / `pull_progress(node, image, now)`: a pull, which the kubelet
  polls until it reports the seconds it took.

With a time scale (ClusterOptions.time_scale) a pull moves the image's bytes (profile.image_bytes)
at the node's pull bandwidth (profile.pull_bandwidth), and pulls running at once on one node share
that bandwidth: EKS's kubelet pulls in parallel (awslabs/amazon-eks-ami
nodeadm/internal/kubelet/config.go sets `SerializeImagePulls: false` and no maxParallelImagePulls),
so two pulls contend for the node's network and disk; pulls on different nodes do not. Asking
again for an image being pulled on that node joins that pull (containerd fetches content once).
An image already on the node with pull policy Always costs one manifest check, not its bytes.
Without a time scale (`--fast` and the default mode) every pull takes `ClusterOptions.image_pull`,
as before.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from . import profile

if TYPE_CHECKING:
    from .options import ClusterOptions


@dataclass
class Pull:
    image: str
    started: float
    remaining: float  # real-world bytes still to move (by size), or wall seconds left (fixed delay)
    size: float  # real-world bytes the pull moves (0 for a manifest check)
    finished: float | None = None
    waiters: int = 1
    by_size: bool = True
    last: float = field(default=0.0)


def normalized(image: str) -> str:
    """The reference containerd stores: Docker Hub names get their registry (and library/) spelt out and
    a missing tag is `latest` (containerd's reference/docker ParseDockerRef), so `qwenllm/x` and
    `docker.io/qwenllm/x:latest` are one image on a node."""
    first, slash, _ = image.partition("/")
    if not (slash and ("." in first or ":" in first or first == "localhost")):
        image = f"docker.io/{image}" if slash else f"docker.io/library/{image}"
    last = image.rsplit("/", 1)[-1]
    return image if "@" in last or ":" in last else f"{image}:latest"


class ImageStore:
    """Per-node image cache and pull timing for the simulated cluster."""

    def __init__(self, options: "ClusterOptions"):
        self.options = options
        self._on_disk: dict[str, set[str]] = {}
        self._pulls: dict[str, dict[str, Pull]] = {}  # node -> image -> the pull in flight (or just done)
        self._lock = threading.Lock()

    # -- what a node holds ---------------------------------------------------------------------

    def has(self, node: str, image: str) -> bool:
        with self._lock:
            return normalized(image) in self._on_disk.get(node, set())

    def preload(self, node: str, images: Iterable[str]) -> None:
        """The node boots with `images` already on its data volume: no pull for them there."""
        with self._lock:
            self._on_disk.setdefault(node, set()).update(normalized(i) for i in images)

    def forget(self, node: str) -> None:
        """The node is gone: its images and any pull on it too."""
        with self._lock:
            self._on_disk.pop(node, None)
            self._pulls.pop(node, None)

    def images_on(self, node: str) -> set[str]:
        with self._lock:
            return set(self._on_disk.get(node, set()))

    def size_of(self, image: str) -> float:
        """Real-world bytes of `image` (what the kubelet's Pulled event reports)."""
        return profile.image_bytes(image, self.options.asr_image_marker, self.options.tts_image_marker)

    # -- pulls ---------------------------------------------------------------------------------

    def start_pull(self, node: str, image: str, now: float | None = None) -> None:
        """A container on `node` needs `image` pulled (its policy said so, or it is missing)."""
        now = time.monotonic() if now is None else now
        image = normalized(image)
        with self._lock:
            self._advance(node, now)
            pulls = self._pulls.setdefault(node, {})
            running = pulls.get(image)
            if running is not None and running.finished is None:
                running.waiters += 1  # a second pod asking for the same image waits for the same bytes
                return
            if not self.options.pull_by_size:
                pulls[image] = Pull(image, now, self.options.image_pull, 0.0, by_size=False, last=now)
                return
            present = image in self._on_disk.get(node, set())
            size = 0.0 if present else self.size_of(image)
            # A present image costs a manifest check; the bytes of a missing one move at the node's bandwidth.
            check = self.options.profiled("manifest_check")
            pulls[image] = Pull(image, now, size, size, last=now + check)

    def pull_progress(self, node: str, image: str, now: float | None = None) -> float | None:
        """None while the pull runs; once done, the real-world seconds it took (as the Pulled event says)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._advance(node, now)
            pull = (self._pulls.get(node) or {}).get(normalized(image))
            if pull is None or pull.finished is None:
                return None
            took = pull.finished - pull.started
            return took * (self.options.time_scale or 1.0)

    def pulled(self, node: str, image: str) -> None:
        """The pull succeeded: the image stays on the node (kubelet's IfNotPresent finds it next time)."""
        with self._lock:
            self._on_disk.setdefault(node, set()).add(normalized(image))

    def pulling(self, node: str) -> list[str]:
        """Images being pulled on `node` now."""
        with self._lock:
            return [i for i, p in (self._pulls.get(node) or {}).items() if p.finished is None]

    def next_finish(self, now: float) -> float | None:
        """When the soonest pull now running ends if no other pull starts meanwhile (for the loop's wake)."""
        bandwidth = profile.pull_bandwidth() * (self.options.time_scale or 1.0)
        ends = []
        with self._lock:
            for node, pulls in self._pulls.items():
                self._advance(node, now)
                running = [p for p in pulls.values() if p.finished is None]
                sized = [p for p in running if p.by_size]
                ends += [p.started + p.remaining for p in running if not p.by_size]
                if sized:  # at `now`, the ones moving share the bandwidth
                    ends.append(max(now, min(p.last for p in sized))
                                + min(p.remaining for p in sized) * len(sized) / bandwidth)
        return min(ends) if ends else None

    def _advance(self, node: str, now: float) -> None:
        """Move the node's running pulls forward to `now`, sharing its bandwidth among them."""
        pulls = [p for p in (self._pulls.get(node) or {}).values() if p.finished is None]
        for pull in [p for p in pulls if not p.by_size]:
            if now - pull.started >= pull.remaining:
                pull.finished = pull.started + pull.remaining
        sized = [p for p in pulls if p.by_size]
        bandwidth = profile.pull_bandwidth() * (self.options.time_scale or 1.0)  # bytes per wall second
        # Step from event to event (a pull finishing frees bandwidth for the others).
        while sized:
            moving = [p for p in sized if p.last < now]
            if not moving:
                break
            start = min(p.last for p in moving)
            active = [p for p in moving if p.last <= start]
            share = bandwidth / len(active)
            next_start = min([p.last for p in moving if p.last > start] + [now])
            soonest = min(p.remaining / share for p in active)
            step = min(next_start - start, soonest)
            for pull in active:
                pull.remaining -= share * step
                pull.last = start + step
                if pull.remaining <= 1e-6:
                    pull.finished = pull.last
            sized = [p for p in sized if p.finished is None]
