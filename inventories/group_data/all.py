# Defaults for every environment: the values of the deployment guide
# (../shared/reference/qwen3-speech-deployment-guide.md). An inventory overrides what differs;
# qwen_speech/settings.py says what each key may hold and rejects unknown keys.

environment = "default"

# Where the cluster is: an EKS cluster name + region, or a kubeconfig (and context); with both,
# the kubeconfig connects and the cluster name finds the cluster's AWS resources (ALB tags).
kubeconfig = None
kube_context = None
eks_cluster_name = None
aws_region = None
aws_profile = None
aws_role_arn = None
aws_endpoint_url = None  # only for the sandbox's moto server
eks_token_refresh_seconds = 600  # EKS accepts a token for 15 minutes; make a new one well before
field_manager = "qwen3-speech-deploy"
poll_seconds = 2.0
# Every wait prints a line this often (what it waits for, elapsed and remaining time, the latest
# event), also when nothing changed; a seeding download without a new byte for stall_seconds says so.
progress_interval_seconds = 15
stall_seconds = 60
# Riding out faults and sharing the cluster. A transient API error (429, 5xx, a dropped
# connection) is retried for this long, with backoff and jitter, before the step fails.
api_retry_seconds = 60
# Verify waits this long for both services to answer (a Spot replacement, a model still loading).
timeout_verify = 600
# One deploy at a time per cluster: a Lease in the namespace, renewed while the run lasts and
# taken over when it has not been renewed for this long (a run that was killed).
deploy_lock_seconds = 60
# A second run waits this long for the first to finish, then stops naming the holder (0: at once).
deploy_lock_wait_seconds = 0

# 1. GPU time-slicing: one T4 shown as two nvidia.com/gpu
time_slicing_replicas = 2
time_slicing_config_name = "nvidia-device-plugin-config"
time_slicing_config_path = "/config/config.yaml"
gpu_node_selector = {"node-type": "gpu"}
gpu_tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
gpu_memory_total_gib = 15  # one T4 as vLLM sees it; ASR's share and TTS must fit in it
gpu_node_gpus = 1  # physical GPUs per GPU node (g4dn.xlarge: one T4); x replicas = the slots a pod can ask for
# The GPU NodePool and EC2NodeClass are the guide's prerequisites; with this the playbook manages its
# own pair (qwen3-speech-gpu: g4dn Spot, this selector as labels, a taint per toleration), which
# Karpenter prefers over other pools. Needs eks_cluster_name (discovery tags, KarpenterNodeRole-<cluster>).
manage_gpu_nodepool = False
# snap-...: new GPU nodes boot Bottlerocket with both images already on their data volume (/dev/xvdb),
# so they pull nothing. Build it with `python -m qwen_speech image-cache build INVENTORY` (README, "Image cache").
gpu_image_cache_snapshot_id = None

# Serving nodes: each GPU node runs one ASR pod and tts_per_node TTS pods on its shared T4
# (the guide: one node). More nodes serve more at once, behind the same ALB, and a Spot
# interruption of one leaves the others serving; Karpenter starts the nodes. More TTS pods per
# node need time_slicing_replicas >= 1 + tts_per_node and tts_per_node x tts_gpu_memory_gib
# beside ASR's share of the GPU (checked before anything is written).
serving_nodes = 1
tts_per_node = 1

# 2. Namespace
namespace = "hosthree"

# 3. EFS storage
efs_storage_class = "qwen3-efs-sc"
efs_file_system_id = None  # fs-...; when None, found by efs_name_tag
efs_name_tag = "qwen3-models"
efs_create = False  # create the file system when no file system has that Name tag
efs_base_path = "/qwen3-speech"
models_pvc = "qwen3-models-pvc"
models_pvc_size = "50Gi"
# The POSIX user of the models' EFS access point: EFS runs every read and write through it as this
# uid/gid, whatever the pod's user. Fixed, so a recreated PVC (a new access point) still owns the
# model directory; 1000 is the TTS image's appuser (ASR and the seeder run as root and, on EFS,
# as this user too). None: the driver allocates the next free gid (uid = gid) per access point.
efs_posix_uid = 1000
efs_posix_gid = 1000
# StorageClass parameters are immutable: when the live class differs, the deploy stops unless this
# is true, and then replaces the class (bound PVs keep their access points and go on working).
replace_storage_class = False
models_mount_path = "/models"

# 4. Models, pre-seeded into EFS
hf_endpoint = None  # None: https://huggingface.co
hf_token_secret = None  # name of a Secret (key HF_TOKEN) made from $HF_TOKEN on the operator's machine
api_key_secret = None  # name of a Secret (key api-key) made from $QWEN3_SPEECH_API_KEY; ASR then wants Bearer on /v1/*
# The seeding Jobs (and the model audit and purge Jobs) run on a node that is already there, so the
# models download while Karpenter brings the GPU node and it pulls the serving images: by default
# any node without a taint (the cluster's system nodes, where CoreDNS and Karpenter run; GPU nodes
# are tainted). To seed on the GPU node as before, set these to gpu_node_selector / gpu_tolerations.
seed_node_selector = {}
seed_tolerations = []
# None: the TTS image (6.2 GB, huggingface_hub 0.x and Python 3 inside, like the 14.4 GB ASR image,
# so a system node pulls it in half the time; the GPU node needs it anyway)
seed_image = None
seed_workers = 4
seed_active_deadline_seconds = 7200  # a seeding Job is stopped after this long, whether or not step 4 still waits
# The serving pods are created while the models seed: their model guard waits this long for the
# completion manifest (then fails, and the kubelet restarts it); a damaged model is never waited for.
model_guard_wait_seconds = 3600
asr_model_repo = "Qwen/Qwen3-ASR-1.7B"
asr_model_revision = "main"
asr_model_dir = "Qwen3-ASR-1.7B"
tts_model_repo = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
tts_model_revision = "main"
tts_model_dir = "Qwen3-TTS-CustomVoice"
# When a revision is a branch or tag that has moved since the models were seeded: "pinned" keeps
# the seeded commit (the plan says the branch moved), "follow" seeds the new one (and restarts
# the pods). A 40-hex revision is pinned either way.
model_upgrade_policy = "pinned"

# 5. ASR (qwen-asr-serve, vLLM)
# The ASR image. A moving tag (`:latest`) means pull policy Always: a Docker Hub rate limit or
# outage fails pod starts even with the image cached, and the vLLM inside can change under us.
# Pin it: name an ECR repository, or an ECR pull-through cache for Docker Hub
# ("docker-hub/qwenllm/qwen3-asr"), in asr_ecr_repository; the digest asr_image_tag points at
# there is what the pods run (asr_image is then not used). Or give asr_image as repo@sha256:...
asr_image = "qwenllm/qwen3-asr:latest"
asr_ecr_repository = None
asr_image_tag = "latest"
asr_port = 8000
asr_gpu_memory_utilization = 0.45
asr_max_model_len = 4096
asr_extra_args = []
asr_cpu = "1"
asr_memory = "6Gi"
asr_gpus = 1
asr_shm_size = "4Gi"
# vLLM refuses bfloat16 on a T4 (compute capability 7.5) and would fall back from `auto` to fp16
# with a warning: say half.
asr_dtype = "half"
# Served besides the model path (which stays the first name, as the guide's curl sends it).
asr_served_model_aliases = ["qwen3-asr"]
asr_max_audio_filesize_mb = 25  # VLLM_MAX_AUDIO_CLIP_FILESIZE_MB, vLLM's default

# 6. TTS (FastAPI, official backend)
tts_image = None  # None: <account>.dkr.ecr.<region>.amazonaws.com/<tts_ecr_repository>, pinned by digest
tts_ecr_repository = "qwen3-tts"
tts_image_tag = "latest"
tts_port = 8880
tts_backend = "official"
tts_gpu_memory_gib = 4.8  # the loaded 1.7B model plus its working memory (the sandbox's figure)
tts_dtype = None  # read only by the pytorch backend; the official one runs bfloat16 on a GPU regardless
tts_cpu = "1"
tts_memory = "6Gi"
tts_gpus = 1

# 5. Metrics: when the Prometheus Operator's CRDs are installed, a ServiceMonitor for vLLM's /metrics.
# A Prometheus scrapes it only if its serviceMonitorSelector matches these labels: kube-prometheus-stack's
# default selects release=<its Helm release name>; `kubectl get prometheus -A -o yaml` shows the selector.
metrics_monitor_labels = {"release": "kube-prometheus-stack"}
metrics_scrape_interval_seconds = 30

# 7. Ingress: one shared ALB
ingress_group = "qwen3-speech"
ingress_scheme = "internal"  # the controller's default, said out loud; "internet-facing" to reach it from outside the VPC
ingress_inbound_cidrs = None  # "203.0.113.0/24, 198.51.100.0/24": required with internet-facing ...
ingress_allow_all_sources = False  # ... unless this says, on purpose, that everyone may call the services
# The NetworkPolicy lets only these networks reach the serving ports: the ALB connects to the pods
# (target-type ip) from its subnets. The default is the private ranges every VPC is carved from,
# so nothing outside the VPC (and its peers) gets in; narrow it to the ALB subnets' CIDRs
# (`aws ec2 describe-subnets`) to keep other pods and VPC hosts out too.
alb_source_cidrs = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16"
# Long requests: the TTS server sends nothing until a synthesis ends, and the longest speech
# (~11 min, the guide) takes ~24 min at RTF 2.16; the guide's long text (~1000 characters) ~10 min.
# The ALB answers 504 to a request silent for longer than its idle timeout (AWS default 60 s).
ingress_idle_timeout_seconds = 1800
# Both servers must keep idle connections open longer than the ALB does, or it gets 502s.
backend_keep_alive_seconds = 1860
# A pod that leaves (a Spot interruption, a rollout) sleeps 15 s in preStop while the ALB stops
# sending it requests, then finishes those in flight: the ALB waits this long for them, and it is
# the pods' terminationGracePeriodSeconds too. Under the Spot notice (120 s); not the AWS 300 s.
ingress_deregistration_delay_seconds = 90
ingress_listener_urls_file = None  # a JSON file with `alb_listeners` {port: URL}; the sandbox writes one
# HTTPS: an ISSUED ACM certificate covering both hosts. Set, the ALB listens on HTTP 80 and HTTPS
# 443 instead of :asr_port/:tts_port, HTTP answers 301 to HTTPS, and the hosts tell the services apart.
ingress_certificate_arn = None  # "arn:aws:acm:us-west-2:123456789012:certificate/..."
ingress_asr_host = None  # "asr.example.com": a DNS name (CNAME to the ALB) the certificate covers
ingress_tts_host = None  # "tts.example.com"

# Steps 4-7: "overlapped" starts the seeding, both Deployments and the Ingress at once and then waits
# for each (models, ASR, TTS, ALB): the image pulls, the downloads, the node and the ALB take their
# minutes side by side; ASR still loads before TTS (TTS's wait-for-asr init container). "guide" waits
# after each step before the next, as the guide does (for comparing the two: bench/time_to_service.py).
deploy_order = "overlapped"

# Timeouts (seconds), from the guide's timings: Spot node 1-3 min, ASR image pull ~7 min,
# model load + CUDA graphs 3-5 min.
timeout_time_slicing = 300
timeout_pvc_bound = 300
timeout_seed = 3600
timeout_asr_ready = 1500
timeout_tts_ready = 1200
timeout_ingress = 600
progress_deadline_seconds = 1800
unschedulable_grace_seconds = 240  # Karpenter needs 1-3 min for a new Spot node; fail after that

# Verify, status, teardown
verify_max_cer = 0.2
verify_long_request = True  # through the ALB: one synthesis of ~2 minutes on a T4, with a short one beside it
karpenter_interruption_queue = None
# karpenter.sh/do-not-disrupt on the serving and seeding pods: consolidation and drift (an AMI
# update) leave their GPU node alone (Spot interruption still takes it); each disruption costs an
# image pull and a model load
karpenter_do_not_disrupt = True
purge_models = False
purge_time_slicing = False

# The keys above, named for pyinfra: without __all__ it re-parses this file once per key to find
# which names came from imports (pyinfra_cli/inventory.py _get_group_data, _get_imported_names
# in its list comprehension), ~0.1 s of every run for a file that imports nothing.
__all__ = [name for name in dir() if not name.startswith("_")]
