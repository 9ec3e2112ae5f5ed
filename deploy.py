"""Qwen3 Speech (ASR + TTS) on EKS: the deployment guide as a pyinfra deploy.

    pyinfra inventories/sandbox.py deploy.py --dry --diff# what would change, per object
    pyinfra -y inventories/sandbox.py deploy.py# converge

Each line is one step of ../shared/reference/qwen3-speech-deployment-guide.md; the numbers are
the ones log lines use (the guide's, plus 0. prerequisites and 4. models). Steps 4-7 start
their work first and are waited for after (deploy_order "overlapped"): the GPU node, both image
pulls, the model downloads and the ALB take their minutes side by side, and the one order that
matters, ASR loading before TTS on the shared GPU, is kept by the pods themselves (TTS's
wait-for-asr init container). deploy_order "guide" waits after each step, in the guide's order.
Everything before the first write (inventory, credentials, prerequisites, model commits) is
checked while the deploy is prepared, so a problem stops the run with nothing changed.
"""

import gc
import os
import sys

# pyinfra puts only the working directory on sys.path: add this project's, so the deploy runs
# from any directory (`pyinfra /path/to/inventories/production.py /path/to/deploy.py`).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pyinfra turns bytecode writing off for its whole run (pyinfra_cli/main.py: "Don't write out
# deploy.pyc/config.pyc", files it runs with exec, which write none anyway), so this project's
# packages were compiled from source on every run (~0.2 s CPU of a no-op rerun): cache them as
# any package is, unless the operator asked not to (PYTHONDONTWRITEBYTECODE).
sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
# The imports and the steps' preparation below make objects that live to the end of the run, and
# Python's collector scanned them over and over as they were made: paused until they are
# prepared, then they are frozen (tasks/process.py).
gc.disable()

from tasks import asr, efs_storage, gpu_nodepool, ingress, metrics, models, namespace, preflight, time_slicing, tts, verify
from tasks.connect import connect
from tasks.fleet import only_this_host
from tasks.process import playbook_process

with playbook_process(__file__), only_this_host():  # tasks/process.py; a fleet: one cluster failing stops only itself
    connect()                         #    the inventory is valid and the cluster answers
    preflight.check_prerequisites()   # 0. prerequisites (前置条件): GPU nodes, device plugin, EFS CSI, ALB controller
    gpu_nodepool.manage()             #    the GPU NodePool and EC2NodeClass, with manage_gpu_nodepool (image cache)
    time_slicing.configure()          # 1. GPU time-slicing (配置 GPU Time-Slicing)
    namespace.create()                # 2. namespace (创建 Namespace)
    efs_storage.create()              # 3. EFS storage (创建 EFS 存储)
    models.seed()                     # 4. models into EFS, once, verified: Jobs started on a node already there (模型下载说明)
    asr.deploy_asr()                  # 5. ASR applied: Karpenter brings the GPU node, the image pulls (guide step 4, 部署 ASR)
    metrics.monitor_asr()             #    its /metrics for Prometheus, when the Prometheus Operator is installed
    tts.deploy_tts()                  # 6. TTS applied next to it; it loads only after ASR runs (guide step 5, 部署 TTS)
    ingress.deploy_ingress()          # 7. the shared ALB, provisioning meanwhile (guide step 6, 部署 Ingress)
    models.wait_seeded()              # 4. waited for: both models seeded and recorded (the pods' guards wait too)
    asr.wait_ready()                  # 5. waited for: ASR Ready
    tts.wait_ready()                  # 6. waited for: TTS Ready
    ingress.wait_ready()              # 7. waited for: the ALB has an address
    verify.verify()                   # 8. health, speech round trip, summary (guide step 7, 验证部署)
