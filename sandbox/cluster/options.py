"""How the simulated cluster looks at start and how fast it moves."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from . import profile


@dataclass
class ClusterOptions:
    """What the cluster holds at start and how long things take.

    + fast: scale every delay down (tests, demos); otherwise delays are real-ish
    + time_scale: live the real-world profile (sandbox/cluster/profile.py, its middle values) this
      many times faster than life: image pulls by size and node bandwidth, node launches, model
      loads per server, ALB provisioning; None (default) keeps the arbitrary delays below
    + gpu_node, device_plugin, efs_csi_driver, alb_controller, karpenter_nodepool: each piece of
      the guide's prerequisites can be left out, so preflight checks can be tested
    + image_pull, container_start, model_load, node_replacement: seconds; None picks the default
      for the mode (fast: 0.05 / 0.05 / 0.2 / 0.3, otherwise 5 / 1 / 8 / 20; with time_scale the
      profile's figures scaled, image_pull then by image size unless given)
    + spot_notice: seconds from a Spot interruption warning to the instance's end: AWS gives two
      minutes (EC2 User Guide, "Spot Instance interruption notices"); None: 120 on the sandbox's
      time scale (fast: 1.2; with time_scale the profile's spot_notice scaled)
    + device_plugin_setup: who installed the device plugin: static | helm | gpu-operator | bottlerocket
      (sandbox/cluster/device_plugin.py lays each out as its installer does)
    + asr_image_marker, tts_image_marker: an image containing one of these gets a speech stand-in
    + python: the interpreter that runs containers whose command starts with python/python3
    + alb_source_address: where the ALB's requests and health checks come from (an address in its
      subnets, as the ALB's nodes have on AWS), which the pods' NetworkPolicies are checked against
    """

    fast: bool = False
    gpu_node: bool = True
    device_plugin: bool = True
    efs_csi_driver: bool = True
    alb_controller: bool = True
    karpenter_nodepool: bool = True
    device_plugin_setup: str = "static"
    time_scale: float | None = None
    image_pull: float | None = None
    container_start: float | None = None
    model_load: float | None = None
    node_replacement: float | None = None
    spot_notice: float | None = None
    asr_image_marker: str = "qwen3-asr"
    tts_image_marker: str = "qwen3-tts"
    python: str = field(default_factory=lambda: sys.executable)
    alb_source_address: str = "10.0.100.10"

    def __post_init__(self) -> None:
        from .device_plugin import SETUPS

        if self.device_plugin_setup not in SETUPS:
            raise ValueError(f"ClusterOptions.device_plugin_setup={self.device_plugin_setup!r}: choose from "
                             f"{', '.join(SETUPS)}")
        if self.time_scale is not None:
            if not isinstance(self.time_scale, (int, float)) or self.time_scale <= 0:
                raise ValueError(f"ClusterOptions.time_scale={self.time_scale!r}: give a number > 0 "
                                 "(100 runs 100 times faster than life)")
            if self.fast:
                raise ValueError(f"ClusterOptions.time_scale={self.time_scale!r} with fast=True: choose one "
                                 "(fast keeps its own delays; time_scale runs the real-world profile)")
        defaults = {"image_pull": (0.05, 5.0), "container_start": (0.05, 1.0), "model_load": (0.2, 8.0),
                    "node_replacement": (0.3, 20.0), "spot_notice": (120.0 / 100.0, 120.0)}
        profiled = {"image_pull": "asr_image_pull", "container_start": "container_start",
                    "model_load": "asr_model_load", "node_replacement": "gpu_node_launch",
                    "spot_notice": "spot_notice"}
        self.pull_by_size = self.time_scale is not None and self.image_pull is None
        self.load_by_server = self.time_scale is not None and self.model_load is None
        for name, (fast_value, real_value) in defaults.items():
            if getattr(self, name) is None:
                if self.time_scale is not None:
                    real_value = self.profiled(profiled[name])
                setattr(self, name, fast_value if self.fast else real_value)
            elif getattr(self, name) < 0:
                raise ValueError(f"ClusterOptions.{name}={getattr(self, name)!r}: a delay must be >= 0 seconds")

    def sandbox_seconds(self, seconds: float) -> float:
        """A real-world duration as this sandbox lives it: divided by time_scale (if any)."""
        return seconds / (self.time_scale or 1.0)

    def profiled(self, name: str) -> float:
        """The profile's figure `name` (seconds in life, sandbox/cluster/profile.py) as this sandbox lives it."""
        return self.sandbox_seconds(profile.value(name))

    def load_seconds(self, kind: str) -> float:
        """How long the `kind` ("asr" or "tts") server takes to load its model here."""
        if self.load_by_server and kind in ("asr", "tts"):
            return self.profiled(f"{kind}_model_load")
        return self.model_load

    @property
    def tick(self) -> float:
        """Longest sleep of the control loop when nothing wakes it."""
        if self.time_scale is not None:  # a tick is tick x scale of simulated time: keep it to seconds
            return max(0.02, min(0.25, 2.0 / self.time_scale))
        return 0.03 if self.fast else 0.25

    def scaled(self, seconds: float, low: float = 0.0, high: float | None = None) -> float:
        """A Kubernetes duration (backoff, probe period, deadline) as this sandbox lives it.

        Fast mode divides it by 100, a time scale by itself; the result is clamped to [low, high].
        """
        value = seconds / 100.0 if self.fast else self.sandbox_seconds(float(seconds))
        value = max(value, low)
        return value if high is None else min(value, high)
