"""The images each node holds on its data volume, besides what its kubelet pulled.

A node booted from an EC2NodeClass whose data volume comes from an image-cache snapshot has the
snapshot's images before any pod asks (Bottlerocket keeps containerd's images on /dev/xvdb);
the kubelet then reports them "already present on machine" instead of pulling. The images go
with the node.
"""

from __future__ import annotations

import threading


def normalized(image: str) -> str:
    """The reference containerd stores: Docker Hub names get their registry (and library/) spelt out
    (containerd's reference/docker ParseDockerRef), so `qwenllm/x` and `docker.io/qwenllm/x` are one image."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if slash else f"docker.io/library/{image}"


class NodeImages:
    """node name -> the image references on its data volume at boot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, set[str]] = {}

    def has(self, node: str, image: str) -> bool:
        with self._lock:
            return normalized(image) in self._images.get(node, set())

    def preload(self, node: str, images) -> None:
        """`node` boots with `images` on its data volume."""
        with self._lock:
            self._images.setdefault(node, set()).update(normalized(i) for i in images)

    def forget(self, node: str) -> None:
        """The node is gone, and its volume with it."""
        with self._lock:
            self._images.pop(node, None)
