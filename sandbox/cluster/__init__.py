"""The simulated EKS cluster: controllers, scheduler, kubelet, NVIDIA device plugin, EFS CSI
provisioner, ALB controller and Spot interruptions, over the sandbox's object store."""

from .cluster import Cluster
from .options import ClusterOptions

__all__ = ["Cluster", "ClusterOptions"]
