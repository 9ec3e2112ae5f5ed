"""The sandbox's AWS account: moto in server mode, preloaded as an EKS account would be.

moto serves the real AWS wire protocols on a loopback port, so the playbook reaches it with
plain boto3 and an `endpoint_url` (or `AWS_ENDPOINT_URL`). What an EKS account holds before the
guide starts is created here through boto3 against that server: the VPC with two private
subnets and the node security group, the EKS cluster (whose endpoint and CA are the sandbox
API server's), the EFS file system with its mount targets, the ECR repository `qwen3-tts` with
an image, the ASR image in `docker-hub/qwenllm/qwen3-asr` (as an ECR pull-through cache for
Docker Hub holds it after its first pull), the Karpenter interruption queue, and Bottlerocket's
AMI with the public SSM parameter that names it.

moto runs no instances, so nothing is pulled when SSM Run Command "runs" a pull on one. What an
instance would have pulled is read from SSM's command history (the `images pull` lines sent to
it), and when its data volume is snapshotted those images go with the snapshot
(`snapshot_images`): the Karpenter stand-in gives them to a node whose data volume is made from it.
Models work the same way: a `huggingface-cli download REPO --revision COMMIT` run by SSM (as
`image-cache build` runs it, into a bind-mounted directory of /local) puts that commit's files,
as the sandbox's Hub (`model_source`) serves them, on the snapshot (`snapshot_files`).

The sandbox API server asks `validate_eks_token` about each bearer token that looks like an
EKS token; the check is the one aws-iam-authenticator makes: a presigned STS
GetCallerIdentity URL for this sandbox's STS, signed over the `x-k8s-aws-id` header naming this
cluster, not older than 15 minutes. The signature is recomputed with botocore's SigV4 signer.

moto keeps its state in module globals, so one process holds at most one running SandboxAws.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import io
import json
import re
import shlex
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

ACCOUNT_ID = "123456789012"  # moto's default account: what "testing" credentials map to
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
EFS_NAME = "qwen3-models"
EFS_CREATION_TOKEN = "sandbox-qwen3-models"
EFS_SECURITY_GROUP_NAME = "qwen3-models-efs"
ECR_REPOSITORY = "qwen3-tts"
ECR_TAG = "latest"
# An ECR pull-through cache rule with prefix `docker-hub` (upstream registry-1.docker.io) serves
# Docker Hub's qwenllm/qwen3-asr as `docker-hub/qwenllm/qwen3-asr` and creates that repository at
# the first pull (docs.aws.amazon.com AmazonECR pull-through-cache-working.html). moto has no
# pull-through cache API, so the repository is preloaded as it looks after that first pull.
ASR_ECR_REPOSITORY = "docker-hub/qwenllm/qwen3-asr"
# The certificate preloaded into ACM for the ALB's HTTPS listener, signed by the sandbox's CA.
CERTIFICATE_DOMAIN = "speech.sandbox.test"
# Bottlerocket's AMI for the cluster's Kubernetes version, and the public SSM parameter naming it
# (bottlerocket-os/bottlerocket QUICKSTART-EKS.md). AWS reserves the /aws prefix, so moto's
# put_parameter refuses it: the parameter goes into moto's store directly, as its own defaults do.
KUBERNETES_VERSION = "1.31"
BOTTLEROCKET_AMI_NAME = f"bottlerocket-aws-k8s-{KUBERNETES_VERSION}-x86_64-v1.29.0-c8b4b2a9"
BOTTLEROCKET_AMI_PARAMETER = f"/aws/service/bottlerocket/aws-k8s-{KUBERNETES_VERSION}/x86_64/latest/image_id"
TOKEN_PREFIX = "k8s-aws-v1."
# aws-iam-authenticator: a presigned URL is accepted for 15 minutes after X-Amz-Date, whatever
# its X-Amz-Expires says (the CLI asks for 60 s), and X-Amz-Expires above 15 minutes is refused.
MAX_PRESIGN_EXPIRES_SECONDS = 900
CLOCK_SKEW_SECONDS = 300

_running_lock = threading.Lock()
_running: "SandboxAws | None" = None
# Whether a SandboxAws has run in this process: only then can moto's globals hold another sandbox's
# state (a fresh process, or a fork of sandbox.fixtures' fork server, starts with them clean or warm).
_moto_used = False
# One botocore data loader for every SandboxAws in the process: it keeps the parsed service models
# (EC2's JSON alone is most of a client's half-second), which never change.
_data_loader: Any = None


def _shared_data_loader() -> Any:
    global _data_loader
    if _data_loader is None:
        from botocore.loaders import create_loader

        _data_loader = create_loader()
    return _data_loader


# What the sandbox's own boto3 clients and moto's backends cost the first time in a process.
_WARM_SERVICES = ("ec2", "eks", "efs", "ecr", "sqs", "ssm", "iam", "sts", "elbv2", "acm")


def warm(region: str = "us-west-2") -> None:
    """Parse the service models and build moto's backends for the sandbox's account and `region` now,
    before any sandbox runs: a process that forks sandboxes (sandbox.fixtures' fork server) pays
    for them once instead of once per sandbox. Holds no sandbox state: the backends are as moto makes them."""
    session = _sandbox_session(region)
    for service in _WARM_SERVICES:
        session.client(service, endpoint_url="http://127.0.0.1:9")  # no request is sent
    from moto.backends import get_backend

    for service in _WARM_SERVICES:
        if service not in ("iam", "sts"):  # moto keys those by partition, not region; they are cheap
            get_backend(service)[ACCOUNT_ID][region]


def _sandbox_session(region: str) -> Any:
    from botocore.session import get_session

    core = get_session()
    core.register_component("data_loader", _shared_data_loader())
    return boto3.Session(aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                         region_name=region, botocore_session=core)


@dataclass(frozen=True)
class AwsOptions:
    """What the preloaded account holds; each piece can be left out to test preflight checks.

    + efs_file_system: the file system tagged Name=qwen3-models with mount targets in both subnets
    + ecr_image: an image tagged `latest` in the `qwen3-tts` repository and in the ASR cache repository
      `docker-hub/qwenllm/qwen3-asr` (both repositories always exist)
    + sqs_queue: the Karpenter interruption queue `Karpenter-<cluster>`
    + token_ttl_seconds: how long after X-Amz-Date an EKS token is accepted (EKS: 900)
    """

    efs_file_system: bool = True
    ecr_image: bool = True
    sqs_queue: bool = True
    token_ttl_seconds: int = 900


def image_manifest(label: str) -> str:
    """A Docker image manifest (schema 2) whose content, and so digest, is fixed by `label`."""
    config_digest = "sha256:" + hashlib.sha256(f"config {label}".encode()).hexdigest()
    layer_digest = "sha256:" + hashlib.sha256(f"layer {label}".encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                   "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                    "digest": layer_digest}],
    }, indent=3)


class _LoggedRequestHandler(MotoRequestHandler):
    """moto's request handler, writing its access log to the sandbox root instead of stderr."""

    log_path: Path | None = None

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 (werkzeug's signature)
        if self.log_path is not None:
            line = f"{self.address_string()} [{self.log_date_time_string()}] {message % args}\n"
            with open(self.log_path, "a", encoding="utf-8") as log_file:
                log_file.write(line)


class _SnapshotRecorder:
    """WSGI middleware before moto: at each EC2 CreateSnapshot, what the volume's instance pulled
    (while the volume is still attached) is kept for the snapshot the answer names."""

    def __init__(self, app: Any, written_onto: Any, record: Any):
        self.app = app
        self.written_onto = written_onto
        self.record = record

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
        form = parse_qs(body.decode("utf-8", "replace"))
        if form.get("Action") != ["CreateSnapshot"] or not form.get("VolumeId"):
            return self.app(environ, start_response)
        written = self.written_onto(form["VolumeId"][0])
        answer = b"".join(self.app(environ, start_response))
        created = re.search(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", answer)
        if created:
            self.record(created.group(1).decode(), written)
        return [answer]


def _model_download(argv: list[str]) -> list[tuple[str, str, str]]:
    """(repo, commit, host directory) of a `ctr run --mount type=bind,src=HOST,dst=DIR ... huggingface-cli
    download REPO --revision COMMIT --local-dir DIR/...` line; [] when it is not one."""
    try:
        at = argv.index("download", argv.index("huggingface-cli"))
        repo, revision = argv[at + 1], argv[argv.index("--revision", at) + 1]
        local_dir = argv[argv.index("--local-dir", at) + 1]
    except (ValueError, IndexError):
        return []
    for i, arg in enumerate(argv[:at]):
        if arg == "--mount" and i + 1 < len(argv):
            fields = dict(part.partition("=")[::2] for part in argv[i + 1].split(","))
            source, target = fields.get("src") or fields.get("source"), fields.get("dst") or fields.get("destination")
            if source and target and (local_dir == target or local_dir.startswith(target.rstrip("/") + "/")):
                return [(repo, revision, source + local_dir[len(target.rstrip("/")):])]
    return []


class _SandboxMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer with the access log in a file (moto's own server logs to stderr)."""

    def __init__(self, log_path: Path, wrap: Any = None):
        super().__init__("127.0.0.1", 0, verbose=False)
        self._handler = type("SandboxMotoRequestHandler", (_LoggedRequestHandler,), {"log_path": log_path})
        self._wrap = wrap or (lambda app: app)

    def _server_entry(self) -> None:
        app = self._wrap(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=self._handler)
        self._server_ready_event.set()
        self._server.serve_forever()


class SandboxAws:
    """moto on a loopback port, preloaded with the AWS side of the sandbox's EKS cluster."""

    def __init__(self, root: Path, *, cluster_name: str = "qwen3-sandbox", region: str = "us-west-2",
                 options: AwsOptions | None = None):
        self.root = Path(root)
        self.cluster_name = cluster_name
        self.region = region
        self.options = options or AwsOptions()
        self.endpoint_url = ""
        self.facts: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._server: _SandboxMotoServer | None = None
        self._session = _sandbox_session(region)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are
        self._token_cache: dict[str, tuple[str, float]] = {}  # token -> (caller ARN, X-Amz-Date as epoch)
        self._arn_by_access_key: dict[str, str] = {}
        self._lock = threading.Lock()
        self.certificate_files: dict[str, tuple[Path, Path]] = {}  # ACM ARN -> (cert PEM, key PEM) for the ALB
        self._snapshot_images: dict[str, list[str]] = {}  # snapshot id -> images its volume's instance pulled
        self._snapshot_models: dict[str, list[tuple[str, str, str]]] = {}  # snapshot id -> (repo, commit, dir)
        self.model_source: Any = None  # the sandbox's HubServer: what a build instance's downloads fetch

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, kube_endpoint: str, kube_ca_pem_b64: str, tls: Any = None) -> None:
        """Start moto on a free loopback port and create the account's resources.

        + kube_endpoint: the sandbox API server URL that eks.describe_cluster returns
        + kube_ca_pem_b64: its CA, base64 PEM, returned as certificateAuthority.data
        + tls: the sandbox's TlsMaterial, whose CA signs the ACM certificate; None makes a CA of its own
        """
        global _running, _moto_used
        with _running_lock:
            if _running is not None:
                raise RuntimeError(
                    f"a SandboxAws (root {_running.root}) already runs in this process; moto keeps its "
                    "state in module globals, so stop that one first or start this one in another process")
            _running = self
            used_before, _moto_used = _moto_used, True
        self._token_cache.clear()
        self._arn_by_access_key.clear()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            began = time.perf_counter()
            self._snapshot_images.clear()
            self._snapshot_models.clear()
            self._server = _SandboxMotoServer(self.root / "aws-requests.log", wrap=lambda app: _SnapshotRecorder(
                app, self._written_onto, self._record_snapshot))
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            if used_before:  # a previous sandbox in this process left moto's globals filled
                no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                no_proxy.open(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"),
                              timeout=10).read()
            self.timings["moto_start_seconds"] = time.perf_counter() - began
            began = time.perf_counter()
            self._preload(kube_endpoint, kube_ca_pem_b64)
            self._import_certificate(tls)
            self.timings["preload_seconds"] = time.perf_counter() - began
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the moto server; safe to call twice."""
        global _running
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._clients.clear()
        with _running_lock:
            if _running is self:
                _running = None

    def client(self, service: str) -> Any:
        """A boto3 client for `service` on this sandbox, with the sandbox's credentials."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(
                    service, endpoint_url=self.endpoint_url,
                    config=Config(retries={"mode": "standard", "max_attempts": 3}))
            return self._clients[service]

    # -- preload -----------------------------------------------------------------------------

    def _preload(self, kube_endpoint: str, kube_ca_pem_b64: str) -> None:
        ec2, eks = self.client("ec2"), self.client("eks")
        cluster = self.cluster_name
        discovery_tags = [{"Key": "karpenter.sh/discovery", "Value": cluster},
                          {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "shared"}]
        vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": f"{cluster}-vpc"}]}])["Vpc"]["VpcId"]
        subnet_ids = []
        for index, zone in enumerate(["a", "b"]):
            subnet = ec2.create_subnet(
                VpcId=vpc_id, CidrBlock=f"10.0.{index + 1}.0/24", AvailabilityZone=f"{self.region}{zone}",
                TagSpecifications=[{"ResourceType": "subnet", "Tags": discovery_tags + [
                    {"Key": "Name", "Value": f"{cluster}-private-{self.region}{zone}"},
                    {"Key": "kubernetes.io/role/internal-elb", "Value": "1"}]}])
            subnet_ids.append(subnet["Subnet"]["SubnetId"])
        node_sg_id = ec2.create_security_group(
            GroupName=f"eks-cluster-sg-{cluster}", Description=f"EKS cluster and node security group of {cluster}",
            VpcId=vpc_id, TagSpecifications=[{"ResourceType": "security-group", "Tags": discovery_tags + [
                {"Key": "Name", "Value": f"eks-cluster-sg-{cluster}"}]}])["GroupId"]
        role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{cluster}-cluster-role"
        eks.create_cluster(name=cluster, version=KUBERNETES_VERSION, roleArn=role_arn,
                           resourcesVpcConfig={"subnetIds": subnet_ids, "securityGroupIds": [node_sg_id]})
        self._point_cluster_at_api_server(kube_endpoint, kube_ca_pem_b64, vpc_id, node_sg_id)

        self.facts = {
            "account_id": ACCOUNT_ID, "cluster_name": cluster, "region": self.region,
            "endpoint_url": self.endpoint_url, "vpc_id": vpc_id, "subnet_ids": subnet_ids,
            "node_security_group_id": node_sg_id, "efs_name": EFS_NAME, "efs_file_system_id": None,
            "ecr_repository_uri": None, "ecr_image_digest": None, "ecr_image_tag": None, "sqs_queue_name": None,
            "asr_ecr_repository": ASR_ECR_REPOSITORY, "asr_ecr_image_digest": None,
        }
        if self.options.efs_file_system:
            self.facts["efs_file_system_id"] = self._create_efs(vpc_id, subnet_ids, node_sg_id)
        ecr = self.client("ecr")
        repository = ecr.create_repository(repositoryName=ECR_REPOSITORY)["repository"]
        self.facts["ecr_repository_uri"] = repository["repositoryUri"]
        if self.options.ecr_image:
            self.facts["ecr_image_digest"] = self.put_image(image_manifest("qwen3-tts production 1"), ECR_TAG)
            self.facts["ecr_image_tag"] = ECR_TAG
        ecr.create_repository(repositoryName=ASR_ECR_REPOSITORY)
        if self.options.ecr_image:
            self.facts["asr_ecr_image_digest"] = self.put_image(image_manifest("qwen3-asr cu128 1"), ECR_TAG,
                                                                repository=ASR_ECR_REPOSITORY)
        self._publish_bottlerocket_ami()
        if self.options.sqs_queue:
            queue_name = f"Karpenter-{cluster}"
            self.client("sqs").create_queue(QueueName=queue_name, Attributes={"MessageRetentionPeriod": "300"})
            self.facts["sqs_queue_name"] = queue_name

    def _point_cluster_at_api_server(self, kube_endpoint: str, kube_ca_pem_b64: str, vpc_id: str,
                                     node_sg_id: str) -> None:
        # moto makes up an endpoint and a random CA string and has no API to change them; they
        # are attributes of its in-process Cluster model, which this sandbox owns.
        from moto.eks.models import eks_backends

        cluster = eks_backends[ACCOUNT_ID][self.region].clusters[self.cluster_name]
        cluster.endpoint = kube_endpoint
        cluster.certificate_authority = {"data": kube_ca_pem_b64}
        cluster.resources_vpc_config = {
            **cluster.resources_vpc_config, "vpcId": vpc_id, "clusterSecurityGroupId": node_sg_id,
            "endpointPublicAccess": True, "endpointPrivateAccess": True}

    def _publish_bottlerocket_ami(self) -> None:
        """Bottlerocket's AMI (its OS and data volumes) and the public parameter `image-cache build` reads."""
        from moto.ssm.models import Parameter, ssm_backends
        from moto.core.utils import utcnow

        image_id = self.client("ec2").register_image(
            Name=BOTTLEROCKET_AMI_NAME, Architecture="x86_64", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 2, "VolumeType": "gp2"}},
                                 {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20, "VolumeType": "gp2"}}])["ImageId"]
        ssm_backends[ACCOUNT_ID][self.region]._parameters[BOTTLEROCKET_AMI_PARAMETER].append(Parameter(
            account_id=ACCOUNT_ID, name=BOTTLEROCKET_AMI_PARAMETER, value=image_id, parameter_type="String",
            description=None, allowed_pattern=None, keyid=None, last_modified_date=utcnow(), version=1,
            data_type="aws:ec2:image"))
        self.facts.update(bottlerocket_ami_id=image_id, bottlerocket_ami_parameter=BOTTLEROCKET_AMI_PARAMETER)
        # The AWS-managed policies an instance role for SSM Run Command and ECR pulls attaches: moto
        # loads AWS's ~1,600 managed policies only when told to (slow); these two are what it needs.
        from moto.iam.aws_managed_policies import aws_managed_policies_data
        from moto.iam.models import AWSManagedPolicy, iam_backends

        known = json.loads(aws_managed_policies_data)
        iam = iam_backends[ACCOUNT_ID]["global"]
        for name in ("AmazonSSMManagedInstanceCore", "AmazonEC2ContainerRegistryReadOnly"):
            policy = AWSManagedPolicy.from_data(name, ACCOUNT_ID, "global", known[name])
            iam.managed_policies.setdefault(policy.arn, policy)

    def _written_onto(self, volume_id: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """What SSM Run Command put on the instance `volume_id` is attached to: the images its `images
        pull` lines pulled, and the (repo, commit, host directory) its `huggingface-cli download` lines fetched."""
        from moto.ec2.models import ec2_backends
        from moto.ssm.models import ssm_backends

        try:
            attachment = ec2_backends[ACCOUNT_ID][self.region].get_volume(volume_id).attachment
        except Exception:  # moto raises its own InvalidVolumeIdError: no volume, nothing pulled
            return [], []
        if attachment is None:
            return [], []
        images, models = [], []
        for command in ssm_backends[ACCOUNT_ID][self.region].get_commands_by_instance_id(attachment.instance.id):
            if command.status != "Success":
                continue
            for line in (command.parameters or {}).get("commands") or []:
                if " images pull " in line:
                    images.append(shlex.split(line)[-1])  # the pull's last argument is the reference
                elif " huggingface-cli download " in line:
                    models.extend(_model_download(shlex.split(line)))
        return list(dict.fromkeys(images)), models

    def _record_snapshot(self, snapshot_id: str, written: tuple[list[str], list[tuple[str, str, str]]]) -> None:
        self._snapshot_images[snapshot_id], self._snapshot_models[snapshot_id] = written

    def snapshot_files(self, snapshot_id: str) -> dict[str, Path]:
        """The model files an EBS snapshot of a data volume holds: {path on the node: the Hub's bytes}."""
        try:
            self.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])
        except ClientError:
            return {}
        files: dict[str, Path] = {}
        for repo, commit, directory in self._snapshot_models.get(snapshot_id, []):
            if self.model_source is None:
                break
            try:
                listing = self.model_source.files_at(repo, commit)
            except Exception:  # the Hub does not know it: the download failed, nothing was written
                continue
            for path, blob in listing.items():
                files[f"{directory}/{path}"] = self.model_source.blobs.path(blob.sha256)
        return files

    def snapshot_images(self, snapshot_id: str) -> list[str]:
        """The images an EBS snapshot of a data volume holds: what was pulled there before it was taken."""
        try:
            self.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])
        except ClientError:
            return []  # deleted, or never made
        return list(self._snapshot_images.get(snapshot_id, []))

    def _import_certificate(self, tls: Any) -> None:
        """An ISSUED certificate in ACM for *.speech.sandbox.test, as an operator imports or requests one.

        ACM never hands out a private key, nor does the real ALB need one from us: the key stays
        here, found by ARN (`certificate_files`), for the sandbox ALB's HTTPS listeners.
        """
        from sandbox.kubeapi.tls import generate_tls, issue_certificate

        directory = self.root / "tls"
        tls = tls or generate_tls(self.root / "aws-tls")
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "alb.crt", directory / "alb.key"
        issue_certificate(tls, cert_path, key_path, f"*.{CERTIFICATE_DOMAIN}",
                          [f"*.{CERTIFICATE_DOMAIN}", CERTIFICATE_DOMAIN])
        arn = self.client("acm").import_certificate(
            Certificate=cert_path.read_bytes(), PrivateKey=key_path.read_bytes(),
            CertificateChain=tls.ca_pem)["CertificateArn"]
        self.certificate_files[arn] = (cert_path, key_path)
        self.facts.update(acm_certificate_arn=arn, acm_certificate_domain=CERTIFICATE_DOMAIN,
                          acm_ca_file=str(tls.ca_cert_path))

    def _create_efs(self, vpc_id: str, subnet_ids: list[str], node_sg_id: str) -> str:
        ec2, efs = self.client("ec2"), self.client("efs")
        efs_sg_id = ec2.create_security_group(
            GroupName=EFS_SECURITY_GROUP_NAME, Description="NFS from the EKS nodes to the model file system",
            VpcId=vpc_id)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=efs_sg_id, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": node_sg_id}]}])
        file_system_id = efs.create_file_system(
            CreationToken=EFS_CREATION_TOKEN, PerformanceMode="generalPurpose", Encrypted=True,
            ThroughputMode="elastic", Tags=[{"Key": "Name", "Value": EFS_NAME}])["FileSystemId"]
        for subnet_id in subnet_ids:
            efs.create_mount_target(FileSystemId=file_system_id, SubnetId=subnet_id, SecurityGroups=[efs_sg_id])
        return file_system_id

    def put_image(self, manifest: str, tag: str, repository: str = ECR_REPOSITORY) -> str:
        """Push an image manifest to `repository` under `tag` (moving the tag if it exists); returns its digest."""
        image = self.client("ecr").put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag,
                                             imageManifestMediaType=json.loads(manifest)["mediaType"])["image"]
        return image["imageId"]["imageDigest"]

    # -- EKS token check ---------------------------------------------------------------------

    def validate_eks_token(self, token: str) -> str:
        """Check an EKS bearer token as EKS does; return the caller's ARN, else raise ValueError(reason).

        + token: `k8s-aws-v1.` + unpadded urlsafe base64 of a presigned STS GetCallerIdentity URL
        """
        now = time.time()
        with self._lock:
            cached = self._token_cache.get(token)
        if cached is not None:
            arn, signed_at = cached
            not_after = signed_at + self.options.token_ttl_seconds
            if now > not_after:
                raise ValueError(f"EKS token expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(not_after))}; "
                                 "make a new one (aws eks get-token)")
            return arn
        url = self._presigned_url_from(token)
        query = self._checked_query(url)
        signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        not_after = signed_at + self.options.token_ttl_seconds
        if now > not_after:
            raise ValueError(f"EKS token expired: signed at {query['X-Amz-Date']}, accepted for "
                             f"{self.options.token_ttl_seconds} s; make a new one (aws eks get-token)")
        if signed_at > now + CLOCK_SKEW_SECONDS:
            raise ValueError(f"EKS token X-Amz-Date {query['X-Amz-Date']} is in the future; check the clock")
        access_key_id, secret_access_key = self._signing_key(query)
        self._check_signature(url, query, access_key_id, secret_access_key)
        arn = self._caller_arn(access_key_id, secret_access_key, query.get("X-Amz-Security-Token"))
        with self._lock:
            if len(self._token_cache) > 512:  # tokens are renewed every few minutes: keep the cache small
                self._token_cache.clear()
            self._token_cache[token] = (arn, signed_at)
        return arn

    @staticmethod
    def _presigned_url_from(token: str) -> str:
        if not token.startswith(TOKEN_PREFIX):
            raise ValueError(f"EKS token must start with {TOKEN_PREFIX!r}; got {token[:16]!r}...")
        encoded = token[len(TOKEN_PREFIX):]
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ValueError(f"EKS token body is not urlsafe base64 of a URL: {error}") from None

    def _checked_query(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        port = urlsplit(self.endpoint_url).port
        allowed_hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if parts.scheme != "http" or parts.netloc not in allowed_hosts or parts.path not in ("", "/"):
            raise ValueError(f"EKS token URL {parts.scheme}://{parts.netloc}{parts.path} is not this sandbox's STS "
                             f"endpoint {self.endpoint_url}/; make the token with the sandbox's AWS_ENDPOINT_URL")
        pairs = parse_qs(parts.query, keep_blank_values=True)
        if any(len(values) != 1 for values in pairs.values()):
            raise ValueError("EKS token URL repeats a query parameter")
        query = {key: values[0] for key, values in pairs.items()}
        if query.get("Action") != "GetCallerIdentity":
            raise ValueError(f"EKS token URL Action = {query.get('Action')!r}; must be 'GetCallerIdentity'")
        for required in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                         "X-Amz-SignedHeaders", "X-Amz-Signature"):
            if required not in query:
                raise ValueError(f"EKS token URL lacks {required}; it must be a SigV4 presigned URL")
        if query["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            raise ValueError(f"EKS token X-Amz-Algorithm = {query['X-Amz-Algorithm']!r}; must be AWS4-HMAC-SHA256")
        signed_headers = query["X-Amz-SignedHeaders"].split(";")
        if "x-k8s-aws-id" not in signed_headers:
            raise ValueError(f"EKS token X-Amz-SignedHeaders = {query['X-Amz-SignedHeaders']!r} does not include "
                             "x-k8s-aws-id; the token must be signed over the cluster name header")
        if not set(signed_headers) <= {"host", "x-k8s-aws-id"}:
            raise ValueError(f"EKS token X-Amz-SignedHeaders = {query['X-Amz-SignedHeaders']!r}: only host and "
                             "x-k8s-aws-id can be checked")
        if not re.fullmatch(r"\d{8}T\d{6}Z", query["X-Amz-Date"]):
            raise ValueError(f"EKS token X-Amz-Date = {query['X-Amz-Date']!r}; must look like 20240101T000000Z")
        if not query["X-Amz-Expires"].isdigit() or not 0 < int(query["X-Amz-Expires"]) <= MAX_PRESIGN_EXPIRES_SECONDS:
            raise ValueError(f"EKS token X-Amz-Expires = {query['X-Amz-Expires']!r} out of range 1..{MAX_PRESIGN_EXPIRES_SECONDS}")
        return query

    def _signing_key(self, query: dict[str, str]) -> tuple[str, str]:
        scope = query["X-Amz-Credential"].split("/")
        if len(scope) != 5 or scope[3] != "sts" or scope[4] != "aws4_request":
            raise ValueError(f"EKS token X-Amz-Credential = {query['X-Amz-Credential']!r}; must be "
                             "<access key>/<date>/<region>/sts/aws4_request")
        if scope[1] != query["X-Amz-Date"][:8]:
            raise ValueError("EKS token X-Amz-Credential date differs from X-Amz-Date")
        access_key_id = scope[0]
        if access_key_id == ACCESS_KEY_ID:
            return access_key_id, SECRET_ACCESS_KEY
        # Keys moto issued (IAM users, STS AssumeRole): their secrets live in moto's backends.
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        for account_id, account in list(iam_backends.items()):
            key = account["aws"].access_keys.get(access_key_id)
            if key is None:
                continue
            assumed = sts_backends[account_id]["aws"].get_assumed_role_from_access_key(access_key_id)
            if assumed is not None and query.get("X-Amz-Security-Token") != assumed.session_token:
                raise ValueError(f"EKS token for temporary key {access_key_id} carries a wrong or no X-Amz-Security-Token")
            return access_key_id, key.secret_access_key
        raise ValueError(f"EKS token signed with access key {access_key_id!r}, unknown to this sandbox's AWS; "
                         f"use the sandbox credentials ({ACCESS_KEY_ID}) or keys its STS/IAM issued")

    def _check_signature(self, url: str, query: dict[str, str], access_key_id: str, secret_access_key: str) -> None:
        unsigned_url = re.sub(r"&X-Amz-Signature=[^&]*", "", url)
        region = query["X-Amz-Credential"].split("/")[2]
        signer = SigV4Auth(Credentials(access_key_id, secret_access_key), "sts", region)

        def signature_for(cluster_name: str) -> str:
            request = AWSRequest(method="GET", url=unsigned_url, headers={"x-k8s-aws-id": cluster_name})
            request.context["timestamp"] = query["X-Amz-Date"]
            canonical_request = signer.canonical_request(request)
            return signer.signature(signer.string_to_sign(request, canonical_request), request)

        given = query["X-Amz-Signature"]
        if hmac.compare_digest(signature_for(self.cluster_name), given):
            return
        from moto.eks.models import eks_backends

        for other in list(eks_backends[ACCOUNT_ID][self.region].clusters):
            if other != self.cluster_name and hmac.compare_digest(signature_for(other), given):
                raise ValueError(f"EKS token was made for cluster {other!r}; this API server is cluster "
                                 f"{self.cluster_name!r}")
        raise ValueError(f"EKS token signature does not match for cluster {self.cluster_name!r}: the token was "
                         "altered, signed with another secret key, or made for a cluster this sandbox does not know")

    def _caller_arn(self, access_key_id: str, secret_access_key: str, session_token: str | None) -> str:
        # Ask the sandbox's STS who the signer is, with the signer's own credentials, as EKS asks AWS STS.
        if access_key_id not in self._arn_by_access_key:
            signer_session = boto3.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                           aws_session_token=session_token, region_name=self.region)
            sts = signer_session.client("sts", endpoint_url=self.endpoint_url)
            self._arn_by_access_key[access_key_id] = sts.get_caller_identity()["Arn"]
        return self._arn_by_access_key[access_key_id]

    # -- helpers for the cluster stand-ins ---------------------------------------------------

    def efs_exists(self, fs_id: str) -> bool:
        """True when an EFS file system with this id exists in the sandbox's AWS."""
        try:
            self.client("efs").describe_file_systems(FileSystemId=fs_id)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("FileSystemNotFound", "BadRequest", "ValidationException"):
                return False
            raise
        return True

    def load_balancer_name(self, group_name: str) -> str:
        """The name the AWS Load Balancer Controller gives the ALB of an explicit IngressGroup."""
        sanitized = re.sub(r"[^A-Za-z0-9]", "", group_name)
        digest = hashlib.sha256(f"{self.cluster_name}/{group_name}/internal".encode()).hexdigest()
        return f"k8s-{sanitized[:17]}-{digest[:10]}"

    def ensure_load_balancer(self, group_name: str, listen_ports: list[int]) -> str:
        """Create or update the ALB of an IngressGroup, tagged as the controller tags it; returns its DNS name.

        + group_name: the `alb.ingress.kubernetes.io/group.name` (the controller's stack id)
        + listen_ports: the HTTP listener ports merged over the group's Ingresses
        """
        elbv2 = self.client("elbv2")
        name = self.load_balancer_name(group_name)
        tags = self._controller_tags(group_name, "LoadBalancer")
        try:
            load_balancer = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]
        except ClientError as error:
            if error.response["Error"]["Code"] != "LoadBalancerNotFound":
                raise
            load_balancer = elbv2.create_load_balancer(
                Name=name, Subnets=self.facts["subnet_ids"], Scheme="internal", Type="application",
                IpAddressType="ipv4", Tags=tags)["LoadBalancers"][0]
        arn = load_balancer["LoadBalancerArn"]
        listeners = elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]
        current = {listener["Port"]: listener for listener in listeners}
        for port in sorted(set(listen_ports) - set(current)):
            target_group = elbv2.create_target_group(
                Name=f"k8s-{name[-10:]}-{port}", Protocol="HTTP", Port=port, VpcId=self.facts["vpc_id"],
                TargetType="ip", Tags=self._controller_tags(group_name, f"{port}"))["TargetGroups"][0]
            elbv2.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=port,
                                  DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group["TargetGroupArn"]}],
                                  Tags=self._controller_tags(group_name, f"{port}"))
        for port in sorted(set(current) - set(listen_ports)):
            self._delete_listener(current[port])
        # moto reports `provisioning` until the first describe, as AWS does for a minute or two.
        return elbv2.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]["DNSName"]

    def delete_load_balancer(self, group_name: str) -> None:
        """Delete the ALB of an IngressGroup with its listeners and target groups (the last Ingress went away)."""
        elbv2 = self.client("elbv2")
        try:
            load_balancer = elbv2.describe_load_balancers(Names=[self.load_balancer_name(group_name)])["LoadBalancers"][0]
        except ClientError as error:
            if error.response["Error"]["Code"] == "LoadBalancerNotFound":
                return
            raise
        for listener in elbv2.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])["Listeners"]:
            self._delete_listener(listener)
        elbv2.delete_load_balancer(LoadBalancerArn=load_balancer["LoadBalancerArn"])

    def _delete_listener(self, listener: dict[str, Any]) -> None:
        elbv2 = self.client("elbv2")
        elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        for action in listener.get("DefaultActions", []):
            if action.get("TargetGroupArn"):
                elbv2.delete_target_group(TargetGroupArn=action["TargetGroupArn"])

    def _controller_tags(self, group_name: str, resource: str) -> list[dict[str, str]]:
        return [{"Key": "elbv2.k8s.aws/cluster", "Value": self.cluster_name},
                {"Key": "ingress.k8s.aws/stack", "Value": group_name},
                {"Key": "ingress.k8s.aws/resource", "Value": resource}]

    def inject(self, fault: str, params: dict[str, Any] | None = None) -> None:
        """Inject an AWS fault; none exist yet, `clear` is accepted and does nothing."""
        if fault != "clear":
            raise ValueError(f"unknown AWS fault {fault!r}; the AWS side knows only 'clear'")
