"""The sandbox: a simulated EKS account on this machine (start it with `python -m sandbox up`).

Everything is read from the sandbox's state file, so nothing needs to be exported by hand.
QWEN3_SANDBOX_DIR points at another sandbox (tests run several side by side).
"""

import json
import os
from pathlib import Path

_root = Path(os.environ.get("QWEN3_SANDBOX_DIR") or Path(__file__).resolve().parent.parent / ".sandbox")
_state_file = _root / "state.json"
if not _state_file.exists():
    raise SystemExit(f"The sandbox is not running ({_state_file} is missing): start it with `python -m sandbox up`")
_state = json.loads(_state_file.read_text())

# The sandbox's moto server takes any credentials; real AWS never sees these.
for _name, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
    os.environ.setdefault(_name, _value)

sandbox = [
    ("@local", {
        "environment": "sandbox",
        "kubeconfig": str(_root / "kubeconfig"),
        "eks_cluster_name": _state["cluster_name"],  # for AWS look-ups; the kubeconfig is what connects
        "aws_region": _state["region"],
        "aws_endpoint_url": _state["aws_endpoint_url"],
        "hf_endpoint": _state["hub_url"],
        "karpenter_interruption_queue": _state.get("sqs_queue_name"),
        "poll_seconds": 0.2,
        "unschedulable_grace_seconds": 8,  # the sandbox's replacement nodes join within seconds
    }),
]
