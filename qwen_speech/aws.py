"""The playbook's AWS side: connect to EKS, find or create EFS, pin the ECR image, find the ALB.

Plain functions over a boto3 session; no pyinfra here. `endpoint_url=None` means real AWS (or
whatever `AWS_ENDPOINT_URL` says); the sandbox inventory passes its moto URL. Every botocore error
that reaches a caller is turned into one `AwsProblem` whose message names the API action, the
resource and the fix, so the playbook can stop before its first Kubernetes write.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import hashlib
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)

DEPLOY_SESSION_NAME = "qwen3-speech-deploy"
# Throttling (and 5xx) are retried by botocore itself; adaptive mode also slows the client down.
RETRY_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 8}, connect_timeout=10, read_timeout=60)
EKS_TOKEN_PREFIX = "k8s-aws-v1."
EKS_CLUSTER_HEADER = "x-k8s-aws-id"
# EKS accepts a token for 15 minutes after signing; `aws eks get-token` reports 14.
EKS_TOKEN_LIFETIME = dt.timedelta(minutes=14)
EKS_TOKEN_REFRESH_SECONDS = 600
NFS_PORT = 2049
PUSH_FIX = ("build and push it: `docker build --target production -t <uri> .` in a checkout of "
            "groxaxo/Qwen3-TTS-Openai-Fastapi, then `aws ecr get-login-password | docker login ...` and `docker push <uri>`")
# The ASR image comes from Docker Hub: into ECR by a pull-through cache (its first pull through
# the cache creates the repository) or by a copy pushed there.
ASR_PUSH_FIX = ("pull it once through the pull-through cache so ECR creates and fills the repository "
                "(`aws ecr get-login-password | docker login ...`, then `docker pull <uri>`), or copy it there: "
                "`docker pull qwenllm/qwen3-asr:latest && docker tag qwenllm/qwen3-asr:latest <uri> && docker push <uri>`")
LOGIN_FIX = ("log in: `aws sso login --profile <profile>` and set aws_profile in the inventory, or export "
             "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN); in the sandbox: `source .sandbox/env`")
CREDENTIAL_ERRORS = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                     "InvalidSignatureException", "SignatureDoesNotMatch", "AuthFailure", "InvalidAccessKeyId",
                     "RequestExpired", "IncompleteSignature"}
ACCESS_DENIED_ERRORS = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}
THROTTLING_ERRORS = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
                     "ThrottledException", "SlowDown"}
# boto3 service name -> IAM action prefix, to name the permission an operator has to grant.
IAM_PREFIX = {"efs": "elasticfilesystem", "elbv2": "elasticloadbalancing", "eks": "eks", "ecr": "ecr", "ec2": "ec2",
              "sqs": "sqs", "sts": "sts"}


class AwsProblem(Exception):
    """An AWS call that failed in a way the operator must fix; `.message` names action, resource and fix."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code  # the AWS error code behind it, when there is one


# ---------------------------------------------------------------------------------------------
# Errors


def problem_from(error: Exception, *, action: str, resource: str, region: str | None) -> AwsProblem:
    """Turn a botocore error into an AwsProblem naming `action` (e.g. eks:DescribeCluster) and `resource`."""
    where = f" in {region}" if region else ""
    if isinstance(error, AwsProblem):
        return error
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return AwsProblem(f"{action} on {resource}: no usable AWS credentials ({error}); {LOGIN_FIX}")
    if isinstance(error, (TokenRetrievalError, UnauthorizedSSOTokenError)):
        return AwsProblem(f"{action} on {resource}: the SSO session has expired or is missing ({error}); {LOGIN_FIX}")
    if isinstance(error, ProfileNotFound):
        profile = getattr(error, "kwargs", {}).get("profile")
        return AwsProblem(f"aws_profile = {profile!r}: no such profile in the AWS config files; name one that "
                          "`aws configure list-profiles` shows, or run `aws configure sso` to add it")
    if isinstance(error, NoRegionError):
        return AwsProblem(f"{action}: no AWS region; set aws_region in the inventory, e.g. \"us-west-2\"")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        endpoint = getattr(error, "kwargs", {}).get("endpoint_url", "the AWS endpoint")
        return AwsProblem(f"{action} on {resource}: cannot reach {endpoint} ({error}); check the network, aws_region "
                          "and aws_endpoint_url (for the sandbox: is `python -m sandbox up` running?)")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code in CREDENTIAL_ERRORS:
            return AwsProblem(f"{action} on {resource}: AWS rejected the credentials ({code}: {message}); {LOGIN_FIX}", code)
        if code in ACCESS_DENIED_ERRORS:
            # AWS says "User: arn:... is not authorized to perform: eks:DescribeCluster on resource: arn:..."
            denied_action = re.search(r"perform: ([\w-]+:\w+)", message)
            denied_resource = re.search(r"on resource: (\S+)", message)
            wanted = denied_action.group(1) if denied_action else action
            target = denied_resource.group(1).rstrip(".,") if denied_resource else resource
            return AwsProblem(f"AccessDenied: {wanted} on {target}{where} ({message or code}); grant {wanted} on "
                              f"{target} to the deploying identity (aws sts get-caller-identity shows who that is)", code)
        if code in THROTTLING_ERRORS:
            return AwsProblem(f"{action} on {resource}{where}: still throttled after botocore's retries ({code}); "
                              "rerun later or raise the account's API quota", code)
        return AwsProblem(f"{action} on {resource}{where} failed: {code}: {message}", code)
    return AwsProblem(f"{action} on {resource}{where} failed: {error}")


@contextlib.contextmanager
def aws_call(action: str, resource: str, region: str | None) -> Iterator[None]:
    """Run boto3 calls; a botocore error leaves as an AwsProblem naming `action` and `resource`."""
    try:
        yield
    except AwsProblem:
        raise
    except (ClientError, BotoCoreError) as error:
        raise problem_from(error, action=action, resource=resource, region=region) from None


def error_code(error: ClientError) -> str:
    """The AWS error code of a ClientError (e.g. "FileSystemNotFound")."""
    return error.response.get("Error", {}).get("Code", "")


# ---------------------------------------------------------------------------------------------
# Session


class AwsSession:
    """A boto3 session in one region, with an optional endpoint (the sandbox's moto) and retrying clients."""

    def __init__(self, boto_session: boto3.Session, region: str, endpoint_url: str | None = None, *,
                 max_attempts: int = 8):
        self.boto = boto_session
        self.region = region
        self.endpoint_url = endpoint_url
        self.config = RETRY_CONFIG.merge(Config(retries={"mode": "adaptive", "max_attempts": max_attempts}))
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._account: str | None = None

    def client(self, service: str) -> Any:
        """A cached boto3 client for `service` with the adaptive retry config."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.boto.client(service, region_name=self.region,
                                                          endpoint_url=self.endpoint_url, config=self.config)
            return self._clients[service]

    def account(self) -> str:
        """The deploying identity's account id: asked of STS once per run (both images' ECR registries need it)."""
        if self._account is None:
            with aws_call("sts:GetCallerIdentity", "the deploying identity", self.region):
                self._account = self.client("sts").get_caller_identity()["Account"]
        return self._account

    def __repr__(self) -> str:
        return f"AwsSession(region={self.region!r}, endpoint_url={self.endpoint_url!r})"


class _AssumedRoleProvider(CredentialProvider):
    """Credentials of `role_arn`, assumed now with the source session and re-assumed before they expire."""

    METHOD = "qwen3-speech-assume-role"
    CANONICAL_NAME = "qwen3-speech-assume-role"

    def __init__(self, sts_client: Any, role_arn: str):
        super().__init__()
        self._sts = sts_client
        self._role_arn = role_arn
        # Assume now: a role that cannot be assumed fails the session, not some later call.
        self._credentials = RefreshableCredentials.create_from_metadata(self._fetch(), self._fetch, self.METHOD)

    def _fetch(self) -> dict[str, str]:
        with aws_call("sts:AssumeRole", self._role_arn, self._sts.meta.region_name):
            credentials = self._sts.assume_role(RoleArn=self._role_arn, RoleSessionName=DEPLOY_SESSION_NAME)["Credentials"]
        return {"access_key": credentials["AccessKeyId"], "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"], "expiry_time": credentials["Expiration"].isoformat()}

    def load(self) -> RefreshableCredentials:
        return self._credentials


def aws_session(region: str, profile: str | None = None, role_arn: str | None = None,
                endpoint_url: str | None = None, *, max_attempts: int = 8) -> AwsSession:
    """A session in `region` from the default credential chain or `profile`, optionally as `role_arn`.

    + region: the cluster's region, e.g. "us-west-2"
    + profile: a profile of ~/.aws/config (SSO or keys); None = default chain (env, profile, instance role)
    + role_arn: a role to assume (session name qwen3-speech-deploy), refreshed before it expires
    + endpoint_url: None for AWS; the sandbox's moto URL in the sandbox inventory
    + max_attempts: botocore attempts per call (throttling, 5xx and connection errors are retried)
    """
    with aws_call("session", f"profile {profile!r}", region):
        source = boto3.Session(profile_name=profile, region_name=region)
        if not role_arn:
            return AwsSession(source, region, endpoint_url, max_attempts=max_attempts)
        sts = source.client("sts", region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG)
        assumed = botocore.session.get_session()
        assumed.get_component("credential_provider").insert_before("env", _AssumedRoleProvider(sts, role_arn))
        return AwsSession(boto3.Session(botocore_session=assumed, region_name=region), region, endpoint_url,
                          max_attempts=max_attempts)


def caller_arn(session: AwsSession) -> str:
    """The ARN of the identity the session acts as (sts:GetCallerIdentity); checks the credentials."""
    with aws_call("sts:GetCallerIdentity", "the deploying identity", session.region):
        return session.client("sts").get_caller_identity()["Arn"]


# ---------------------------------------------------------------------------------------------
# EKS


def describe_cluster(session: AwsSession, cluster_name: str) -> dict[str, Any]:
    """eks:DescribeCluster; a missing cluster is an AwsProblem naming cluster and region."""
    try:
        with aws_call("eks:DescribeCluster", f"cluster {cluster_name}", session.region):
            return session.client("eks").describe_cluster(name=cluster_name)["cluster"]
    except AwsProblem as problem:
        if problem.code == "ResourceNotFoundException":
            raise AwsProblem(f"eks:DescribeCluster: EKS cluster {cluster_name!r} not found in {session.region}; check "
                             f"eks_cluster_name and aws_region (aws eks list-clusters --region {session.region})",
                             problem.code) from None
        raise


def _token_sts_client(session: AwsSession) -> Any:
    # A client of its own: the handlers below must not touch the session's shared STS client.
    sts = session.boto.client("sts", region_name=session.region, endpoint_url=session.endpoint_url,
                              config=session.config)

    def take_cluster_param(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if EKS_CLUSTER_HEADER in params:
            context[EKS_CLUSTER_HEADER] = params.pop(EKS_CLUSTER_HEADER)

    def add_cluster_header(request: Any, **_: Any) -> None:
        if EKS_CLUSTER_HEADER in request.context:
            request.headers[EKS_CLUSTER_HEADER] = request.context[EKS_CLUSTER_HEADER]

    sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", take_cluster_param)
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    return sts


def eks_token(session: AwsSession, cluster_name: str) -> tuple[str, dt.datetime]:
    """A bearer token for the EKS cluster, made as `aws eks get-token` makes it; returns (token, expires_at UTC).

    The token is a presigned sts:GetCallerIdentity URL signed over the header x-k8s-aws-id=<cluster>.
    """
    sts = _token_sts_client(session)
    with aws_call("sts:GetCallerIdentity (presign)", f"EKS token for {cluster_name}", session.region):
        url = sts.generate_presigned_url("get_caller_identity", Params={EKS_CLUSTER_HEADER: cluster_name},
                                         ExpiresIn=60, HttpMethod="GET")
    token = EKS_TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")
    return token, dt.datetime.now(dt.timezone.utc) + EKS_TOKEN_LIFETIME


def _write_ca_file(ca_pem_b64: str, cluster_name: str) -> str:
    try:
        pem = base64.b64decode(ca_pem_b64, validate=True)
    except ValueError:
        raise AwsProblem(f"eks:DescribeCluster: certificateAuthority.data of cluster {cluster_name!r} is not base64") from None
    descriptor, path = tempfile.mkstemp(prefix=f"eks-{cluster_name}-ca-", suffix=".pem")  # mode 0600
    with os.fdopen(descriptor, "wb") as ca_file:
        ca_file.write(pem)
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return path


def kube_configuration_for_eks(session: AwsSession, cluster_name: str, *,
                               refresh_after_seconds: float = EKS_TOKEN_REFRESH_SECONDS) -> Any:
    """A kubernetes.client.Configuration for the EKS cluster, from eks:DescribeCluster and an EKS token.

    + cluster_name: the EKS cluster; it must be ACTIVE
    + refresh_after_seconds: a token older than this is replaced before the next request (EKS accepts 15 min)
    """
    from kubernetes import client as kube_client

    cluster = describe_cluster(session, cluster_name)
    status = cluster.get("status")
    if status != "ACTIVE" or not cluster.get("endpoint"):
        raise AwsProblem(f"eks:DescribeCluster: EKS cluster {cluster_name!r} in {session.region} is {status}, not ACTIVE; "
                         f"wait for it (aws eks wait cluster-active --name {cluster_name} --region {session.region})")
    configuration = kube_client.Configuration()
    configuration.host = cluster["endpoint"]
    configuration.ssl_ca_cert = _write_ca_file(cluster["certificateAuthority"]["data"], cluster_name)
    configuration.verify_ssl = True
    token, _ = eks_token(session, cluster_name)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    lock = threading.Lock()

    def refresh_token(config: Any) -> None:
        # Called by the client before every request: long waits outlive a token's 15 minutes. The age
        # comes from the token itself, so deep copies of the Configuration refresh too.
        with lock:
            if eks_token_age_seconds(config.api_key["authorization"]) >= refresh_after_seconds:
                config.api_key["authorization"], _ = eks_token(session, cluster_name)

    configuration.refresh_api_key_hook = refresh_token
    return configuration


def eks_token_age_seconds(token: str) -> float:
    """Seconds since an EKS token was signed (its X-Amz-Date); infinite when that cannot be read."""
    body = token.removeprefix(EKS_TOKEN_PREFIX)
    try:
        url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        signed = dt.datetime.strptime(parse_qs(urlsplit(url).query)["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    except (ValueError, KeyError, UnicodeDecodeError):
        return float("inf")
    return (dt.datetime.now(dt.timezone.utc) - signed.replace(tzinfo=dt.timezone.utc)).total_seconds()


# ---------------------------------------------------------------------------------------------
# EFS


@dataclass
class EfsResult:
    """The EFS file system the StorageClass uses, and how it was obtained."""

    file_system_id: str | None
    action: str  # "given" | "found" | "created" | "would-create"
    details: dict[str, Any] = field(default_factory=dict)


def efs_creation_token(cluster_name: str, name_tag: str) -> str:
    """The CreationToken of the file system this playbook creates: a rerun finds it instead of making another."""
    token = f"qwen3-speech-{cluster_name}-{name_tag}"
    return token if len(token) <= 64 else f"qwen3-speech-{hashlib.sha256(token.encode()).hexdigest()[:40]}"


def _file_systems(session: AwsSession, **filters: str) -> list[dict[str, Any]]:
    efs = session.client("efs")
    found: list[dict[str, Any]] = []
    for page in efs.get_paginator("describe_file_systems").paginate(**filters):
        found.extend(page["FileSystems"])
    return found


def _name_of(file_system: dict[str, Any]) -> str | None:
    return file_system.get("Name") or next(
        (tag["Value"] for tag in file_system.get("Tags", []) if tag["Key"] == "Name"), None)


def resolve_efs(session: AwsSession, *, file_system_id: str | None = None, name_tag: str | None = None,
                create: bool = False, cluster_name: str, dry_run: bool = False,
                wait_seconds: float = 300, poll_seconds: float = 5) -> EfsResult:
    """The EFS file system for the models: given, found by Name tag, or (create=True) created; never deleted.

    + file_system_id: fs-...; checked to exist and be available
    + name_tag: the Name tag to find it by (exactly one may carry it), and to give a created one
    + create: create it when none carries the tag: encrypted, CreationToken from cluster and name, mount
      targets in the cluster's subnets (one per AZ), security group `<name>-efs` allowing NFS from the nodes
    + cluster_name: the EKS cluster whose subnets and node security groups the mount targets serve
    + dry_run: report what would be created (action "would-create"), create nothing
    + wait_seconds: bound on waiting for the file system and its mount targets to become available
    """
    region = session.region
    if file_system_id:
        try:
            with aws_call("elasticfilesystem:DescribeFileSystems", f"file system {file_system_id}", region):
                file_system = _file_systems(session, FileSystemId=file_system_id)[0]
        except AwsProblem as problem:
            if problem.code == "FileSystemNotFound":
                raise AwsProblem(f"elasticfilesystem:DescribeFileSystems: EFS file system {file_system_id!r} not found "
                                 f"in {region}; check efs_file_system_id, or leave it empty and set efs_name_tag", problem.code) from None
            raise
        return EfsResult(file_system_id, "given", _efs_details(session, file_system))
    if not name_tag:
        raise AwsProblem("EFS: neither efs_file_system_id nor efs_name_tag is set; name the file system one way or the other")
    with aws_call("elasticfilesystem:DescribeFileSystems", f"file systems tagged Name={name_tag}", region):
        tagged = [fs for fs in _file_systems(session) if _name_of(fs) == name_tag
                  and fs["LifeCycleState"] not in ("deleting", "deleted")]
    if len(tagged) > 1:
        listing = ", ".join(f"{fs['FileSystemId']} (created {fs['CreationTime']:%Y-%m-%d})" for fs in tagged)
        raise AwsProblem(f"EFS: {len(tagged)} file systems in {region} carry Name={name_tag}: {listing}; "
                         "set efs_file_system_id to the one holding the models")
    if tagged and not create:
        return EfsResult(tagged[0]["FileSystemId"], "found", _efs_details(session, tagged[0]))
    if not tagged and not create:
        raise AwsProblem(f"EFS: no file system in {region} carries Name={name_tag}; create one (efs_create: true "
                         "lets the playbook do it), or set efs_file_system_id")

    token = efs_creation_token(cluster_name, name_tag)
    if not tagged:
        # Someone may have renamed the one a previous run created: the creation token still finds it.
        with aws_call("elasticfilesystem:DescribeFileSystems", f"creation token {token}", region):
            tagged = _file_systems(session, CreationToken=token)
    plan = _mount_target_plan(session, cluster_name, tagged[0]["FileSystemId"] if tagged else None, name_tag)
    if dry_run:
        if tagged:
            details = {**_efs_details(session, tagged[0]), "would_create_mount_targets_in": plan["missing_subnets"]}
            return EfsResult(tagged[0]["FileSystemId"], "found", details)
        return EfsResult(None, "would-create", {
            "creation_token": token, "name": name_tag, "encrypted": True, "vpc_id": plan["vpc_id"],
            "mount_target_subnets": plan["missing_subnets"], "security_group": plan["security_group_name"],
            "nfs_from_security_groups": plan["node_security_groups"]})

    if tagged:
        file_system_id, action = tagged[0]["FileSystemId"], "found"
    else:
        file_system_id, action = _create_file_system(session, token, name_tag, cluster_name), "created"
    _wait_until(lambda: _file_systems(session, FileSystemId=file_system_id)[0]["LifeCycleState"] == "available",
                wait_seconds, poll_seconds, f"EFS file system {file_system_id} to become available",
                "elasticfilesystem:DescribeFileSystems", region)
    if plan["missing_subnets"]:
        security_group_id = _ensure_efs_security_group(session, plan)
        for subnet_id in plan["missing_subnets"]:
            with aws_call("elasticfilesystem:CreateMountTarget", f"{file_system_id} in {subnet_id}", region):
                try:
                    session.client("efs").create_mount_target(FileSystemId=file_system_id, SubnetId=subnet_id,
                                                              SecurityGroups=[security_group_id])
                except ClientError as error:
                    if error_code(error) != "MountTargetConflict":  # made by a concurrent run: fine
                        raise
    _wait_until(lambda: all(target["LifeCycleState"] == "available" for target in _mount_targets(session, file_system_id)),
                wait_seconds, poll_seconds, f"the mount targets of {file_system_id} to become available",
                "elasticfilesystem:DescribeMountTargets", region)
    file_system = _file_systems(session, FileSystemId=file_system_id)[0]
    return EfsResult(file_system_id, action, _efs_details(session, file_system))


def delete_access_point(session: AwsSession, access_point_id: str) -> bool:
    """Delete an EFS access point (its directory and files stay on the file system); False when already gone."""
    try:
        with aws_call("efs:DeleteAccessPoint", access_point_id, session.region):
            session.client("efs").delete_access_point(AccessPointId=access_point_id)
    except AwsProblem as problem:
        if problem.code == "AccessPointNotFound":
            return False
        raise
    return True


def _create_file_system(session: AwsSession, token: str, name_tag: str, cluster_name: str) -> str:
    with aws_call("elasticfilesystem:CreateFileSystem", f"file system Name={name_tag}", session.region):
        try:
            return session.client("efs").create_file_system(
                CreationToken=token, PerformanceMode="generalPurpose", Encrypted=True, ThroughputMode="elastic",
                Tags=[{"Key": "Name", "Value": name_tag}, {"Key": "qwen3-speech/cluster", "Value": cluster_name}],
            )["FileSystemId"]
        except ClientError as error:
            if error_code(error) != "FileSystemAlreadyExists":
                raise
            # Same creation token: an earlier (or concurrent) run made it; use that one.
            return error.response.get("FileSystemId") or _file_systems(session, CreationToken=token)[0]["FileSystemId"]


def _mount_targets(session: AwsSession, file_system_id: str) -> list[dict[str, Any]]:
    with aws_call("elasticfilesystem:DescribeMountTargets", f"file system {file_system_id}", session.region):
        return session.client("efs").describe_mount_targets(FileSystemId=file_system_id)["MountTargets"]


def _efs_details(session: AwsSession, file_system: dict[str, Any]) -> dict[str, Any]:
    targets = _mount_targets(session, file_system["FileSystemId"])
    return {"name": _name_of(file_system), "life_cycle_state": file_system["LifeCycleState"],
            "encrypted": file_system.get("Encrypted"),
            "mount_target_zones": sorted({target.get("AvailabilityZoneName", "") for target in targets}),
            "mount_target_subnets": sorted(target["SubnetId"] for target in targets)}


def _mount_target_plan(session: AwsSession, cluster_name: str, file_system_id: str | None, name_tag: str) -> dict[str, Any]:
    """The cluster's subnets that need a mount target (one per AZ not yet served) and the security groups."""
    cluster = describe_cluster(session, cluster_name)
    vpc_config = cluster.get("resourcesVpcConfig", {})
    subnet_ids = vpc_config.get("subnetIds", [])
    if not subnet_ids:
        raise AwsProblem(f"eks:DescribeCluster: cluster {cluster_name!r} lists no subnets; cannot place EFS mount targets")
    ec2 = session.client("ec2")
    with aws_call("ec2:DescribeSubnets", ", ".join(subnet_ids), session.region):
        subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    served_zones = set()
    if file_system_id:
        served_zones = {target.get("AvailabilityZoneName") for target in _mount_targets(session, file_system_id)}
    missing: dict[str, str] = {}
    for subnet in sorted(subnets, key=lambda s: subnet_ids.index(s["SubnetId"])):
        zone = subnet["AvailabilityZone"]
        if zone not in served_zones and zone not in missing:
            missing[zone] = subnet["SubnetId"]
    vpc_id = vpc_config.get("vpcId") or subnets[0]["VpcId"]
    node_groups = [vpc_config["clusterSecurityGroupId"]] if vpc_config.get("clusterSecurityGroupId") else []
    # Karpenter nodes use the security groups tagged for discovery, not the cluster security group.
    with aws_call("ec2:DescribeSecurityGroups", f"karpenter.sh/discovery={cluster_name}", session.region):
        discovered = ec2.describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "tag:karpenter.sh/discovery", "Values": [cluster_name]}])["SecurityGroups"]
    node_groups += [group["GroupId"] for group in discovered if group["GroupId"] not in node_groups]
    if not node_groups:
        raise AwsProblem(f"EFS: cluster {cluster_name!r} has no cluster security group and no security group tagged "
                         f"karpenter.sh/discovery={cluster_name}; cannot open NFS to the nodes")
    return {"vpc_id": vpc_id, "missing_subnets": list(missing.values()), "node_security_groups": node_groups,
            "security_group_name": f"{name_tag}-efs"}


def _ensure_efs_security_group(session: AwsSession, plan: dict[str, Any]) -> str:
    ec2, region, name = session.client("ec2"), session.region, plan["security_group_name"]
    with aws_call("ec2:DescribeSecurityGroups", f"security group {name}", region):
        groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [plan["vpc_id"]]},
                                                       {"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    if groups:
        group_id = groups[0]["GroupId"]
        allowed = {pair["GroupId"] for permission in groups[0].get("IpPermissions", [])
                   if permission.get("FromPort") == NFS_PORT for pair in permission.get("UserIdGroupPairs", [])}
    else:
        with aws_call("ec2:CreateSecurityGroup", f"security group {name} in {plan['vpc_id']}", region):
            group_id = ec2.create_security_group(GroupName=name, VpcId=plan["vpc_id"],
                                                 Description="NFS from the EKS nodes to the Qwen3 model file system")["GroupId"]
        allowed = set()
    missing = [group for group in plan["node_security_groups"] if group not in allowed]
    if missing:
        with aws_call("ec2:AuthorizeSecurityGroupIngress", f"security group {group_id}", region):
            try:
                ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[{
                    "IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
                    "UserIdGroupPairs": [{"GroupId": group} for group in missing]}])
            except ClientError as error:
                if error_code(error) != "InvalidPermission.Duplicate":
                    raise
    return group_id


def _wait_until(done: Callable[[], bool], wait_seconds: float, poll_seconds: float, what: str,
                action: str, region: str) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        with aws_call(action, what, region):
            if done():
                return
        if time.monotonic() >= deadline:
            raise AwsProblem(f"{action}: gave up waiting {wait_seconds:.0f} s for {what}; check it in the AWS console and rerun")
        time.sleep(poll_seconds)


# ---------------------------------------------------------------------------------------------
# ECR


@dataclass(frozen=True)
class ImageRef:
    """An ECR image: `uri_with_digest` pins it (repo@sha256:...), `tag_uri` is what the tag points at today."""

    uri_with_digest: str
    digest: str
    tag_uri: str


def resolve_ecr_image(session: AwsSession, repository: str, tag: str, push_fix: str = PUSH_FIX) -> ImageRef:
    """Resolve `<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` to its digest.

    + repository: the ECR repository name, e.g. "qwen3-tts", or a pull-through cache's "docker-hub/qwenllm/qwen3-asr"
    + tag: the image tag, e.g. "latest"; the digest it points at now is what the Deployment pins
    + push_fix: how to get the image there, for the error (`<uri>` stands for the tag's URI)
    """
    region = session.region
    account = session.account()
    registry = f"{account}.dkr.ecr.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")
    tag_uri = f"{registry}/{repository}:{tag}"
    try:
        with aws_call("ecr:DescribeImages", f"{repository}:{tag}", region):
            images = session.client("ecr").describe_images(repositoryName=repository,
                                                           imageIds=[{"imageTag": tag}])["imageDetails"]
    except AwsProblem as problem:
        if problem.code == "RepositoryNotFoundException":
            raise AwsProblem(f"ecr:DescribeImages: ECR repository {repository!r} not found in {region} (account "
                             f"{account}); create it (aws ecr create-repository --repository-name {repository} "
                             f"--region {region}) and {push_fix.replace('<uri>', tag_uri)}", problem.code) from None
        if problem.code == "ImageNotFoundException":
            raise AwsProblem(f"ecr:DescribeImages: no image tagged {tag!r} in ECR repository {repository!r} in {region}; "
                             f"{push_fix.replace('<uri>', tag_uri)}", problem.code) from None
        raise
    if not images:
        raise AwsProblem(f"ecr:DescribeImages: no image tagged {tag!r} in ECR repository {repository!r} in {region}; "
                         f"{push_fix.replace('<uri>', tag_uri)}")
    digest = images[0]["imageDigest"]
    return ImageRef(uri_with_digest=f"{registry}/{repository}@{digest}", digest=digest, tag_uri=tag_uri)


# ---------------------------------------------------------------------------------------------
# ALB


@dataclass(frozen=True)
class LoadBalancer:
    """The shared ALB of an IngressGroup, as the AWS Load Balancer Controller made it."""

    name: str
    dns_name: str
    arn: str
    state: str
    listener_ports: list[int]
    missing_ports: list[int]


def _group_load_balancers(session: AwsSession, cluster_name: str, group_name: str) -> list[dict[str, Any]]:
    elbv2 = session.client("elbv2")
    load_balancers = [lb for page in elbv2.get_paginator("describe_load_balancers").paginate()
                      for lb in page["LoadBalancers"]]
    by_arn = {lb["LoadBalancerArn"]: lb for lb in load_balancers}
    arns = list(by_arn)
    wanted = {"ingress.k8s.aws/stack": group_name, "elbv2.k8s.aws/cluster": cluster_name}
    matching = []
    for start in range(0, len(arns), 20):  # describe_tags takes at most 20 ARNs
        for description in elbv2.describe_tags(ResourceArns=arns[start:start + 20])["TagDescriptions"]:
            tags = {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}
            if all(tags.get(key) == value for key, value in wanted.items()):
                matching.append(by_arn[description["ResourceArn"]])
    return matching


def find_load_balancer(session: AwsSession, *, cluster_name: str, group_name: str, wait_seconds: float,
                       expected_ports: list[int] | tuple[int, ...] = (8000, 8880), poll_seconds: float = 5) -> LoadBalancer:
    """The ALB tagged ingress.k8s.aws/stack=<group> and elbv2.k8s.aws/cluster=<cluster>.

    Waits up to `wait_seconds` for it to exist, be `active` and listen on `expected_ports`; returns it
    as it is then (`missing_ports` lists expected ports without a listener). No ALB at the deadline,
    several, or one in state `failed` is an AwsProblem.

    + cluster_name: the cluster name the controller runs with (--cluster-name)
    + group_name: the alb.ingress.kubernetes.io/group.name of the Ingresses
    + wait_seconds: 0 looks once
    """
    region = session.region
    deadline = time.monotonic() + wait_seconds
    resource = f"ALB tagged ingress.k8s.aws/stack={group_name}, elbv2.k8s.aws/cluster={cluster_name}"
    while True:
        with aws_call("elasticloadbalancing:DescribeLoadBalancers", resource, region):
            matching = _group_load_balancers(session, cluster_name, group_name)
            found = None
            if len(matching) > 1:
                names = ", ".join(lb["LoadBalancerName"] for lb in matching)
                raise AwsProblem(f"{len(matching)} load balancers in {region} are {resource}: {names}; the "
                                 "controller keeps one per group: delete the stale ones")
            if matching:
                lb = matching[0]
                listeners = session.client("elbv2").describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
                ports = sorted(listener["Port"] for listener in listeners)
                found = LoadBalancer(name=lb["LoadBalancerName"], dns_name=lb["DNSName"], arn=lb["LoadBalancerArn"],
                                     state=lb["State"]["Code"], listener_ports=ports,
                                     missing_ports=sorted(set(expected_ports) - set(ports)))
        if found is not None and found.state == "failed":
            raise AwsProblem(f"ALB {found.name} ({resource}) is in state failed: {matching[0]['State'].get('Reason', '')}; "
                             "check the AWS Load Balancer Controller's logs")
        if found is not None and found.state == "active" and not found.missing_ports:
            return found
        if time.monotonic() >= deadline:
            if found is None:
                raise AwsProblem(f"elasticloadbalancing:DescribeLoadBalancers: no {resource} in {region} after "
                                 f"{wait_seconds:.0f} s; check the Ingress events and the AWS Load Balancer Controller's logs")
            return found
        time.sleep(poll_seconds)


# ---------------------------------------------------------------------------------------------
# SQS


def check_interruption_queue(session: AwsSession, queue_name: str) -> bool:
    """True when the Karpenter interruption queue exists (the caller warns when it does not)."""
    try:
        with aws_call("sqs:GetQueueUrl", f"queue {queue_name}", session.region):
            session.client("sqs").get_queue_url(QueueName=queue_name)
    except AwsProblem as problem:
        if problem.code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return False
        raise
    return True


def _covers(pattern: str, host: str) -> bool:
    """Whether a certificate name covers `host`: exactly, or a wildcard for one leftmost label (RFC 6125)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def check_certificate(session: AwsSession, arn: str, hosts: list[str]) -> None:
    """The ALB's certificate: it exists in ACM, is ISSUED and covers every host; AwsProblem otherwise."""
    with aws_call("acm:DescribeCertificate", f"certificate {arn}", session.region):
        cert = session.client("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    if cert.get("Status") != "ISSUED":
        raise AwsProblem(f"ingress_certificate_arn {arn} is {cert.get('Status')}, not ISSUED: the ALB cannot serve "
                         "it; finish its validation in ACM or name another certificate")
    names = cert.get("SubjectAlternativeNames") or [cert.get("DomainName", "")]
    uncovered = [h for h in hosts if not any(_covers(n, h) for n in names)]
    if uncovered:
        raise AwsProblem(f"ingress_certificate_arn {arn} covers {names}, not {uncovered}: clients would refuse "
                         "the ALB's certificate; set ingress_asr_host / ingress_tts_host to names it covers, or "
                         "name a certificate that covers them")
