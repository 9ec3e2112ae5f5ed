"""A real EKS cluster: copy this file per environment (production.py, staging.py, ...).

The playbook finds the rest itself: the API endpoint and CA through eks:DescribeCluster, a token
like `aws eks get-token` (refreshed during long waits), the EFS file system by its Name tag,
the TTS image digest in ECR, the ALB by the controller's tags. Credentials come from the usual
AWS chain (aws_profile below, or AWS_PROFILE, SSO, instance role). Export HF_TOKEN for gated
models. Any default in group_data/all.py can be overridden here, e.g. asr_max_model_len.
"""

production = [
    ("@local", {
        "environment": "production",
        "eks_cluster_name": "my-eks-cluster",
        "aws_region": "us-west-2",
        # "aws_profile": "speech-admin",
        # "aws_role_arn": "arn:aws:iam::123456789012:role/speech-deployer",
        "efs_name_tag": "qwen3-models",
        # "efs_create": True,          # create the file system if none has that Name tag
        "karpenter_interruption_queue": "Karpenter-my-eks-cluster",
        # "ingress_scheme": "internet-facing",
        # "ingress_inbound_cidrs": "203.0.113.0/24",
        # Models stay at the commit they were first seeded at: a rerun (after a Spot interruption,
        # say) never upgrades them because `main` moved on the Hub; the plan says when it did.
        # To upgrade, pin the new commit here, or run once with --data model_upgrade_policy=follow.
        "model_upgrade_policy": "pinned",
        # "asr_model_revision": "7278e1e70fe206f11671096ffdd38061171dd6e5",  # pin a commit
        # "tts_model_revision": "<40-hex commit>",
        # "hf_token_secret": "hf-token",
    }),
]
