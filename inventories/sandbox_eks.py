"""The sandbox reached the way production is: by EKS cluster name, region and EFS Name tag only.

No kubeconfig: the endpoint and CA come from eks:DescribeCluster on the sandbox's AWS, and the
API server accepts only a valid presigned STS token for that cluster, as EKS does.
"""

from sandbox.control import for_inventory

_root, _state = for_inventory()

sandbox_eks = [
    ("@local", {
        "environment": "sandbox-eks",
        "eks_cluster_name": _state["cluster_name"],
        "aws_region": _state["region"],
        "efs_name_tag": _state["efs_name"],
        "aws_endpoint_url": _state["aws_endpoint_url"],  # only because the sandbox's AWS is local
        "hf_endpoint": _state["hub_url"],
        "poll_seconds": 0.2,
        "unschedulable_grace_seconds": 8,
    }),
]
