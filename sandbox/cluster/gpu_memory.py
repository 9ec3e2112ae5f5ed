"""GPU memory on a sandbox node: one ledger per GPU, shared by the processes the pods run.

A T4 shows 15 GiB to CUDA (15360 MiB in nvidia-smi). Time-slicing shares the GPU's compute,
not its memory: every process allocates from the same 15 GiB, with no isolation
(upstream-facts, device plugin time-slicing). The speech stand-ins allocate here as the real
servers do at start, so the order in which they start decides whether vLLM comes up.
"""

from __future__ import annotations

import threading
import time

GIB = 1024 ** 3
T4_GIB = 15.0
# What CUDA reports as total memory per GPU (nvidia-smi's MiB / 1024, rounded down).
GIB_OF_GPU = {"Tesla T4": T4_GIB, "Tesla V100-SXM2-16GB": 15.7, "NVIDIA A10G": 22.0, "NVIDIA L4": 22.0,
              "NVIDIA A100-SXM4-40GB": 39.5}


class OutOfMemory(Exception):
    """What torch raises when an allocation does not fit."""


class GpuMemory:
    """Allocations by owner on one GPU; `allocated_by_others(owner)` lets vLLM's profiler see a co-tenant."""

    def __init__(self, total_gib: float = T4_GIB):
        self.total = total_gib * GIB
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()
        # (monotonic time, owner, bytes) of every allocation, in order: shows which load came first
        self.history: list[tuple[float, str, float]] = []

    def free(self) -> float:
        with self._lock:
            return self.total - sum(self._used.values())

    def used_by(self, owner: str) -> float:
        with self._lock:
            return self._used.get(owner, 0.0)

    def allocations(self) -> dict[str, float]:
        with self._lock:
            return dict(self._used)

    def allocated_by_others(self, owner: str) -> float:
        with self._lock:
            return sum(v for k, v in self._used.items() if k != owner)

    def allocate(self, owner: str, size: float) -> None:
        """Add `size` bytes to `owner`; OutOfMemory with torch's message when it does not fit."""
        with self._lock:
            free = self.total - sum(self._used.values())
            if size > free:
                raise OutOfMemory(
                    f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {size / GIB:.2f} GiB. "
                    f"GPU 0 has a total capacity of {self.total / GIB:.2f} GiB of which {free / GIB:.2f} GiB is free.")
            self._used[owner] = self._used.get(owner, 0.0) + size
            self.history.append((time.monotonic(), owner, size))

    def release(self, owner: str) -> None:
        """The process exited: the driver frees everything it held."""
        with self._lock:
            self._used.pop(owner, None)
