"""Pods safe by default: every container of every object the deploy applies is confined, no pod
carries a service-account token, and the serving pods cannot write the models."""

from __future__ import annotations

import pytest

from tests.manifest_helpers import all_manifests

# Only these images may run as root: qwenllm/qwen3-asr has no USER (it runs as root upstream); the
# TTS pod's model guard runs in it too (as uid 1000). The TTS image, which the seeding and audit
# Jobs run by default, runs as `appuser` (uid 1000).
ROOT_IMAGES = {"qwenllm/qwen3-asr"}
SERVING = {"qwen3-asr", "qwen3-tts"}


def pod_templates(manifests: list[dict] | None = None) -> list[tuple[str, dict, dict]]:
    """(object name, object, pod template) for every object of ours that makes pods. The
    time-slicing DaemonSet document is a partial patch of the device plugin's own pods (only the
    config fields we own), not a pod of this deploy."""
    out = []
    for m in all_manifests() if manifests is None else manifests:
        template = (m.get("spec") or {}).get("template")
        if m["kind"] in {"Deployment", "Job", "StatefulSet"} and template and \
                (template.get("spec") or {}).get("containers"):
            out.append((f'{m["kind"]}/{m["metadata"]["name"]}', m, template))
    return out


def containers() -> list[tuple[str, dict, dict]]:
    """(object/container, pod spec, container) for every container, init containers included."""
    return [(f"{name}/{c['name']}", t["spec"], c) for name, _, t in pod_templates()
            for c in (t["spec"].get("initContainers") or []) + t["spec"]["containers"]]


def _effective(pod: dict, container: dict, key: str):
    """A container's own value, else the pod's (as the kubelet merges them)."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.get("securityContext") or {}).get(key)


def _runs_as_root_upstream(image: str) -> bool:
    """By repository, wherever it is pulled from (Docker Hub, or ECR's pull-through cache of it)."""
    repository = image.split("@")[0]
    if ":" in repository.rsplit("/", 1)[-1]:  # a tag, not a registry's port
        repository = repository.rsplit(":", 1)[0]
    return any(repository == root or repository.endswith("/" + root) for root in ROOT_IMAGES)


def security_problems() -> list[str]:
    problems = []
    for where, pod, c in containers():
        ctx = c.get("securityContext") or {}
        if (_effective(pod, c, "seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if (ctx.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities do not drop ALL")
        if ctx.get("privileged"):
            problems.append(f"{where}: privileged")
        if not _runs_as_root_upstream(c["image"]):
            user = _effective(pod, c, "runAsUser")
            if _effective(pod, c, "runAsNonRoot") is not True or not isinstance(user, int) or user == 0:
                problems.append(f"{where}: image {c['image']} can run as a user, but runAsNonRoot/runAsUser "
                                f"say {_effective(pod, c, 'runAsNonRoot')}/{user}")
    return problems


def token_problems() -> list[str]:
    problems = []
    for name, _, t in pod_templates():
        spec = t["spec"]
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        if spec.get("serviceAccountName") in (None, "default"):
            problems.append(f"{name}: runs as the namespace's default ServiceAccount")
    return problems


def writable_model_mounts(manifests: list[dict] | None = None) -> list[str]:
    problems = []
    for name, m, t in pod_templates(manifests):
        if m["metadata"]["name"] not in SERVING:
            continue
        claims = {v["name"] for v in t["spec"].get("volumes") or [] if "persistentVolumeClaim" in v}
        for c in (t["spec"].get("initContainers") or []) + t["spec"]["containers"]:
            for mount in c.get("volumeMounts") or []:
                if mount["name"] in claims and mount.get("readOnly") is not True:
                    problems.append(f"{name}/{c['name']}: mounts {mount['name']} writable at {mount['mountPath']}")
    return problems


def test_the_check_reaches_every_pod_the_deploy_applies_init_containers_included():
    names = {where for where, _, _ in containers()}
    assert {"Deployment/qwen3-asr/asr", "Deployment/qwen3-asr/model-guard", "Deployment/qwen3-tts/tts",
            "Deployment/qwen3-tts/model-guard", "Deployment/qwen3-tts/wait-for-asr",
            "Job/qwen3-model-audit/audit-asr"} <= names
    assert any(n.startswith("Job/qwen3-seed-") for n in names)


@pytest.mark.parametrize("check", [security_problems, token_problems, writable_model_mounts])
def test_every_container_is_confined_tokenless_and_serving_pods_only_read_the_models(check):
    assert check() == []


def test_the_seeding_job_alone_writes_the_models():
    seeds = [t for _, m, t in pod_templates() if m["metadata"]["name"].startswith("qwen3-seed-")]
    assert seeds and all(not mount.get("readOnly") for t in seeds for c in t["spec"]["containers"]
                         for mount in c["volumeMounts"] if mount["name"] == "models")


def test_a_serving_container_that_could_write_the_models_is_caught():
    manifests = all_manifests()
    tts = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "qwen3-tts")
    for mount in tts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]:
        mount.pop("readOnly", None)
    assert [p for p in writable_model_mounts(manifests) if "models" in p] == [
        "Deployment/qwen3-tts/tts: mounts models writable at /models"]


def _policy(manifests: list[dict], name: str) -> dict:
    return next(m["spec"] for m in manifests if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == name)


def test_only_the_alb_subnets_reach_the_serving_ports_and_the_seeder_reaches_only_dns_and_the_hub():
    manifests = all_manifests(alb_source_cidrs="10.0.100.0/24, 10.0.101.0/24")
    for app, port in (("qwen3-asr", 8000), ("qwen3-tts", 8880)):
        policy = _policy(manifests, app)
        assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == app
        assert policy["ingress"][0] == {"from": [{"ipBlock": {"cidr": "10.0.100.0/24"}},
                                                 {"ipBlock": {"cidr": "10.0.101.0/24"}}],
                                        "ports": [{"protocol": "TCP", "port": port}]}
    # ASR also takes the TTS pod's wait-for-asr, on its serving port only; TTS takes nobody else.
    assert _policy(manifests, "qwen3-asr")["ingress"][1] == {
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "qwen3-tts",
                                                  "app.kubernetes.io/part-of": "qwen3-speech"}}}],
        "ports": [{"protocol": "TCP", "port": 8000}]}
    assert len(_policy(manifests, "qwen3-tts")["ingress"]) == 1
    seed = _policy(manifests, "qwen3-model-seed")
    assert seed["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in seed
    assert [p for rule in seed["egress"] for p in rule["ports"]] == [
        {"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}, {"protocol": "TCP", "port": 443}]
    assert all("to" not in rule for rule in seed["egress"])
    assert _policy(manifests, "qwen3-model-audit")["egress"] == []
    mirror = _policy(all_manifests(hf_endpoint="http://hub-mirror.internal:8080"), "qwen3-model-seed")
    assert mirror["egress"][1]["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_every_pod_of_ours_is_selected_by_a_network_policy():
    manifests = all_manifests()
    selectors = [m["spec"]["podSelector"]["matchLabels"] for m in manifests if m["kind"] == "NetworkPolicy"]
    for name, _, template in pod_templates(manifests):
        labels = template["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in s.items()) for s in selectors), name
