"""What the cluster holds before the guide starts (its prerequisites), as the objects EKS would show.

- a g4dn.xlarge Spot GPU node from the Karpenter pool `gpu` (1 physical T4, taint nvidia.com/gpu),
  and a small system node (no taint) where the controllers' own pods run;
- the namespaces every cluster has;
- the NVIDIA device plugin as its installer lays it out (ClusterOptions.device_plugin_setup; the
  static manifest's DaemonSet in kube-system, no config, by default);
- the EFS CSI driver (CSIDriver object + controller Deployment);
- the AWS Load Balancer Controller (Deployment + IngressClass `alb`);
- the Karpenter NodePool `gpu`.
Each group can be left out through ClusterOptions.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from sandbox.kubeapi.store import ApiError
from sandbox.kubeapi.strategies import strategy_for

from .common import (CSIDRIVERS, DEPLOYMENTS, INGRESSCLASSES, NAMESPACES, NODEPOOLS, NODES,
                     SERVICEACCOUNTS, hex_id, now_iso)

if TYPE_CHECKING:
    from .cluster import Cluster

GPU_NODE_NAME = "ip-10-0-1-23.us-west-2.compute.internal"
SYSTEM_NODE_NAME = "ip-10-0-2-41.us-west-2.compute.internal"
KUBELET_VERSION = "v1.31.4-eks-aeac579"
ALB_CONTROLLER_IMAGE = "public.ecr.aws/eks/aws-load-balancer-controller:v2.11.0"
EFS_CSI_IMAGE = "public.ecr.aws/efs-csi-driver/amazon/aws-efs-csi-driver:v2.1.4"

# Shapes of the instance types the sandbox can start: capacity and what the kubelet keeps back.
INSTANCE_SHAPES = {
    "g4dn.xlarge": {"capacity": {"cpu": "4", "memory": "16069092Ki", "pods": "29",
                                 "ephemeral-storage": "104845292Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
                    "allocatable": {"cpu": "3920m", "memory": "15378916Ki", "pods": "29",
                                    "ephemeral-storage": "95551679124", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
                    "gpus": 1, "family": "g4dn"},
    "t3.large": {"capacity": {"cpu": "2", "memory": "8047144Ki", "pods": "35",
                              "ephemeral-storage": "20959212Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
                 "allocatable": {"cpu": "1930m", "memory": "7356968Ki", "pods": "35",
                                 "ephemeral-storage": "18242267924", "hugepages-1Gi": "0", "hugepages-2Mi": "0"},
                 "gpus": 0, "family": "t3"},
}


def node_object(name: str, instance_type: str, *, zone: str, gpu: bool, capacity_type: str,
                nodepool: str | None, ip: str) -> dict:
    """A Node as an EKS kubelet registers it (no GPU resources until a device plugin reports)."""
    shape = INSTANCE_SHAPES[instance_type]
    labels = {
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": instance_type, "beta.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": "us-west-2", "topology.kubernetes.io/zone": zone,
        "failure-domain.beta.kubernetes.io/region": "us-west-2", "failure-domain.beta.kubernetes.io/zone": zone,
        "karpenter.sh/capacity-type": capacity_type,
        "karpenter.k8s.aws/instance-family": shape["family"],
    }
    taints = []
    if nodepool:
        labels.update({"karpenter.sh/nodepool": nodepool, "karpenter.sh/registered": "true",
                       "karpenter.sh/initialized": "true"})
    else:
        labels["eks.amazonaws.com/nodegroup"] = "system"
        labels["eks.amazonaws.com/capacityType"] = capacity_type.upper().replace("-", "_")
    if gpu:
        labels.update({"node-type": "gpu", "nvidia.com/gpu.present": "true",
                       "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia",
                       "karpenter.k8s.aws/instance-gpu-name": "t4", "karpenter.k8s.aws/instance-gpu-count": "1"})
        taints.append({"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"})
    else:
        labels["node-type"] = "system"
    stamp = now_iso()
    instance_id = "i-0" + hex_id(16)
    conditions = [
        {"type": kind, "status": "False", "reason": reason, "message": message,
         "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        for kind, reason, message in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
    ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
          "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"alpha.kubernetes.io/provided-node-ip": ip,
                                     "node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"providerID": f"aws:///{zone}/{instance_id}", "taints": taints},
        "status": {
            "capacity": dict(shape["capacity"]), "allocatable": dict(shape["allocatable"]),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "InternalDNS", "address": name},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "amd64", "bootID": hex_id(32), "containerRuntimeVersion": "containerd://1.7.25",
                         "kernelVersion": "6.1.128-136.201.amzn2023.x86_64", "kubeProxyVersion": KUBELET_VERSION,
                         "kubeletVersion": KUBELET_VERSION, "machineID": hex_id(32), "operatingSystem": "linux",
                         "osImage": "Amazon Linux 2023.6.20250203", "systemUUID": "ec2" + hex_id(29)},
        },
    }


def gpu_node(name: str | None = None, zone: str = "us-west-2a") -> dict:
    if name is None:
        name, ip = new_node_name("10.0.1")
    else:
        ip = "10.0.1." + name.split(".")[0].rsplit("-", 1)[-1]
    return node_object(name, "g4dn.xlarge", zone=zone, gpu=True, capacity_type="spot", nodepool="gpu", ip=ip)


def new_node_name(subnet: str, taken: set[str] | None = None) -> tuple[str, str]:
    taken = taken or set()
    while True:
        last = random.randint(10, 250)
        name = f"ip-{subnet.replace('.', '-')}-{last}.us-west-2.compute.internal"
        if name not in taken:
            return name, f"{subnet}.{last}"


def _system_deployment(name: str, image: str, replicas: int, labels: dict, args: list[str] | None = None,
                       service_account: str | None = None) -> dict:
    container = {"name": name if name != "efs-csi-controller" else "efs-plugin", "image": image,
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
    if args:
        container["args"] = args
    spec = {"containers": [container], "priorityClassName": "system-cluster-critical",
            "nodeSelector": {"kubernetes.io/os": "linux"}}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "kube-system", "labels": dict(labels)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10,
                 "template": {"metadata": {"labels": dict(labels)}, "spec": spec}},
    }


def karpenter_nodepool() -> dict:
    return {
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": "gpu"},
        "spec": {
            "template": {
                "metadata": {"labels": {"node-type": "gpu"}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                    "requirements": [
                        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g4dn"]},
                        # One-GPU types only: g4dn.12xlarge (4) and g4dn.metal (8) are g4dn too, and
                        # Karpenter, not counting time-slicing, could pick one (preflight warns without it).
                        {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Lt", "values": ["2"]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ],
                    "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                    "expireAfter": "720h",
                },
            },
            "limits": {"nvidia.com/gpu": "4"},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                                   "lastTransitionTime": now_iso()}]},
    }


def seed(cluster: "Cluster") -> None:
    """Write the starting objects into the store (skipping any that already exist)."""
    options, store = cluster.options, cluster.store

    def put(res, obj: dict) -> None:
        strategy_for(res.kind).default(obj)  # as if written through the API: what EKS would hold
        try:
            store.create(res, obj)
        except ApiError as err:
            if err.code != 409:
                raise

    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        put(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": "default", "namespace": ns}})
    if options.device_plugin:  # before the nodes: a Bottlerocket node boots from its EC2NodeClass
        cluster.device_plugins.setup.seed(cluster, put)
    put(NODES, node_object(SYSTEM_NODE_NAME, "t3.large", zone="us-west-2b", gpu=False, capacity_type="on-demand",
                           nodepool=None, ip="10.0.2.41"))
    if options.gpu_node:
        node = gpu_node(GPU_NODE_NAME, zone="us-west-2a")
        cluster.device_plugins.physical[GPU_NODE_NAME] = INSTANCE_SHAPES["g4dn.xlarge"]["gpus"]
        put(NODES, cluster.device_plugins.launched(node))
    if options.efs_csi_driver:
        put(CSIDRIVERS, {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
                         "metadata": {"name": "efs.csi.aws.com",
                                      "labels": {"app.kubernetes.io/name": "aws-efs-csi-driver"}},
                         "spec": {"attachRequired": False, "podInfoOnMount": False, "fsGroupPolicy": "ReadWriteOnceWithFSType",
                                  "requiresRepublish": False, "seLinuxMount": False, "storageCapacity": False,
                                  "volumeLifecycleModes": ["Persistent"]}})
        put(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": "efs-csi-controller-sa", "namespace": "kube-system"}})
        put(DEPLOYMENTS, _system_deployment("efs-csi-controller", EFS_CSI_IMAGE, 2,
                                            {"app": "efs-csi-controller", "app.kubernetes.io/name": "aws-efs-csi-driver"},
                                            args=["--endpoint=$(CSI_ENDPOINT)", "--logtostderr", "--v=2",
                                                  "--delete-access-point-root-dir=false"],
                                            service_account="efs-csi-controller-sa"))
    if options.alb_controller:
        put(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": "aws-load-balancer-controller", "namespace": "kube-system"}})
        put(DEPLOYMENTS, _system_deployment("aws-load-balancer-controller", ALB_CONTROLLER_IMAGE, 2,
                                            {"app.kubernetes.io/name": "aws-load-balancer-controller",
                                             "app.kubernetes.io/instance": "aws-load-balancer-controller"},
                                            args=["--cluster-name=qwen3-sandbox", "--ingress-class=alb"],
                                            service_account="aws-load-balancer-controller"))
        put(INGRESSCLASSES, {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                             "metadata": {"name": "alb", "labels": {"app.kubernetes.io/name": "aws-load-balancer-controller"}},
                             "spec": {"controller": "ingress.k8s.aws/alb"}})
    if options.karpenter_nodepool:
        put(NODEPOOLS, karpenter_nodepool())
