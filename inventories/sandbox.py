"""The sandbox: a simulated EKS account on this machine (start it with `python -m sandbox up`).

Everything is read from the sandbox's state file, so nothing needs to be exported by hand.
QWEN3_SANDBOX_DIR points at another sandbox (tests run several side by side).
"""

import os
import sys

# pyinfra puts only the working directory on sys.path: add this project's, so the inventory
# works from any directory (`pyinfra /path/to/inventories/sandbox.py /path/to/deploy.py`).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.control import for_inventory  # noqa: E402

_root, _state = for_inventory()

sandbox = [
    ("@local", {
        "environment": "sandbox",
        "kubeconfig": str(_root / "kubeconfig"),
        "eks_cluster_name": _state["cluster_name"],  # for AWS look-ups; the kubeconfig is what connects
        "aws_region": _state["region"],
        "aws_endpoint_url": _state["aws_endpoint_url"],
        "hf_endpoint": _state["hub_url"],
        # The ASR image from ECR (the sandbox's stand-in for a pull-through cache of Docker Hub), pinned by digest.
        "asr_ecr_repository": _state.get("asr_ecr_repository"),
        "karpenter_interruption_queue": _state.get("sqs_queue_name"),
        "poll_seconds": 0.2,
        "model_upgrade_policy": "follow",  # the sandbox Hub's new commits are test data: take them
        "unschedulable_grace_seconds": 8,  # the sandbox's replacement nodes join within seconds
        # The sandbox's ALB name does not resolve; its listeners are on loopback, listed here.
        "ingress_listener_urls_file": str(_root / "state.json"),
    }),
]
