"""Step 5, metrics: a ServiceMonitor for vLLM's /metrics, when the Prometheus Operator is installed.

EKS has no Prometheus Operator by default. Its CRDs are looked for in discovery (allowed to any
authenticated user, so no extra right is needed); without them the step says so in one line and
writes nothing, and a later run applies the monitor once the Operator is there. The TTS server has
no /metrics (groxaxo/Qwen3-TTS-Openai-Fastapi), so only the ASR Service is monitored; `status`
tells a busy TTS pod by its /health.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy

from kubeops import k8s
from kubeops.client import KubeApiError
from kubeops.kinds import Ref
from qwen_speech.manifests import render

from .context import context_of

MONITORING = "monitoring.coreos.com/v1"
MONITOR_NAME = "qwen3-asr-metrics"


def operator_installed(kube) -> bool:
    """Whether the Prometheus Operator's ServiceMonitor kind is served (its CRD installed)."""
    try:
        resources = kube.request("GET", f"/apis/{MONITORING}")
    except KubeApiError as err:
        if err.status == 404:
            return False
        raise
    return any(r.get("name") == "servicemonitors" for r in (resources or {}).get("resources") or [])


def desired(ctx) -> list[dict]:
    return render("qwen3-asr-servicemonitor.yaml", ctx.settings)


def monitor_ref(namespace: str) -> Ref:
    return Ref(MONITORING, "ServiceMonitor", MONITOR_NAME, namespace)


@deploy("5. ASR metrics")
def monitor_asr():
    ctx = context_of(host)
    s = ctx.settings
    if not operator_installed(ctx.kube):
        logger.info(f"    [{host.name}] 5. ASR metrics: no Prometheus Operator ({MONITORING} ServiceMonitor is not "
                    "served): no ServiceMonitor written")
        return
    selector = ", ".join(f"{k}={v}" for k, v in sorted(s.metrics_monitor_labels.items()))
    k8s.applied(
        name=f"5. ASR metrics: ServiceMonitor {MONITOR_NAME} (vLLM /metrics every "
             f"{s.metrics_scrape_interval_seconds}s, labelled {selector})",
        manifests=desired(ctx),
        field_manager=s.field_manager,
        label="5. ASR metrics",
    )
