"""Finding what the account already holds: the EFS file system, the TTS image digest, the ALB, the queue."""

from __future__ import annotations

import threading

import pytest

from qwen_speech import aws
from sandbox.aws import image_manifest
from tests.aws_helpers import running_sandbox_aws, sandbox_aws, sandbox_session, session  # noqa: F401



def file_system_ids(session):
    return sorted(fs["FileSystemId"] for fs in session.client("efs").describe_file_systems()["FileSystems"])


# -- EFS ---------------------------------------------------------------------------------------

def test_given_file_system_id_is_checked_and_used(sandbox_aws, session):
    fs_id = sandbox_aws.facts["efs_file_system_id"]
    result = aws.resolve_efs(session, file_system_id=fs_id, cluster_name="qwen3-sandbox")
    assert (result.file_system_id, result.action) == (fs_id, "given")
    assert result.details["mount_target_zones"] == ["us-west-2a", "us-west-2b"]


def test_given_file_system_id_that_does_not_exist_names_it_and_the_region(session):
    with pytest.raises(aws.AwsProblem) as problem:
        aws.resolve_efs(session, file_system_id="fs-0123456789abcdef0", cluster_name="qwen3-sandbox")
    assert "'fs-0123456789abcdef0' not found in us-west-2" in problem.value.message
    assert problem.value.code == "FileSystemNotFound"


def test_file_system_is_found_by_its_name_tag(sandbox_aws, session):
    result = aws.resolve_efs(session, name_tag="qwen3-models", cluster_name="qwen3-sandbox")
    assert (result.file_system_id, result.action) == (sandbox_aws.facts["efs_file_system_id"], "found")


def test_existing_tagged_file_system_is_used_even_when_create_is_allowed(sandbox_aws, session):
    before = file_system_ids(session)
    result = aws.resolve_efs(session, name_tag="qwen3-models", create=True, cluster_name="qwen3-sandbox")
    assert (result.file_system_id, result.action) == (sandbox_aws.facts["efs_file_system_id"], "found")
    assert file_system_ids(session) == before


def test_two_file_systems_with_the_same_name_tag_are_listed_not_guessed(session):
    efs = session.client("efs")
    ids = [efs.create_file_system(CreationToken=f"dup-{n}", Tags=[{"Key": "Name", "Value": "qwen3-dup"}])["FileSystemId"]
           for n in (1, 2)]
    with pytest.raises(aws.AwsProblem) as problem:
        aws.resolve_efs(session, name_tag="qwen3-dup", create=True, cluster_name="qwen3-sandbox")
    assert "2 file systems in us-west-2 carry Name=qwen3-dup" in problem.value.message
    assert all(fs_id in problem.value.message for fs_id in ids) and "efs_file_system_id" in problem.value.message


# -- ECR ---------------------------------------------------------------------------------------

def test_image_tag_resolves_to_the_digest_the_deployment_pins(sandbox_aws, session):
    image = aws.resolve_ecr_image(session, "qwen3-tts", "latest")
    digest = sandbox_aws.facts["ecr_image_digest"]
    assert image.digest == digest
    assert image.uri_with_digest == f"123456789012.dkr.ecr.us-west-2.amazonaws.com/qwen3-tts@{digest}"
    assert image.tag_uri == "123456789012.dkr.ecr.us-west-2.amazonaws.com/qwen3-tts:latest"


def test_moving_the_tag_changes_the_pinned_digest(sandbox_aws, session):
    first = sandbox_aws.put_image(image_manifest("build 1"), "moving")
    assert aws.resolve_ecr_image(session, "qwen3-tts", "moving").digest == first
    second = sandbox_aws.put_image(image_manifest("build 2"), "moving")
    assert second != first
    assert aws.resolve_ecr_image(session, "qwen3-tts", "moving").uri_with_digest.endswith(f"@{second}")


def test_missing_tag_names_repository_tag_region_and_how_to_push(session):
    with pytest.raises(aws.AwsProblem) as problem:
        aws.resolve_ecr_image(session, "qwen3-tts", "v9")
    message = problem.value.message
    assert "no image tagged 'v9' in ECR repository 'qwen3-tts' in us-west-2" in message
    assert "docker build --target production" in message and "groxaxo/Qwen3-TTS-Openai-Fastapi" in message


def test_missing_repository_says_how_to_create_it(session):
    with pytest.raises(aws.AwsProblem) as problem:
        aws.resolve_ecr_image(session, "qwen3-tts-prod", "latest")
    assert "ECR repository 'qwen3-tts-prod' not found in us-west-2" in problem.value.message
    assert "aws ecr create-repository --repository-name qwen3-tts-prod" in problem.value.message


# -- ALB ---------------------------------------------------------------------------------------

def test_alb_of_the_group_is_found_by_the_controllers_tags(sandbox_aws, session):
    dns_name = sandbox_aws.ensure_load_balancer("qwen3-speech", [8000, 8880])
    sandbox_aws.ensure_load_balancer("someone-else", [80])
    alb = aws.find_load_balancer(session, cluster_name="qwen3-sandbox", group_name="qwen3-speech", wait_seconds=0)
    assert alb.dns_name == dns_name and alb.state == "active"
    assert alb.name == sandbox_aws.load_balancer_name("qwen3-speech")
    assert alb.listener_ports == [8000, 8880] and alb.missing_ports == []


def test_alb_without_a_listener_on_an_expected_port_reports_it(sandbox_aws, session):
    sandbox_aws.ensure_load_balancer("half-group", [8000])
    alb = aws.find_load_balancer(session, cluster_name="qwen3-sandbox", group_name="half-group",
                                 expected_ports=[8000, 8880], wait_seconds=0)
    assert alb.listener_ports == [8000] and alb.missing_ports == [8880]


def test_alb_of_another_cluster_or_group_is_not_taken(sandbox_aws, session):
    sandbox_aws.ensure_load_balancer("qwen3-speech", [8000, 8880])
    with pytest.raises(aws.AwsProblem, match="no ALB tagged ingress.k8s.aws/stack=qwen3-speech, "
                                             "elbv2.k8s.aws/cluster=other-cluster"):
        aws.find_load_balancer(session, cluster_name="other-cluster", group_name="qwen3-speech", wait_seconds=0)
    with pytest.raises(aws.AwsProblem, match="ingress.k8s.aws/stack=nobody"):
        aws.find_load_balancer(session, cluster_name="qwen3-sandbox", group_name="nobody", wait_seconds=0)


def test_alb_lookup_waits_for_the_controller_to_create_it(sandbox_aws, session):
    created = threading.Timer(1.0, sandbox_aws.ensure_load_balancer, args=("late-group", [8000, 8880]))
    created.start()
    try:
        alb = aws.find_load_balancer(session, cluster_name="qwen3-sandbox", group_name="late-group",
                                     wait_seconds=30, poll_seconds=0.2)
    finally:
        created.join()
    assert alb.name == sandbox_aws.load_balancer_name("late-group") and alb.missing_ports == []


# -- SQS ---------------------------------------------------------------------------------------

def test_interruption_queue_is_reported_present_or_absent(session):
    assert aws.check_interruption_queue(session, "Karpenter-qwen3-sandbox") is True
    assert aws.check_interruption_queue(session, "Karpenter-my-eks-cluster") is False


# -- ACM: the ALB's certificate ----------------------------------------------------------------

def test_the_albs_certificate_must_exist_be_issued_and_cover_both_hosts(sandbox_aws, session):
    arn = sandbox_aws.facts["acm_certificate_arn"]
    aws.check_certificate(session, arn, ["asr.speech.sandbox.test", "tts.speech.sandbox.test"])
    with pytest.raises(aws.AwsProblem) as problem:
        aws.check_certificate(session, arn, ["asr.speech.sandbox.test", "tts.example.com"])
    assert "not ['tts.example.com']" in str(problem.value) and "ingress_tts_host" in str(problem.value)
    with pytest.raises(aws.AwsProblem) as problem:  # a wildcard covers one label only
        aws.check_certificate(session, arn, ["a.b.speech.sandbox.test"])
    missing = arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    with pytest.raises(aws.AwsProblem) as problem:
        aws.check_certificate(session, missing, ["asr.speech.sandbox.test"])
    assert "ResourceNotFoundException" in str(problem.value) and missing in str(problem.value)
