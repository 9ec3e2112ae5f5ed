"""The playbook through AWS: EKS by name, EFS by tag, the TTS image pinned by digest, AWS errors."""

from __future__ import annotations

import boto3
import pytest

from sandbox.aws import image_manifest
from tests.deploy_helpers import assert_ok, deploy, deployed, output, run_pyinfra, writes  # noqa: F401


def _ecr(sandbox):
    state = sandbox.state
    return boto3.client("ecr", endpoint_url=state["aws_endpoint_url"], region_name=state["region"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_a_production_shaped_inventory_naming_only_cluster_region_and_efs_tag_deploys_end_to_end(sandbox):
    mark = sandbox.control.audit_mark()
    result = run_pyinfra(sandbox, "deploy.py", "-y", inventory="inventories/sandbox_eks.py")
    assert_ok(result)
    records = sandbox.control.audit_since(mark)
    users = {r.get("user") for r in records}
    assert users and all(u and u.startswith("arn:aws:") for u in users), users  # every request on an EKS token
    assert "round trip" in output(result)
    state = sandbox.state
    elbv2 = boto3.client("elbv2", endpoint_url=state["aws_endpoint_url"], region_name=state["region"],
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    load_balancers = elbv2.describe_load_balancers()["LoadBalancers"]
    assert len(load_balancers) == 1
    assert f"http://{load_balancers[0]['DNSName']}:8000/v1/audio/transcriptions" in output(result)
    assert f"http://{load_balancers[0]['DNSName']}:8880/v1/audio/speech" in output(result)


def test_token_expiry_during_a_long_wait_does_not_break_the_run(make_sandbox):
    sandbox = make_sandbox(token_ttl=3, cluster_overrides={"model_load": 4})
    result = run_pyinfra(sandbox, "deploy.py", "-y", "--data", "eks_token_refresh_seconds=1",
                         inventory="inventories/sandbox_eks.py")
    assert_ok(result)


def test_the_tts_image_is_pinned_by_digest_and_a_moved_tag_shows_as_a_diff(deployed):
    apps = __import__("kubernetes").client.AppsV1Api(deployed.control.kube_api_client())
    image = apps.read_namespaced_deployment("qwen3-tts", "hosthree").spec.template.spec.containers[0].image
    assert image == f"{deployed.state['ecr_repository_uri']}@{deployed.state['ecr_image_digest']}"

    moved = _ecr(deployed).put_image(repositoryName="qwen3-tts", imageManifest=image_manifest("v2"), imageTag="latest",
                                     imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json")
    new_digest = moved["image"]["imageId"]["imageDigest"]
    mark = deployed.control.audit_mark()
    dry = run_pyinfra(deployed, "deploy.py", "--dry", "--diff")
    assert_ok(dry)
    assert writes(deployed.control.audit_since(mark)) == []
    assert new_digest in output(dry) and "Will change Deployment hosthree/qwen3-tts" in output(dry)


@pytest.mark.parametrize("options, data, expected", [
    ({}, ["eks_cluster_name=no-such-cluster"], "no-such-cluster"),
    ({"efs_file_system": False}, [], "Name=qwen3-models"),
    ({"ecr_image": False}, [], "qwen3-tts"),
])
def test_aws_problems_stop_the_run_in_preflight_with_zero_kubernetes_writes(make_sandbox, options, data, expected):
    sandbox = make_sandbox(**options)
    mark = sandbox.control.audit_mark()
    args = [arg for pair in data for arg in ("--data", pair)]
    result = run_pyinfra(sandbox, "deploy.py", "-y", *args, inventory="inventories/sandbox_eks.py")
    assert result.returncode != 0
    assert expected in output(result)
    assert writes(sandbox.control.audit_since(mark)) == []


def test_missing_aws_credentials_are_reported_before_anything_is_written(sandbox):
    mark = sandbox.control.audit_mark()
    result = run_pyinfra(sandbox, "deploy.py", "-y", inventory="inventories/sandbox_eks.py",
                         env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                              "AWS_CONFIG_FILE": "/nonexistent"})
    assert result.returncode != 0
    assert "credentials" in output(result).lower()
    assert writes(sandbox.control.audit_since(mark)) == []
