"""Metrics: a ServiceMonitor for vLLM when the Prometheus Operator is installed (none when it is
not), vLLM's gauges on the ASR stand-in, and `status` showing per serving pod what says "add a node"."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from kubeops.client import KubeApiError, from_kubeconfig
from kubeops.kinds import Ref
from sandbox.speech import TTS_MAX_INPUT, start_stand_in
from tests.deploy_helpers import ROOT, assert_ok, deploy, deployed, output, run_pyinfra, writes  # noqa: F401
from tests.test_deploy_rbac import ROLE_FILE, _deployer_kubeconfig, _grant
from tests.test_operate import speechctl

MONITOR = Ref("monitoring.coreos.com/v1", "ServiceMonitor", "qwen3-asr-metrics", "hosthree")
NO_OPERATOR_LINE = "no Prometheus Operator"


def _monitor_writes(records: list[dict]) -> list[dict]:
    return [r for r in writes(records) if r.get("resource") == "servicemonitors"]


def _status_json(sandbox, *args: str) -> dict:
    import jsonschema

    result = speechctl(sandbox, "status", "--json", "inventories/sandbox.py", *args)
    assert result.returncode == 0, output(result)
    document = json.loads(result.stdout)
    jsonschema.validate(document, json.loads((ROOT / "files" / "schemas" / "status.schema.json").read_text()))
    return document["hosts"][0]


def test_with_the_prometheus_operator_the_asr_servicemonitor_converges_and_a_rerun_writes_nothing(make_sandbox):
    sandbox = make_sandbox(prometheus_operator=True)
    first = deploy(sandbox)
    assert_ok(first)
    assert len(_monitor_writes(sandbox.control.audit_since(0))) == 1
    monitor = from_kubeconfig(str(sandbox.kubeconfig)).get(MONITOR)
    assert monitor is not None, output(first)[-3000:]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # metrics_monitor_labels' default
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "qwen3-asr"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]

    mark = sandbox.control.audit_mark()
    rerun = deploy(sandbox)
    assert_ok(rerun)
    assert _monitor_writes(sandbox.control.audit_since(mark)) == []
    assert NO_OPERATOR_LINE not in output(rerun)

    # The label is a setting: a Prometheus selecting another label finds the monitor after a rerun.
    mark = sandbox.control.audit_mark()
    relabelled = deploy(sandbox, "--data", 'metrics_monitor_labels={"prometheus": "platform"}')
    assert_ok(relabelled)
    assert len(_monitor_writes(sandbox.control.audit_since(mark))) == 1
    assert from_kubeconfig(str(sandbox.kubeconfig)).get(MONITOR)["metadata"]["labels"]["prometheus"] == "platform"

    # status lists it under its step, drift finds it in sync.
    objects = _status_json(sandbox, "--data", 'metrics_monitor_labels={"prometheus": "platform"}')["objects"]
    assert {"step": "5. ASR metrics", "kind": "ServiceMonitor", "health": "ok"}.items() <= next(
        o for o in objects if o["kind"] == "ServiceMonitor").items()
    drift = speechctl(sandbox, "drift", "inventories/sandbox.py", "--data", 'metrics_monitor_labels={"prometheus": "platform"}')
    assert drift.returncode == 0, output(drift)

    # Teardown removes it with the rest of the ASR.
    assert_ok(run_pyinfra(sandbox, "destroy.py", "-y"))
    assert from_kubeconfig(str(sandbox.kubeconfig)).get(MONITOR) is None


def test_without_the_prometheus_operator_the_step_says_so_in_one_line_and_writes_no_monitor(sandbox):
    kube = from_kubeconfig(str(sandbox.kubeconfig))
    with pytest.raises(KubeApiError) as err:  # the sandbox's default, like EKS's: the CRDs are not there
        kube.list(MONITOR.api_version, MONITOR.kind, "hosthree")
    assert err.value.status == 404

    result = deploy(sandbox)
    assert_ok(result)
    lines = [line for line in output(result).splitlines() if NO_OPERATOR_LINE in line]
    assert len(lines) == 1, output(result)[-3000:]
    assert "5. ASR metrics" in lines[0]
    assert _monitor_writes(sandbox.control.audit_since(0)) == []


def test_the_asr_stand_in_serves_vllm_request_gauges_in_prometheus_text_format():
    stand_in = start_stand_in("asr", served_model_name="qwen3-asr")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stand_in.port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
            content_type = answer.headers["Content-Type"]
    finally:
        stand_in.stop()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE vllm:num_requests_running gauge" in text and "# TYPE vllm:num_requests_waiting gauge" in text
    assert 'vllm:num_requests_running{engine="0",model_name="qwen3-asr"} 0.0' in text
    assert 'vllm:num_requests_waiting{engine="0",model_name="qwen3-asr"} 0.0' in text


def test_status_shows_vllm_running_and_waiting_per_asr_pod_and_tts_busy_while_it_synthesises(deployed):
    host = _status_json(deployed)
    asr = [e for e in host["serving"] if e["app"] == "qwen3-asr"]
    tts = [e for e in host["serving"] if e["app"] == "qwen3-tts"]
    assert len(asr) == 1 and len(tts) == 1, host["serving"]
    assert asr[0]["readable"] and (asr[0]["running"], asr[0]["waiting"]) == (0, 0), asr
    assert tts[0]["readable"] and tts[0]["busy"] is False, tts

    text = speechctl(deployed, "status", "inventories/sandbox.py").stdout
    assert "vLLM requests running 0, waiting 0" in text and "TTS idle" in text, text

    # A synthesis holds the TTS server's event loop (one at a time): status must call it busy while
    # three of the longest it accepts queue up (their seconds, on the sandbox's time scale, outlast
    # a status run many times over).
    kube = from_kubeconfig(str(deployed.kubeconfig))
    text = ("A long text to synthesise. " * 160)[:TTS_MAX_INPUT]
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": text}).encode()
    threads = [threading.Thread(target=kube.service_proxy, args=("POST", "hosthree", "qwen3-tts-service", 80,
                                                                 "/v1/audio/speech"), kwargs={"body": body},
                                daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    seen = []
    while any(t.is_alive() for t in threads) and True not in seen:
        entry = next(e for e in _status_json(deployed)["serving"] if e["app"] == "qwen3-tts")
        seen.append(entry["busy"])
        if entry["busy"]:
            assert entry["readable"] and "did not answer within 1 s" in entry["reason"], entry
    assert True in seen, f"status never saw the TTS pod busy during its syntheses: {seen}"
    for thread in threads:
        thread.join(120)


def test_the_shipped_deployer_role_covers_the_servicemonitor_and_the_status_pod_reads(make_sandbox, tmp_path):
    import yaml

    sandbox = make_sandbox(prometheus_operator=True)
    _grant(sandbox, [d for d in yaml.safe_load_all(ROLE_FILE.read_text()) if d])
    kubeconfig = _deployer_kubeconfig(sandbox, tmp_path)
    assert_ok(deploy(sandbox, "--data", f"kubeconfig={kubeconfig}"))
    assert from_kubeconfig(str(sandbox.kubeconfig)).get(MONITOR) is not None
    serving = _status_json(sandbox, "--data", f"kubeconfig={kubeconfig}")["serving"]
    assert len(serving) == 2 and all(e["readable"] for e in serving), serving


def _discovery(kube) -> tuple[list[str], list[str], list[str]]:
    groups = [g["name"] for g in kube.request("GET", "/apis")["groups"]]
    openapi = list(kube.request("GET", "/openapi/v3")["paths"])
    try:
        served = [r["name"] for r in kube.request("GET", "/apis/monitoring.coreos.com/v1")["resources"]]
    except KubeApiError as err:
        assert err.status == 404
        served = []
    return groups, openapi, served


def test_the_sandbox_serves_the_prometheus_operator_kinds_only_with_its_option(make_sandbox, api_sandbox):
    groups, openapi, served = _discovery(from_kubeconfig(str(api_sandbox.kubeconfig)))
    assert "monitoring.coreos.com" not in groups and served == []
    assert "apis/monitoring.coreos.com/v1" not in openapi

    with_operator = make_sandbox(prometheus_operator=True, with_aws=False, with_hub=False, with_cluster=False)
    kube = from_kubeconfig(str(with_operator.kubeconfig))
    groups, openapi, served = _discovery(kube)
    assert "monitoring.coreos.com" in groups and served == ["servicemonitors", "podmonitors"]
    assert "apis/monitoring.coreos.com/v1" in openapi
    assert kube.list(MONITOR.api_version, MONITOR.kind, "default") == []
