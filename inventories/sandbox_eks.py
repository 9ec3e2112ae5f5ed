"""The sandbox reached the way production is: by EKS cluster name, region and EFS Name tag only.

No kubeconfig: the endpoint and CA come from eks:DescribeCluster on the sandbox's AWS, and the
API server accepts only a valid presigned STS token for that cluster, as EKS does.
"""

import json
import os
from pathlib import Path

_root = Path(os.environ.get("QWEN3_SANDBOX_DIR") or Path(__file__).resolve().parent.parent / ".sandbox")
_state_file = _root / "state.json"
if not _state_file.exists():
    raise SystemExit(f"The sandbox is not running ({_state_file} is missing): start it with `python -m sandbox up`")
_state = json.loads(_state_file.read_text())

# The sandbox's moto server takes these; real AWS never sees them.
for _name, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
    os.environ.setdefault(_name, _value)

sandbox_eks = [
    ("@local", {
        "environment": "sandbox-eks",
        "eks_cluster_name": _state["cluster_name"],
        "aws_region": _state["region"],
        "efs_name_tag": _state["efs_name"],
        "aws_endpoint_url": _state["aws_endpoint_url"],  # only because the sandbox's AWS is local
        "hf_endpoint": _state["hub_url"],
        "poll_seconds": 0.2,
        "unschedulable_grace_seconds": 8,  # the sandbox's replacement nodes join within seconds
    }),
]
