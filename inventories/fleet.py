"""Several real EKS clusters in one run: one pyinfra host per cluster, named by its environment.

    pyinfra -y inventories/fleet.py deploy.py                             # all, in parallel
    pyinfra -y inventories/fleet.py deploy.py --limit @cluster/staging    # some

`@cluster/<name>` hosts run on this machine like `@local` (kubeops/connector.py says why a
connector of ours: pyinfra allows one `@local`). Each host has its own data, as in production.py:
cluster, region, credentials, EFS, model pins; a cluster that fails (a missing prerequisite,
say) stops only itself, and pyinfra's exit code is non-zero when any did. Keys not set here
come from group_data/all.py.
"""

import os
import sys

# The project root on sys.path: the @cluster connector's entry point is found there.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

fleet = [
    ("@cluster/staging", {
        "environment": "staging",
        "eks_cluster_name": "speech-staging",
        "aws_region": "us-west-2",
        # "aws_profile": "speech-staging-admin",
        "efs_name_tag": "qwen3-models",
        "karpenter_interruption_queue": "Karpenter-speech-staging",
        # Staging takes the Hub's new commits, so an upgrade is tried there first.
        "model_upgrade_policy": "follow",
    }),
    ("@cluster/production", {
        "environment": "production",
        "eks_cluster_name": "speech-production",
        "aws_region": "us-west-2",
        # "aws_profile": "speech-production-admin",
        # "aws_role_arn": "arn:aws:iam::123456789012:role/speech-deployer",
        "efs_name_tag": "qwen3-models",
        "karpenter_interruption_queue": "Karpenter-speech-production",
        # Production stays at the seeded commits; pin a new one here to upgrade (production.py).
        "model_upgrade_policy": "pinned",
        # "asr_model_revision": "<40-hex commit>",
    }),
]
