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
from kubeops.client import KubeApiError, KubeUnreachable, ProxyTimedOut
from kubeops.kinds import Ref
from qwen_speech.manifests import render

from .context import context_of, host_tag

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
        logger.info(f"    {host_tag()}5. ASR metrics: no Prometheus Operator ({MONITORING} ServiceMonitor is not "
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


# ---------------------------------------------------------------------------------------------
# `status`: per serving pod, the signals that say "add a node", read through the API server's pod proxy

ASR_GAUGES = {"running": "vllm:num_requests_running", "waiting": "vllm:num_requests_waiting"}
TTS_HEALTH_SECONDS = 1.0  # the TTS server synthesises inside its event loop: busy, it answers nothing


def monitored_desired(ctx) -> list[dict]:
    """The ServiceMonitor when the Operator is installed, else nothing (for status and drift)."""
    return desired(ctx) if operator_installed(ctx.kube) else []


def gauge_sum(text: str, name: str) -> float | None:
    """The sum of a metric's samples over its label sets (one per vLLM engine), in Prometheus text
    format; None when the metric is not there."""
    values = []
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, rest = line.partition(" ")
        if metric.split("{", 1)[0] != name:
            continue
        try:
            values.append(float(rest.split()[0]))
        except (IndexError, ValueError):
            continue
    return sum(values) if values else None


def serving_signals(kube, s, pods: list[dict]) -> list[dict]:
    """Per ASR and TTS pod: vLLM's running and waiting requests, TTS busy or idle; `readable` False
    with a reason when they cannot be read (schema: status.schema.json `serving`)."""
    entries = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        app = (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
        if app not in ("qwen3-asr", "qwen3-tts"):
            continue
        entry = {"pod": pod["metadata"]["name"], "app": app, "node": (pod.get("spec") or {}).get("nodeName"),
                 "readable": False, "reason": "", "running": None, "waiting": None, "busy": None}
        phase = (pod.get("status") or {}).get("phase")
        if phase != "Running":
            entry["reason"] = f"pod is {phase or 'not started'}"
        elif app == "qwen3-asr":
            _read_asr(kube, s, entry)
        else:
            _read_tts(kube, s, entry)
        entries.append(entry)
    return entries


def _read_asr(kube, s, entry: dict) -> None:
    try:
        code, body = kube.pod_proxy("GET", s.namespace, entry["pod"], s.asr_port, "/metrics")
    except (KubeApiError, KubeUnreachable) as err:
        entry["reason"] = str(err)
        return
    if code != 200:
        entry["reason"] = f"GET /metrics answered {code}"
        return
    text = body.decode("utf-8", "replace")
    values = {key: gauge_sum(text, name) for key, name in ASR_GAUGES.items()}
    missing = [ASR_GAUGES[k] for k, v in values.items() if v is None]
    if missing:
        entry["reason"] = f"/metrics has no {', '.join(missing)}"
        return
    entry.update(readable=True, running=int(values["running"]), waiting=int(values["waiting"]))


def _read_tts(kube, s, entry: dict) -> None:
    try:
        code, _ = kube.pod_proxy("GET", s.namespace, entry["pod"], s.tts_port, "/health", timeout=TTS_HEALTH_SECONDS)
    except ProxyTimedOut:
        entry.update(readable=True, busy=True, reason=f"health did not answer within {TTS_HEALTH_SECONDS:g} s")
        return
    except (KubeApiError, KubeUnreachable) as err:
        entry["reason"] = str(err)
        return
    if code != 200:
        entry["reason"] = f"GET /health answered {code}"
        return
    entry.update(readable=True, busy=False)


def describe_signals(entry: dict) -> str:
    """One line of `status` for a serving pod."""
    where = f"{entry['pod']} on {entry['node'] or 'no node'}"
    if not entry["readable"]:
        return f"{where}: metrics: not readable ({entry['reason']})"
    if entry["app"] == "qwen3-asr":
        return f"{where}: vLLM requests running {entry['running']}, waiting {entry['waiting']}"
    return f"{where}: TTS {'busy (' + entry['reason'] + ')' if entry['busy'] else 'idle'}"
