"""Render every manifest the deploy applies, from inventory data, without a cluster."""

from __future__ import annotations

import runpy
from pathlib import Path

from qwen_speech.manifests import render, script
from qwen_speech.settings import validate
from tasks.context import DevicePlugin, Model
from tasks.ingress import ingress_services
from tasks.models import AUDIT_JOB, SCRIPTS, job_name
from tasks.namespace import network_policies
from tasks.time_slicing import _config_hash

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "7278e1e70fe206f11671096ffdd38061171dd6e5"


def default_data(**overrides) -> dict:
    data = {k: v for k, v in runpy.run_path(str(ROOT / "inventories/group_data/all.py")).items()
            if not k.startswith("__")}
    data.update({"kubeconfig": "/dev/null", "aws_region": "us-west-2"})
    data.update(overrides)
    return data


def all_manifests(**overrides) -> list[dict]:
    s = validate(default_data(**overrides))
    plugin = DevicePlugin("kube-system", "nvidia-device-plugin-daemonset", "nvidia-device-plugin-ctr")
    asr = Model("asr", s.asr_model_repo, "main", COMMIT, s.asr_model_path)
    tts = Model("tts", s.tts_model_repo, "main", COMMIT, s.tts_model_path)
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/qwen3-tts@sha256:" + "a" * 64
    return (
        render("nvidia-time-slicing-config.yaml", s, plugin=plugin, config_hash=_config_hash(s),
               config_key="config.yaml", config_dir="/config")
        + render("qwen3-speech-namespace.yaml", s)
        + network_policies(s)
        + render("qwen3-speech-efs-pvc.yaml", s, file_system_id="fs-0123456789abcdef0")
        + render("qwen3-speech-scripts.yaml", s, scripts={n: script(n) for n in SCRIPTS})
        # seed_image None: the TTS image seeds (tasks/context.py)
        + [render("qwen3-model-seed-job.yaml", s, job_name=job_name(m), model=m, seed_image=image, after=after)[0]
           for m, after in ((asr, None), (tts, asr))]
        + render("qwen3-asr-deployment.yaml", s, model=asr, asr_image=s.asr_image)
        + render("qwen3-tts-deployment.yaml", s, model=tts, tts_image=image, asr_image=s.asr_image)
        + render("qwen3-speech-ingress.yaml", s, services=ingress_services(s))
        + render("qwen3-model-audit-job.yaml", s, job_name=AUDIT_JOB, models=[asr, tts],
                 commits={"qwen3-speech.io/asr-commit": COMMIT}, image=image, timeout=600)
    )
