"""The sandbox reached the way production is: by EKS cluster name, region and EFS Name tag only.

No kubeconfig: the endpoint and CA come from eks:DescribeCluster on the sandbox's AWS, and the
API server accepts only a valid presigned STS token for that cluster, as EKS does.
"""

import os
import sys

# pyinfra puts only the working directory on sys.path: add this project's, so the inventory
# works from any directory (`pyinfra /path/to/inventories/sandbox.py /path/to/deploy.py`).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.control import for_inventory  # noqa: E402

_root, _state = for_inventory()

sandbox_eks = [
    ("@local", {
        "environment": "sandbox-eks",
        "eks_cluster_name": _state["cluster_name"],
        "aws_region": _state["region"],
        "efs_name_tag": _state["efs_name"],
        "aws_endpoint_url": _state["aws_endpoint_url"],  # only because the sandbox's AWS is local
        "hf_endpoint": _state["hub_url"],
        # The ASR image from ECR (the sandbox's stand-in for a pull-through cache of Docker Hub), pinned by digest.
        "asr_ecr_repository": _state.get("asr_ecr_repository"),
        "poll_seconds": 0.2,
        "model_upgrade_policy": "follow",  # the sandbox Hub's new commits are test data: take them
        "unschedulable_grace_seconds": 8,
    }),
]
