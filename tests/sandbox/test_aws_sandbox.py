"""The sandbox's AWS account (moto server): preloaded like an EKS account, checking EKS tokens as EKS does."""

from __future__ import annotations

import base64
import dataclasses
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from sandbox.aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SandboxAws
from tests.aws_helpers import KUBE_CA_B64, KUBE_ENDPOINT, running_sandbox_aws


@pytest.fixture(scope="module")
def sandbox_aws(tmp_path_factory):
    with running_sandbox_aws(tmp_path_factory.mktemp("aws")) as started:
        yield started


def client(sandbox_aws, service, **credentials):
    credentials = credentials or {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
    return boto3.client(service, endpoint_url=sandbox_aws.endpoint_url, region_name=sandbox_aws.region, **credentials)


def cli_style_token(sts_client, cluster_name: str | None) -> str:
    """A token made with the recipe of `aws eks get-token` (awscli customizations/eks/get_token.py)."""
    def take_param(params, context, **_):
        if "x-k8s-aws-id" in params:
            context["x-k8s-aws-id"] = params.pop("x-k8s-aws-id")

    def add_header(request, **_):
        if "x-k8s-aws-id" in request.context:
            request.headers["x-k8s-aws-id"] = request.context["x-k8s-aws-id"]

    sts_client.meta.events.register("provide-client-params.sts.GetCallerIdentity", take_param)
    sts_client.meta.events.register("before-sign.sts.GetCallerIdentity", add_header)
    params = {"x-k8s-aws-id": cluster_name} if cluster_name else {}
    url = sts_client.generate_presigned_url("get_caller_identity", Params=params, ExpiresIn=60, HttpMethod="GET")
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def reason(sandbox_aws, token: str) -> str:
    with pytest.raises(ValueError) as error:
        sandbox_aws.validate_eks_token(token)
    return str(error.value)


# -- the preloaded account ---------------------------------------------------------------------

def test_describe_cluster_returns_the_sandbox_api_servers_endpoint_and_ca(sandbox_aws):
    cluster = client(sandbox_aws, "eks").describe_cluster(name="qwen3-sandbox")["cluster"]
    assert cluster["status"] == "ACTIVE"
    assert cluster["endpoint"] == KUBE_ENDPOINT
    assert cluster["certificateAuthority"]["data"] == KUBE_CA_B64
    vpc_config = cluster["resourcesVpcConfig"]
    assert vpc_config["subnetIds"] == sandbox_aws.facts["subnet_ids"]
    assert vpc_config["clusterSecurityGroupId"] == sandbox_aws.facts["node_security_group_id"]
    assert vpc_config["vpcId"] == sandbox_aws.facts["vpc_id"]


def test_cluster_subnets_sit_in_two_zones_with_the_internal_elb_and_karpenter_tags(sandbox_aws):
    subnets = client(sandbox_aws, "ec2").describe_subnets(SubnetIds=sandbox_aws.facts["subnet_ids"])["Subnets"]
    assert len({subnet["AvailabilityZone"] for subnet in subnets}) == 2
    for subnet in subnets:
        tags = {tag["Key"]: tag["Value"] for tag in subnet["Tags"]}
        assert tags["kubernetes.io/role/internal-elb"] == "1"
        assert tags["karpenter.sh/discovery"] == "qwen3-sandbox"


def test_model_file_system_is_tagged_and_mounted_in_both_subnets(sandbox_aws):
    efs = client(sandbox_aws, "efs")
    fs_id = sandbox_aws.facts["efs_file_system_id"]
    file_system = efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]
    assert {"Key": "Name", "Value": "qwen3-models"} in file_system["Tags"] and file_system["Encrypted"]
    targets = efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]
    assert sorted(target["SubnetId"] for target in targets) == sorted(sandbox_aws.facts["subnet_ids"])
    assert sandbox_aws.efs_exists(fs_id)
    assert not sandbox_aws.efs_exists("fs-0000000000000000")


def test_ecr_latest_tag_points_at_the_recorded_digest(sandbox_aws):
    images = client(sandbox_aws, "ecr").describe_images(
        repositoryName="qwen3-tts", imageIds=[{"imageTag": "latest"}])["imageDetails"]
    assert images[0]["imageDigest"] == sandbox_aws.facts["ecr_image_digest"]
    assert sandbox_aws.facts["ecr_repository_uri"] == "123456789012.dkr.ecr.us-west-2.amazonaws.com/qwen3-tts"


def test_karpenter_interruption_queue_exists(sandbox_aws):
    assert sandbox_aws.facts["sqs_queue_name"] == "Karpenter-qwen3-sandbox"
    assert client(sandbox_aws, "sqs").get_queue_url(QueueName="Karpenter-qwen3-sandbox")["QueueUrl"]


def test_moto_requests_are_logged_under_the_sandbox_root(sandbox_aws):
    assert "POST /" in (sandbox_aws.root / "aws-requests.log").read_text()


def test_a_second_sandbox_aws_in_the_same_process_is_refused_by_name(sandbox_aws, tmp_path):
    with pytest.raises(RuntimeError, match="already runs in this process"):
        SandboxAws(tmp_path).start(KUBE_ENDPOINT, KUBE_CA_B64)
    assert client(sandbox_aws, "eks").describe_cluster(name="qwen3-sandbox")["cluster"]["endpoint"] == KUBE_ENDPOINT


def test_clear_is_the_only_aws_fault(sandbox_aws):
    sandbox_aws.inject("clear", {})
    with pytest.raises(ValueError, match="unknown AWS fault 'throttle'"):
        sandbox_aws.inject("throttle", {})


# -- EKS tokens --------------------------------------------------------------------------------

def test_token_made_like_aws_eks_get_token_is_accepted_as_the_caller(sandbox_aws):
    token = cli_style_token(client(sandbox_aws, "sts"), "qwen3-sandbox")
    assert sandbox_aws.validate_eks_token(token) == "arn:aws:sts::123456789012:user/moto"
    assert sandbox_aws.validate_eks_token(token) == "arn:aws:sts::123456789012:user/moto"  # from the cache


def test_token_of_an_assumed_role_is_accepted_as_that_role(sandbox_aws):
    credentials = client(sandbox_aws, "sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/deployer", RoleSessionName="ci")["Credentials"]
    role_sts = client(sandbox_aws, "sts", aws_access_key_id=credentials["AccessKeyId"],
                      aws_secret_access_key=credentials["SecretAccessKey"],
                      aws_session_token=credentials["SessionToken"])
    token = cli_style_token(role_sts, "qwen3-sandbox")
    assert sandbox_aws.validate_eks_token(token) == "arn:aws:sts::123456789012:assumed-role/deployer/ci"

    without_session_token = client(sandbox_aws, "sts", aws_access_key_id=credentials["AccessKeyId"],
                                   aws_secret_access_key=credentials["SecretAccessKey"])
    assert "X-Amz-Security-Token" in reason(sandbox_aws, cli_style_token(without_session_token, "qwen3-sandbox"))


def test_token_for_another_cluster_is_refused_naming_both_clusters(sandbox_aws):
    client(sandbox_aws, "eks").create_cluster(
        name="other-cluster", roleArn="arn:aws:iam::123456789012:role/other",
        resourcesVpcConfig={"subnetIds": sandbox_aws.facts["subnet_ids"]})
    message = reason(sandbox_aws, cli_style_token(client(sandbox_aws, "sts"), "other-cluster"))
    assert "'other-cluster'" in message and "'qwen3-sandbox'" in message
    assert "signature does not match" in reason(sandbox_aws, cli_style_token(client(sandbox_aws, "sts"), "nowhere"))


def test_token_with_a_changed_signature_or_parameter_is_refused(sandbox_aws):
    url = base64.urlsafe_b64decode(cli_style_token(client(sandbox_aws, "sts"), "qwen3-sandbox")[11:] + "===").decode()
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for changed in (url.replace(signature, flipped), url.replace("X-Amz-Expires=60", "X-Amz-Expires=900")):
        token = "k8s-aws-v1." + base64.urlsafe_b64encode(changed.encode()).decode().rstrip("=")
        assert "signature does not match" in reason(sandbox_aws, token)


def test_token_without_the_cluster_header_is_refused(sandbox_aws):
    assert "x-k8s-aws-id" in reason(sandbox_aws, cli_style_token(client(sandbox_aws, "sts"), None))


def test_token_for_real_aws_sts_is_refused(sandbox_aws):
    # Presigning needs no network: this URL names sts.us-west-2.amazonaws.com.
    real_sts = boto3.client("sts", region_name="us-west-2", aws_access_key_id=ACCESS_KEY_ID,
                            aws_secret_access_key=SECRET_ACCESS_KEY)
    assert "not this sandbox's STS endpoint" in reason(sandbox_aws, cli_style_token(real_sts, "qwen3-sandbox"))


def test_token_signed_with_a_key_the_sandbox_never_issued_is_refused(sandbox_aws):
    stranger = client(sandbox_aws, "sts", aws_access_key_id="AKIASTRANGER00000000", aws_secret_access_key="x" * 40)
    assert "AKIASTRANGER00000000" in reason(sandbox_aws, cli_style_token(stranger, "qwen3-sandbox"))


def test_strings_that_are_not_eks_tokens_are_refused(sandbox_aws):
    assert "must start with 'k8s-aws-v1.'" in reason(sandbox_aws, "admin-token")
    assert "not this sandbox's STS endpoint" in reason(
        sandbox_aws, "k8s-aws-v1." + base64.urlsafe_b64encode(b"https://example.com/").decode().rstrip("="))


def test_token_is_refused_once_older_than_the_token_ttl(sandbox_aws):
    original = sandbox_aws.options
    sandbox_aws.options = dataclasses.replace(original, token_ttl_seconds=3)
    try:
        token = cli_style_token(client(sandbox_aws, "sts"), "qwen3-sandbox")
        fresh = cli_style_token(client(sandbox_aws, "sts"), "qwen3-sandbox")
        sandbox_aws.validate_eks_token(token)  # accepted (and cached) while young
        time.sleep(4.1)
        assert "expired" in reason(sandbox_aws, token)
        assert "expired" in reason(sandbox_aws, fresh)  # never validated before: checked from X-Amz-Date
    finally:
        sandbox_aws.options = original


# -- the ALB controller's load balancers --------------------------------------------------------

def tags_of(elbv2, arn):
    return {tag["Key"]: tag["Value"] for tag in elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"]}


def test_one_alb_per_group_tagged_like_the_controller_with_a_listener_per_port(sandbox_aws):
    elbv2 = client(sandbox_aws, "elbv2")
    first = sandbox_aws.ensure_load_balancer("qwen3-speech", [8000])
    second = sandbox_aws.ensure_load_balancer("qwen3-speech", [8000, 8880])
    assert first == second
    lb = elbv2.describe_load_balancers(Names=[sandbox_aws.load_balancer_name("qwen3-speech")])["LoadBalancers"][0]
    assert lb["DNSName"] == second and lb["State"]["Code"] == "active" and lb["Type"] == "application"
    assert lb["LoadBalancerName"].startswith("k8s-qwen3speech-")
    assert tags_of(elbv2, lb["LoadBalancerArn"]) == {
        "elbv2.k8s.aws/cluster": "qwen3-sandbox", "ingress.k8s.aws/stack": "qwen3-speech",
        "ingress.k8s.aws/resource": "LoadBalancer"}
    listeners = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert sorted(listener["Port"] for listener in listeners) == [8000, 8880]

    sandbox_aws.ensure_load_balancer("qwen3-speech", [8880])
    listeners = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert [listener["Port"] for listener in listeners] == [8880]
    assert sandbox_aws.ensure_load_balancer("another-group", [80]) != second

    sandbox_aws.delete_load_balancer("qwen3-speech")
    names = [lb["LoadBalancerName"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]]
    assert sandbox_aws.load_balancer_name("qwen3-speech") not in names
    assert sandbox_aws.load_balancer_name("another-group") in names
    sandbox_aws.delete_load_balancer("qwen3-speech")  # gone already: nothing to do


def test_sandbox_without_efs_image_or_queue_leaves_them_out(tmp_path, sandbox_aws):
    # One moto per process: this account is checked after the module's sandbox has stopped.
    sandbox_aws.stop()
    try:
        with running_sandbox_aws(tmp_path, efs_file_system=False, ecr_image=False, sqs_queue=False) as bare:
            facts = bare.facts
            assert facts["efs_file_system_id"] is None and facts["ecr_image_digest"] is None
            assert facts["sqs_queue_name"] is None and facts["ecr_repository_uri"]
            assert client(bare, "efs").describe_file_systems()["FileSystems"] == []
            assert client(bare, "ecr").describe_images(repositoryName="qwen3-tts")["imageDetails"] == []
            assert client(bare, "sqs").list_queues().get("QueueUrls", []) == []
    finally:
        sandbox_aws.start(KUBE_ENDPOINT, KUBE_CA_B64)
