"""An EBS snapshot of a Bottlerocket data volume holding both images and both models, for GPU nodes that pull nothing.

Bottlerocket keeps container images on its data volume (/dev/xvdb). A node whose data volume is
made from a snapshot that already holds the ASR and TTS images starts both pods without a pull
(about 7 + 3 minutes on a g4dn.xlarge, the guide). The snapshot is built as awslabs' tooling does
(aws-samples/bottlerocket-images-cache snapshot.sh): launch a Bottlerocket instance, pull the images
into containerd's k8s.io namespace through SSM Run Command, stop it, snapshot the data volume,
terminate it. Here through boto3, with the images pinned by digest as the deploy resolves them,
and the snapshot tagged with what it holds (`qwen3-speech/image/asr`, `qwen3-speech/image/tts`).

The two models go on the same volume, at the commits the inventory pins (resolved on the Hub as
seeding resolves them), under /local/qwen3-speech-models/<org>--<name>@<commit>: downloaded on the
build instance by huggingface_hub's CLI in the TTS image it has just pulled, and tagged
`qwen3-speech/model/asr` = `<repo>@<commit>` (and tts). A deploy whose snapshot holds the commits it
wants seeds EFS from the GPU node's disk instead of the Hub (tasks/models.py, files/seed_models.py
--local-source, which checks every copied file against the Hub's hashes).

Plain functions over a qwen_speech.aws session; no pyinfra here. The same calls run against AWS
and against the sandbox's moto, whose AWS layer records what each instance pulled.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from .aws import AwsProblem, AwsSession, aws_call, error_code

# The data volume of the build instance and of the cached nodes (a volume from a snapshot is at
# least the snapshot's size). Both images unpacked: ~20.6 GB compressed (the guide: 14.4 + 6.2),
# kept by containerd both as content and as unpacked layers, so about 50 GB; twice that for room.
DATA_VOLUME_GIB = 100
DATA_DEVICE = "/dev/xvdb"  # Bottlerocket's data volume (the README of aws-samples/bottlerocket-images-cache)
BUILD_INSTANCE_TYPE = "m5.large"  # awslabs' default: pulling needs no GPU
# Bottlerocket publishes its AMI ids as public SSM parameters (bottlerocket-os/bottlerocket
# QUICKSTART-EKS.md, "Finding an AMI"); the variant follows the cluster's Kubernetes version.
AMI_PARAMETER = "/aws/service/bottlerocket/aws-k8s-{version}/x86_64/latest/image_id"
BUILD_NAME = "qwen3-speech-image-cache"
# The build instance's role: SSM Run Command needs the agent's rights, the pulls ECR read
# (awslabs' ebs-snapshot-instance.yaml attaches the same two managed policies).
BUILD_POLICIES = ("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
                  "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly")
EC2_TRUST = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": '
             '"ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}')
IMAGE_TAG_PREFIX = "qwen3-speech/image/"
ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
# The kubelet's ECR credential provider, which Bottlerocket's aws-k8s variants ship
# (bottlerocket-os/bottlerocket packages/ecr-credential-provider: %{_cross_libexecdir}/kubernetes/
# kubelet/plugins/ecr-credential-provider); it answers a CredentialProviderRequest on stdin with the
# registry password, from the instance's own role (k8s.io/kubelet credentialprovider/v1).
ECR_CREDENTIAL_PROVIDER = "/usr/libexec/kubernetes/kubelet/plugins/ecr-credential-provider"
CTR = "apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n k8s.io images pull"
SSM_DONE = {"Success", "Cancelled", "TimedOut", "Failed", "Cancelling"}
# Bottlerocket mounts its data volume's partition (BOTTLEROCKET-DATA) at /local (bottlerocket-os/
# bottlerocket packages/release/local.mount): what the build writes there is in the snapshot and on
# every node booted from it, where the seeding pod mounts it (hostPath, read-only).
NODE_MODEL_DIR = "/local/qwen3-speech-models"
MODEL_TAG_PREFIX = "qwen3-speech/model/"
MODEL_UID = 1000  # the TTS image's `appuser`, who runs the download (files/qwen3-model-seed-job.yaml)
SHELTIE = "apiclient exec admin sheltie"  # a command in the host's namespaces, from the control container


@dataclass(frozen=True)
class CacheSnapshot:
    """An image-cache snapshot as EC2 describes it."""

    snapshot_id: str
    state: str  # pending, completed, error
    images: dict[str, str]  # "asr"/"tts" -> the pinned reference it holds (from its tags)
    models: dict[str, str] = field(default_factory=dict)  # "asr"/"tts" -> "<repo>@<commit>" it holds


def model_dir_name(repo: str, commit: str) -> str:
    """The model's directory under NODE_MODEL_DIR: one per repo and commit."""
    return f"{repo.replace('/', '--')}@{commit}"


def node_model_path(snapshot: "CacheSnapshot | None", key: str, repo: str, commit: str) -> str | None:
    """Where a node booted from `snapshot` has repo@commit on its disk; None when the snapshot's tags
    say it holds another commit, or no such model."""
    if snapshot is None or snapshot.models.get(key) != f"{repo}@{commit}":
        return None
    return f"{NODE_MODEL_DIR}/{model_dir_name(repo, commit)}"


def model_commands(image: str, key: str, repo: str, commit: str, endpoint: str | None) -> list[str]:
    """The shell lines SSM runs to put repo@commit on the data volume.

    huggingface_hub's CLI (`huggingface-cli download`, in the TTS image's huggingface_hub 0.x) run
    in that image, which the build has just pulled, by containerd itself: `ctr run --rm --net-host
    --mount type=bind,src=...,dst=...,options=rbind:rw` (containerd cmd/ctr/commands/run/run.go and
    commands.go, ContainerFlags). The files are checked against the Hub's hashes when a deploy
    copies them (seed_models.py --local-source), not trusted here.
    """
    target = f"{NODE_MODEL_DIR}/{model_dir_name(repo, commit)}"
    env = ["--env", f"HF_ENDPOINT={endpoint}"] if endpoint else []
    run = ["ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", "run", "--rm", "--net-host",
           "--mount", f"type=bind,src={target},dst=/model,options=rbind:rw", "--env", "HF_HUB_DISABLE_TELEMETRY=1",
           *env, normalized(image), f"qwen3-speech-model-{key}",
           "huggingface-cli", "download", repo, "--revision", commit, "--local-dir", "/model"]
    return ["set -eu", f"{SHELTIE} mkdir -p {shlex.quote(target)}",
            f"{SHELTIE} chown {MODEL_UID}:{MODEL_UID} {shlex.quote(target)}",
            f"{SHELTIE} " + " ".join(shlex.quote(part) for part in run)]


def normalized(image: str) -> str:
    """The reference containerd stores: Docker Hub names get their registry (and library/) spelt out."""
    first, slash, rest = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if slash else f"docker.io/library/{image}"


def pull_commands(image: str) -> list[str]:
    """The shell lines SSM runs on the instance (AWS-RunShellScript, in Bottlerocket's control container).

    The pull goes into containerd's k8s.io namespace labelled as the CRI's own, so the kubelet
    finds the image as if it had pulled it (awslabs' snapshot.sh). An ECR password is fetched on
    the instance from its role, never sent: SSM keeps a command's parameters in its history.
    """
    ref = normalized(image)
    pull = f"{CTR} --label io.cri-containerd.image=managed"
    if not ECR_HOST.match(ref):
        return [f"{pull} {shlex.quote(ref)}"]
    request = ('{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest",'
               f'"image":"{ref}"}}')
    return [
        "set -eu",
        f"password=$(printf '%s' {shlex.quote(request)} | apiclient exec admin sheltie {ECR_CREDENTIAL_PROVIDER} "
        "| sed -n 's/.*\"password\":\"\\([^\"]*\\)\".*/\\1/p')",
        '[ -n "$password" ] || { echo "no ECR password from the instance role (AmazonEC2ContainerRegistryReadOnly?)" >&2; exit 1; }',
        f'{pull} --user "AWS:$password" {shlex.quote(ref)}',
    ]


# ---------------------------------------------------------------------------------------------
# Checking a snapshot (preflight)


def describe_snapshot(session: AwsSession, snapshot_id: str) -> CacheSnapshot | None:
    """ec2:DescribeSnapshots of one snapshot; None when EC2 has no such snapshot."""
    try:
        with aws_call("ec2:DescribeSnapshots", f"snapshot {snapshot_id}", session.region):
            found = session.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    except AwsProblem as problem:
        if problem.code in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
            return None
        raise
    if not found:
        return None
    tags = {t["Key"]: t["Value"] for t in found[0].get("Tags") or []}
    images = {k[len(IMAGE_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(IMAGE_TAG_PREFIX)}
    models = {k[len(MODEL_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(MODEL_TAG_PREFIX)}
    return CacheSnapshot(snapshot_id, found[0]["State"], images, models)


def snapshot_problem(snapshot: CacheSnapshot | None, snapshot_id: str, region: str) -> str | None:
    """What keeps nodes from booting from this snapshot (as describe_snapshot found it), naming the key, the value and the fix."""
    key = f"gpu_image_cache_snapshot_id = {snapshot_id!r}"
    if snapshot is None:
        return (f"{key}: no such EBS snapshot in {region} (ec2 describe-snapshots); build one with "
                "`python -m qwen_speech image-cache build INVENTORY` and set the id it prints")
    if snapshot.state != "completed":
        return (f"{key}: the snapshot is {snapshot.state}, not completed; a node cannot boot from it yet. Wait for it "
                f"(aws ec2 wait snapshot-completed --snapshot-ids {snapshot_id}) or build a new one")
    return None


def stale_images(snapshot: CacheSnapshot, wanted: dict[str, str]) -> list[str]:
    """One line per image the pods run that the snapshot does not hold (a new digest since the build)."""
    return [f"{key} image {image} is not in image-cache snapshot {snapshot.snapshot_id} (it holds "
            f"{snapshot.images.get(key) or 'no ' + key + ' image'}): new nodes will pull it; rebuild the snapshot"
            for key, image in sorted(wanted.items()) if image and image != snapshot.images.get(key)]


# ---------------------------------------------------------------------------------------------
# Building one


class Builder:
    """`image-cache build`: one snapshot holding `images` (and `models`), its build instance gone afterwards.

    + session: a qwen_speech.aws session in the cluster's region
    + cluster_name: the EKS cluster (its Kubernetes version picks the AMI, its subnet hosts the build)
    + images: "asr"/"tts" -> pinned references
    + models: "asr"/"tts" -> (repo, commit) to put on the data volume, downloaded in the TTS image
    + hf_endpoint: the Hub those downloads use (None: huggingface.co)
    + say: where progress lines go
    + poll: seconds between checks of a running command
    + wait_seconds: how long one step (SSM reachable, a pull, the snapshot) may take
    """

    STEPS = 7

    def __init__(self, session: AwsSession, cluster_name: str, images: dict[str, str], *,
                 models: dict[str, tuple[str, str]] | None = None, hf_endpoint: str | None = None,
                 say: Callable[[str], None] = print, poll: float = 5.0, wait_seconds: float = 3600):
        self.session = session
        self.cluster_name = cluster_name
        self.images = images
        self.models = dict(models or {})
        self.hf_endpoint = hf_endpoint
        self.say = say
        self.poll = poll
        self.wait_seconds = wait_seconds
        self.region = session.region
        self.instance_id: str | None = None

    def _step(self, number: int, text: str) -> None:
        self.say(f"[{number}/{self.STEPS}] {text}")

    def build(self) -> str:
        """Run every step; returns the completed snapshot's id. The instance is terminated whatever happens."""
        try:
            ami, subnet, groups = self._where()
            profile = self._instance_profile()
            self._launch(ami, subnet, groups, profile)
            for number, (key, image) in enumerate(sorted(self.images.items())):
                self._run(f"pull the {key} image", pull_commands(image), image)
                self._step(4, f"pulled the {key} image ({number + 1}/{len(self.images)}): {image}")
            for key, (repo, commit) in sorted(self.models.items()):
                self._run(f"download the {key} model", model_commands(self.images["tts"], key, repo, commit,
                                                                        self.hf_endpoint), f"{repo}@{commit}")
                self._step(4, f"the {key} model {repo}@{commit[:12]} is on the data volume in {NODE_MODEL_DIR}/"
                              f"{model_dir_name(repo, commit)}")
            volume = self._stop()
            snapshot_id = self._snapshot(volume)
        finally:
            self._terminate()
        return snapshot_id

    def _where(self) -> tuple[str, str, list[str]]:
        from .aws import describe_cluster

        cluster = describe_cluster(self.session, self.cluster_name)
        parameter = AMI_PARAMETER.format(version=cluster["version"])
        with aws_call("ssm:GetParameter", parameter, self.region):
            ami = self.session.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
        vpc = cluster.get("resourcesVpcConfig") or {}
        subnets, groups = vpc.get("subnetIds") or [], [g for g in [vpc.get("clusterSecurityGroupId")] if g]
        if not subnets:
            raise AwsProblem(f"eks:DescribeCluster: cluster {self.cluster_name!r} lists no subnets to launch the "
                             "build instance in")
        self._step(1, f"Bottlerocket {cluster['version']} AMI {ami} ({parameter}), subnet {subnets[0]}")
        return ami, subnets[0], groups

    def _instance_profile(self) -> str:
        """The build instance's instance profile, made once (role and profile named qwen3-speech-image-cache)."""
        iam = self.session.client("iam")
        with aws_call("iam:GetInstanceProfile", f"instance profile {BUILD_NAME}", self.region):
            try:
                iam.get_instance_profile(InstanceProfileName=BUILD_NAME)
                self._step(2, f"instance profile {BUILD_NAME} (SSM agent, ECR read)")
                return BUILD_NAME
            except iam.exceptions.NoSuchEntityException:
                pass
        with aws_call("iam:CreateRole", f"role {BUILD_NAME}", self.region):
            try:
                iam.create_role(RoleName=BUILD_NAME, AssumeRolePolicyDocument=EC2_TRUST,
                                Description="qwen3-speech image-cache builds: SSM Run Command and ECR pulls")
            except iam.exceptions.EntityAlreadyExistsException:
                pass
            for policy in BUILD_POLICIES:
                iam.attach_role_policy(RoleName=BUILD_NAME, PolicyArn=policy)
            iam.create_instance_profile(InstanceProfileName=BUILD_NAME)
            iam.add_role_to_instance_profile(InstanceProfileName=BUILD_NAME, RoleName=BUILD_NAME)
        self._step(2, f"instance profile {BUILD_NAME} created (SSM agent, ECR read)")
        return BUILD_NAME

    def _launch(self, ami: str, subnet: str, groups: list[str], profile: str) -> None:
        ec2 = self.session.client("ec2")
        request = dict(
            ImageId=ami, InstanceType=BUILD_INSTANCE_TYPE, MinCount=1, MaxCount=1, SubnetId=subnet,
            IamInstanceProfile={"Name": profile},
            BlockDeviceMappings=[{"DeviceName": DATA_DEVICE, "Ebs": {
                "VolumeSize": DATA_VOLUME_GIB, "VolumeType": "gp3", "DeleteOnTermination": True}}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": f"{BUILD_NAME}-builder"}, {"Key": "qwen3-speech/cluster", "Value": self.cluster_name}]}])
        if groups:
            request["SecurityGroupIds"] = groups
        deadline = time.monotonic() + 120
        while True:
            try:
                with aws_call("ec2:RunInstances", f"{BUILD_INSTANCE_TYPE} from {ami}", self.region):
                    self.instance_id = ec2.run_instances(**request)["Instances"][0]["InstanceId"]
                break
            except AwsProblem as problem:
                # A new instance profile takes seconds to reach EC2 (IAM is eventually consistent).
                if problem.code != "InvalidParameterValue" or "profile" not in str(problem).lower() \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(self.poll)
        with aws_call("ec2:DescribeInstances", f"instance {self.instance_id}", self.region):
            ec2.get_waiter("instance_running").wait(InstanceIds=[self.instance_id], WaiterConfig=self._waiter())
        self._step(3, f"instance {self.instance_id} running ({BUILD_INSTANCE_TYPE}, data volume {DATA_VOLUME_GIB} GiB)")

    def _waiter(self) -> dict[str, int]:
        return {"Delay": max(1, int(self.poll)), "MaxAttempts": max(1, int(self.wait_seconds / max(1, self.poll)))}

    def _run(self, what: str, commands: list[str], subject: str) -> None:
        """Run `commands` on the build instance through SSM Run Command and wait for them to succeed."""
        ssm = self.session.client("ssm")
        deadline = time.monotonic() + self.wait_seconds
        while True:  # until the instance's SSM agent has registered
            try:
                with aws_call("ssm:SendCommand", f"instance {self.instance_id}", self.region):
                    command = ssm.send_command(
                        InstanceIds=[self.instance_id], DocumentName="AWS-RunShellScript",
                        Comment=f"{BUILD_NAME}: {what}"[:100], TimeoutSeconds=int(self.wait_seconds),
                        Parameters={"commands": commands, "executionTimeout": [str(int(self.wait_seconds))]})
                break
            except AwsProblem as problem:
                if problem.code != "InvalidInstanceId" or time.monotonic() > deadline:
                    raise
                time.sleep(self.poll)
        command_id = command["Command"]["CommandId"]
        while True:
            try:
                with aws_call("ssm:GetCommandInvocation", f"command {command_id}", self.region):
                    invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=self.instance_id)
            except AwsProblem as problem:
                if problem.code != "InvocationDoesNotExist":  # asked before SSM recorded it
                    raise
                invocation = {"Status": "Pending"}
            if invocation["Status"] in SSM_DONE:
                break
            if time.monotonic() > deadline:
                raise AwsProblem(f"ssm:GetCommandInvocation: {what} ({subject}) on {self.instance_id} is still "
                                 f"{invocation['Status']} after {self.wait_seconds:.0f} s; see command {command_id}")
            time.sleep(self.poll)
        if invocation["Status"] != "Success":
            error = (invocation.get("StandardErrorContent") or "").strip()[-500:]
            raise AwsProblem(f"ssm:SendCommand: {what} ({subject}) on {self.instance_id} ended {invocation['Status']}"
                             f"{': ' + error if error else ''} (command {command_id})")

    def _stop(self) -> str:
        ec2 = self.session.client("ec2")
        with aws_call("ec2:StopInstances", f"instance {self.instance_id}", self.region):
            ec2.stop_instances(InstanceIds=[self.instance_id])
            ec2.get_waiter("instance_stopped").wait(InstanceIds=[self.instance_id], WaiterConfig=self._waiter())
            instance = ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"][0]["Instances"][0]
        volume = next((m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings") or []
                       if m.get("DeviceName") == DATA_DEVICE), None)
        if volume is None:
            raise AwsProblem(f"ec2:DescribeInstances: instance {self.instance_id} has no {DATA_DEVICE} data volume")
        self._step(5, f"instance stopped; data volume {volume}")
        return volume

    def _snapshot(self, volume: str) -> str:
        ec2 = self.session.client("ec2")
        tags = [{"Key": "Name", "Value": BUILD_NAME}, {"Key": "qwen3-speech/cluster", "Value": self.cluster_name}]
        tags += [{"Key": IMAGE_TAG_PREFIX + key, "Value": image} for key, image in sorted(self.images.items())]
        tags += [{"Key": MODEL_TAG_PREFIX + key, "Value": f"{repo}@{commit}"}
                 for key, (repo, commit) in sorted(self.models.items())]
        with aws_call("ec2:CreateSnapshot", f"volume {volume}", self.region):
            snapshot_id = ec2.create_snapshot(
                VolumeId=volume, Description=f"Bottlerocket data volume with the qwen3-speech images"
                f"{' and models' if self.models else ''} ({self.cluster_name})",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}])["SnapshotId"]
        self._step(6, f"snapshot {snapshot_id} of {volume}, waiting for it to complete")
        with aws_call("ec2:DescribeSnapshots", f"snapshot {snapshot_id}", self.region):
            ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot_id], WaiterConfig=self._waiter())
        return snapshot_id

    def _terminate(self) -> None:
        if self.instance_id is None:
            return
        ec2 = self.session.client("ec2")
        with aws_call("ec2:TerminateInstances", f"instance {self.instance_id}", self.region):
            ec2.terminate_instances(InstanceIds=[self.instance_id])
            ec2.get_waiter("instance_terminated").wait(InstanceIds=[self.instance_id], WaiterConfig=self._waiter())
        self._step(7, f"instance {self.instance_id} terminated")
        self.instance_id = None

