"""Connecting to EKS by cluster name (describe_cluster + an EKS token), and the AWS error messages."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from qwen_speech import aws
from tests.aws_helpers import (KUBE_CA_PEM, KUBE_ENDPOINT, ROOT, clean_env, isolate_aws_env, running_sandbox_aws,  # noqa: F401
                               sandbox_aws, sandbox_session, session)



def presigned_url(token: str) -> str:
    body = token.removeprefix("k8s-aws-v1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


# -- EKS tokens --------------------------------------------------------------------------------

def test_eks_token_is_accepted_by_the_sandbox_as_the_caller(sandbox_aws, session):
    token, _ = aws.eks_token(session, "qwen3-sandbox")
    assert sandbox_aws.validate_eks_token(token) == "arn:aws:sts::123456789012:user/moto"


def test_eks_token_has_the_shape_aws_eks_get_token_gives_it(session):
    token, expires_at = aws.eks_token(session, "qwen3-sandbox")
    assert token.startswith("k8s-aws-v1.") and not token.endswith("=")
    query = parse_qs(urlsplit(presigned_url(token)).query)
    assert query["Action"] == ["GetCallerIdentity"] and query["X-Amz-Expires"] == ["60"]
    assert query["X-Amz-SignedHeaders"] == ["host;x-k8s-aws-id"]
    left = expires_at - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(minutes=13) < left <= dt.timedelta(minutes=14)


def test_eks_token_for_another_cluster_name_is_refused_by_the_sandbox(sandbox_aws, session):
    token, _ = aws.eks_token(session, "someone-elses-cluster")
    with pytest.raises(ValueError, match="signature does not match for cluster 'qwen3-sandbox'"):
        sandbox_aws.validate_eks_token(token)


def test_session_takes_credentials_from_the_environment_like_the_aws_cli(sandbox_aws, monkeypatch, tmp_path):
    isolate_aws_env(monkeypatch, tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    session = aws.aws_session("us-west-2", endpoint_url=sandbox_aws.endpoint_url)
    assert aws.caller_arn(session) == "arn:aws:sts::123456789012:user/moto"


def test_assumed_role_session_acts_as_the_role_under_the_deploy_session_name(sandbox_aws, monkeypatch, tmp_path):
    isolate_aws_env(monkeypatch, tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    session = aws.aws_session("us-west-2", role_arn="arn:aws:iam::123456789012:role/qwen3-deployer",
                              endpoint_url=sandbox_aws.endpoint_url)
    role_arn = "arn:aws:sts::123456789012:assumed-role/qwen3-deployer/qwen3-speech-deploy"
    assert aws.caller_arn(session) == role_arn
    token, _ = aws.eks_token(session, "qwen3-sandbox")
    assert sandbox_aws.validate_eks_token(token) == role_arn


# -- the Kubernetes client configuration ----------------------------------------------------------

def test_kube_configuration_points_at_the_cluster_endpoint_with_its_ca_and_a_valid_token(sandbox_aws, session):
    configuration = aws.kube_configuration_for_eks(session, "qwen3-sandbox")
    assert configuration.host == KUBE_ENDPOINT and configuration.verify_ssl
    with open(configuration.ssl_ca_cert, "rb") as ca_file:
        assert ca_file.read() == KUBE_CA_PEM
    assert stat.S_IMODE(os.stat(configuration.ssl_ca_cert).st_mode) == 0o600
    header = configuration.auth_settings()["BearerToken"]["value"]
    assert header.startswith("Bearer k8s-aws-v1.")
    assert sandbox_aws.validate_eks_token(header.removeprefix("Bearer ")) == "arn:aws:sts::123456789012:user/moto"


def test_kube_configuration_renews_its_token_once_older_than_the_refresh_age(sandbox_aws, session):
    renewing = aws.kube_configuration_for_eks(session, "qwen3-sandbox", refresh_after_seconds=0.5)
    keeping = aws.kube_configuration_for_eks(session, "qwen3-sandbox")
    renewing_first = renewing.get_api_key_with_prefix("BearerToken", alias="authorization")
    keeping_first = keeping.get_api_key_with_prefix("BearerToken", alias="authorization")
    time.sleep(1.1)  # X-Amz-Date has a resolution of one second
    renewing_second = renewing.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert renewing_second != renewing_first
    assert keeping.get_api_key_with_prefix("BearerToken", alias="authorization") == keeping_first
    assert sandbox_aws.validate_eks_token(renewing_second.removeprefix("Bearer "))


def test_copies_of_the_kube_configuration_renew_their_own_token(sandbox_aws, session):
    # The kubernetes client deep-copies a Configuration (Configuration.set_default / get_default_copy).
    original = aws.kube_configuration_for_eks(session, "qwen3-sandbox", refresh_after_seconds=0.5)
    copied = copy.deepcopy(original)
    first = copied.get_api_key_with_prefix("BearerToken", alias="authorization")
    time.sleep(1.1)
    original.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert copied.get_api_key_with_prefix("BearerToken", alias="authorization") != first


# -- errors ------------------------------------------------------------------------------------

def test_missing_cluster_names_the_cluster_and_the_region(session):
    with pytest.raises(aws.AwsProblem) as problem:
        aws.kube_configuration_for_eks(session, "qwen3-prod")
    assert "'qwen3-prod' not found in us-west-2" in problem.value.message
    assert problem.value.code == "ResourceNotFoundException"


def test_missing_credentials_say_how_to_log_in(sandbox_aws, tmp_path):
    script = ("from qwen_speech import aws\n"
              f"session = aws.aws_session('us-west-2', endpoint_url={sandbox_aws.endpoint_url!r})\n"
              "try:\n    aws.kube_configuration_for_eks(session, 'qwen3-sandbox')\n"
              "except aws.AwsProblem as problem:\n    print(problem.message)\n    raise SystemExit(3)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "eks:DescribeCluster" in result.stdout and "no usable AWS credentials" in result.stdout
    assert "aws sso login" in result.stdout


def test_unknown_profile_is_named(tmp_path, monkeypatch):
    isolate_aws_env(monkeypatch, tmp_path)
    with pytest.raises(aws.AwsProblem, match="aws_profile = 'prod-admin': no such profile"):
        aws.aws_session("us-west-2", profile="prod-admin")


def test_unreachable_endpoint_is_named(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    boto_session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-west-2")
    session = aws.AwsSession(boto_session, "us-west-2", closed_url, max_attempts=1)
    with pytest.raises(aws.AwsProblem) as problem:
        aws.resolve_ecr_image(session, "qwen3-tts", "latest")
    assert f"cannot reach {closed_url}" in problem.value.message


@pytest.fixture(scope="module")
def enforcing_moto():
    """A moto server of its own that checks IAM (after 3 free requests to set up a user), in a subprocess:
    the switch is process-wide in moto."""
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom moto.server import ThreadedMotoServer\n"
         "server = ThreadedMotoServer('127.0.0.1', 0, verbose=False); server.start()\n"
         "print(server.get_host_and_port()[1], flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        iam = boto3.client("iam", endpoint_url=url, region_name="us-west-2",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="deployer")
        key = iam.create_access_key(UserName="deployer")["AccessKey"]
        iam.put_user_policy(UserName="deployer", PolicyName="identity-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}))
        yield url, key
    finally:
        server.stdin.close()
        server.wait(timeout=10)


def test_access_denied_names_the_action_and_the_caller(enforcing_moto):
    url, key = enforcing_moto
    boto_session = boto3.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                                 region_name="us-west-2")
    session = aws.AwsSession(boto_session, "us-west-2", url)
    assert aws.caller_arn(session) == "arn:aws:iam::123456789012:user/deployer"
    with pytest.raises(aws.AwsProblem) as problem:
        with aws.aws_call("ec2:DescribeSubnets", "the cluster's subnets", session.region):
            session.client("ec2").describe_subnets()
    assert problem.value.code == "AccessDenied"
    assert problem.value.message.startswith("AccessDenied: ec2:DescribeSubnets on the cluster's subnets in us-west-2")
    assert "user/deployer" in problem.value.message and "grant ec2:DescribeSubnets" in problem.value.message


def test_rejected_credentials_say_how_to_log_in(enforcing_moto):
    url, _ = enforcing_moto
    boto_session = boto3.Session(aws_access_key_id="AKIAEXPIREDKEY000000", aws_secret_access_key="x" * 40,
                                 region_name="us-west-2")
    with pytest.raises(aws.AwsProblem) as problem:
        aws.caller_arn(aws.AwsSession(boto_session, "us-west-2", url))
    assert problem.value.code == "InvalidClientTokenId"
    assert "rejected the credentials" in problem.value.message and "aws sso login" in problem.value.message
