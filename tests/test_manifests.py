"""The manifests the deploy renders: valid Kubernetes, labelled, and carrying the guide's values."""

from __future__ import annotations

import pytest
import kubernetes_validate

from tests.manifest_helpers import all_manifests

# The DaemonSet document is a partial object for server-side apply (only the fields we own),
# which a full-object schema check would reject for missing selector and image by design.
PARTIAL_KINDS = {"DaemonSet"}


@pytest.mark.parametrize("version", ["1.31", "1.32", "1.33", "1.34"])
def test_every_rendered_manifest_validates_strictly_against_the_kubernetes_schema(version):
    checked = 0
    for manifest in all_manifests():
        if manifest["kind"] in PARTIAL_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1
    assert checked >= 12


def test_every_object_carries_the_standard_labels():
    for manifest in all_manifests():
        if manifest["kind"] in PARTIAL_KINDS:
            continue
        labels = manifest["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "qwen3-speech", manifest["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "pyinfra"
        assert labels.get("app.kubernetes.io/name")


def _by(kind, name):
    return next(m for m in all_manifests() if m["kind"] == kind and m["metadata"]["name"] == name)


def test_asr_runs_qwen_asr_serve_with_the_guides_memory_fraction_and_context_length():
    pod = _by("Deployment", "qwen3-asr")["spec"]["template"]["spec"]
    asr = pod["containers"][0]
    assert asr["command"] == ["qwen-asr-serve"]
    assert asr["args"][:1] == ["/models/Qwen3-ASR-1.7B"]
    assert asr["args"][asr["args"].index("--gpu-memory-utilization") + 1] == "0.45"
    assert asr["args"][asr["args"].index("--max-model-len") + 1] == "4096"
    assert asr["resources"]["requests"] == {"cpu": "1", "memory": "6Gi", "nvidia.com/gpu": "1"}
    assert {"mountPath": "/dev/shm", "name": "dshm"} in asr["volumeMounts"]
    assert asr["startupProbe"]["failureThreshold"] * asr["startupProbe"]["periodSeconds"] >= 600
    assert pod["initContainers"][0]["name"] == "model-guard"


def test_tts_startup_reads_the_health_json_readiness_stays_true_during_synthesis_and_it_stays_with_asr():
    pod = _by("Deployment", "qwen3-tts")["spec"]["template"]["spec"]
    tts = pod["containers"][0]
    assert tts["startupProbe"]["exec"]["command"][-1].endswith("tts_health_check.py")
    # A synthesis blocks the server's event loop: only a TCP check keeps answering meanwhile.
    assert tts["readinessProbe"]["tcpSocket"]["port"] == "http"
    assert tts["livenessProbe"]["tcpSocket"]["port"] == "http"
    env = {e["name"]: e.get("value") for e in tts["env"]}
    assert env["TTS_BACKEND"] == "official" and env["PORT"] == "8880"
    assert "TTS_DTYPE" not in env  # the official backend ignores it
    affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert affinity["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "qwen3-asr"
    assert "@sha256:" in tts["image"]


def test_tts_dtype_is_passed_only_when_the_inventory_sets_it():
    tts = next(m for m in all_manifests(tts_dtype="float16", tts_backend="pytorch")
               if m["kind"] == "Deployment" and m["metadata"]["name"] == "qwen3-tts")
    env = {e["name"]: e.get("value") for e in tts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TTS_DTYPE"] == "float16"


def test_both_servers_keep_connections_alive_longer_than_the_albs_idle_timeout_on_both_ingresses():
    idle = {m["metadata"]["annotations"]["alb.ingress.kubernetes.io/load-balancer-attributes"]
            for m in all_manifests() if m["kind"] == "Ingress"}
    assert idle == {"idle_timeout.timeout_seconds=1800"}  # group-wide: one value on every member
    tts = _by("Deployment", "qwen3-tts")["spec"]["template"]["spec"]["containers"][0]
    assert tts["command"][:4] == ["python", "-m", "uvicorn", "api.main:app"]
    assert int(tts["command"][tts["command"].index("--timeout-keep-alive") + 1]) > 1800
    asr = _by("Deployment", "qwen3-asr")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in asr["env"]}
    assert int(env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]) > 1800
    assert env["VLLM_MAX_AUDIO_CLIP_FILESIZE_MB"] == "25"


def test_asr_runs_half_precision_and_serves_the_guides_name_first_and_an_alias():
    args = _by("Deployment", "qwen3-asr")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--dtype") + 1] == "half"
    at = args.index("--served-model-name")
    assert args[at + 1:at + 3] == ["/models/Qwen3-ASR-1.7B", "qwen3-asr"]


def test_ingresses_share_one_alb_with_explicit_scheme_ip_targets_and_health_path():
    ingresses = [m for m in all_manifests() if m["kind"] == "Ingress"]
    assert len(ingresses) == 2
    ports = set()
    for ing in ingresses:
        a = ing["metadata"]["annotations"]
        assert a["alb.ingress.kubernetes.io/group.name"] == "qwen3-speech"
        assert a["alb.ingress.kubernetes.io/target-type"] == "ip"
        assert a["alb.ingress.kubernetes.io/healthcheck-path"] == "/health"
        assert a["alb.ingress.kubernetes.io/scheme"] in ("internal", "internet-facing")
        ports.add(a["alb.ingress.kubernetes.io/listen-ports"])
    assert ports == {'[{"HTTP": 8000}]', '[{"HTTP": 8880}]'}


def test_models_volume_keeps_a_fixed_directory_and_is_retained():
    sc = _by("StorageClass", "qwen3-efs-sc")
    assert sc["reclaimPolicy"] == "Retain"
    assert sc["parameters"]["ensureUniqueDirectory"] == "false"
    assert "${" in sc["parameters"]["subPathPattern"] and "PV.name" not in sc["parameters"]["subPathPattern"]


def test_a_changed_inventory_value_changes_only_that_field():
    before, after = all_manifests(), all_manifests(asr_max_model_len=8192)
    changed = [(a["kind"], a["metadata"]["name"]) for a, b in zip(before, after) if a != b]
    assert changed == [("Deployment", "qwen3-asr")]


def test_inventory_values_cannot_change_the_shape_of_a_manifest():
    hostile = "x\n  evil: true"
    manifests = all_manifests(tts_image="repo/tts:1", asr_extra_args=[hostile])
    asr = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "qwen3-asr")
    container = asr["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-1] == hostile
    assert "evil" not in container
