"""Starting, inspecting and stopping sandboxes: the CLI, the pytest fixtures and the pieces they wire together."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from kubernetes import client

from qwen_speech.aws import AwsSession, kube_configuration_for_eks

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_up_status_fault_down_cycle(tmp_path):
    root = tmp_path / "cli-sandbox"
    pieces = ["--without", "aws", "--without", "hub", "--without", "cluster"]
    try:
        up = cli("up", "--dir", str(root), "--fast", *pieces)
        assert up.returncode == 0, up.stderr
        assert f"source {root}/env" in up.stdout
        state = json.loads((root / "state.json").read_text())
        assert state["ready"] and state["kube_url"].startswith("https://127.0.0.1:")
        assert f"export KUBECONFIG={root / 'kubeconfig'}" in (root / "env").read_text()

        again = cli("up", "--dir", str(root), "--fast", *pieces)
        assert again.returncode == 0 and "already runs" in again.stdout
        assert json.loads((root / "state.json").read_text())["pid"] == state["pid"]

        status = cli("status", "--dir", str(root))
        assert status.returncode == 0 and "namespaces" in status.stdout and str(state["pid"]) in status.stdout

        fault = cli("fault", "--dir", str(root), "api-errors", "codes=[503]", "count=2")
        assert fault.returncode == 0, fault.stderr
        assert json.loads(fault.stdout)["result"]["api-errors"] == {"codes": [503], "left": 2, "retry_after": 1, "path": ""}
    finally:
        down = cli("down", "--dir", str(root))
    assert down.returncode == 0 and "Stopped" in down.stdout
    assert not (root / "state.json").exists()
    assert "No sandbox runs" in cli("down", "--dir", str(root)).stdout
    assert cli("status", "--dir", str(root)).returncode == 3


def test_cli_up_names_the_pieces_that_can_be_left_out(tmp_path):
    result = cli("up", "--dir", str(tmp_path / "x"), "--without", "gpu")
    assert result.returncode == 2
    assert "gpu-node" in result.stderr and "efs-file-system" in result.stderr


@pytest.mark.parametrize("args, named", [(["--time-scale", "0"], "time_scale=0.0"),
                                         (["--time-scale", "100", "--fast"], "with fast")])
def test_cli_up_refuses_a_time_scale_it_cannot_live_before_starting_anything(tmp_path, args, named):
    result = cli("up", "--dir", str(tmp_path / "x"), *args)
    assert result.returncode == 2
    assert named in result.stderr and "--time-scale" in result.stderr
    assert not (tmp_path / "x").exists()


def test_kubeconfig_carries_the_ca_and_a_token_the_official_client_uses(make_sandbox):
    handle = make_sandbox(with_aws=False, with_hub=False, with_cluster=False)
    kubeconfig = yaml.safe_load(handle.kubeconfig.read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert kubeconfig["users"][0]["user"]["token"] == handle.state["admin_token"]
    names = [n.metadata.name for n in client.CoreV1Api(handle.api_client()).list_namespace().items]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_eks_token_made_like_aws_eks_get_token_is_accepted_and_audited_with_the_callers_arn(make_sandbox):
    handle = make_sandbox(with_hub=False, with_cluster=False)
    state = handle.state
    session = AwsSession(boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                       region_name=state["region"]), state["region"], state["aws_endpoint_url"])
    configuration = kube_configuration_for_eks(session, state["cluster_name"])
    assert configuration.host == state["kube_url"]  # eks:DescribeCluster points at this API server
    namespaces = client.CoreV1Api(client.ApiClient(configuration)).list_namespace()
    assert len(namespaces.items) == 4
    record = handle.control.audit()[-1]
    assert record["verb"] == "list" and record["user"].startswith("arn:aws:") and record["code"] == 200


def test_the_sandbox_fixture_runs_every_component_and_writes_their_endpoints(sandbox):
    state = sandbox.state
    assert state["components"] == {"api": True, "aws": True, "hub": True, "cluster": True}
    env = sandbox.env()
    assert env["AWS_ENDPOINT_URL"] == state["aws_endpoint_url"] and env["HF_ENDPOINT"] == state["hub_url"]
    nodes = client.CoreV1Api(sandbox.api_client()).list_node(label_selector="node-type=gpu").items
    assert len(nodes) == 1
    eks = boto3.client("eks", region_name=state["region"], endpoint_url=state["aws_endpoint_url"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    assert eks.describe_cluster(name=state["cluster_name"])["cluster"]["endpoint"] == state["kube_url"]
    with urllib.request.urlopen(f"{state['hub_url']}/api/models/Qwen/Qwen3-ASR-1.7B", timeout=10) as response:
        assert json.loads(response.read())["id"] == "Qwen/Qwen3-ASR-1.7B"
    assert {"api-errors", "spot-interruption", "hub-cut", "clear"} <= set(state["faults"])


def test_make_sandbox_leaves_prerequisites_out(make_sandbox):
    handle = make_sandbox(with_hub=False, gpu_node=False, efs_file_system=False)
    nodes = client.CoreV1Api(handle.api_client()).list_node(label_selector="node-type=gpu").items
    assert nodes == []
    efs = boto3.client("efs", region_name=handle.state["region"], endpoint_url=handle.state["aws_endpoint_url"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    assert efs.describe_file_systems()["FileSystems"] == []
    assert handle.state["hub_url"] is None
