"""An account without the model file system, image or queue: the playbook creates EFS only when asked, once."""

from __future__ import annotations

import pytest

from qwen_speech import aws
from tests.aws_helpers import running_sandbox_aws, sandbox_session


@pytest.fixture(scope="module")
def sandbox_aws(tmp_path_factory):
    with running_sandbox_aws(tmp_path_factory.mktemp("aws"), efs_file_system=False, ecr_image=False,
                             sqs_queue=False) as started:
        yield started


@pytest.fixture
def session(sandbox_aws):
    return sandbox_session(sandbox_aws)


def file_systems(session):
    return session.client("efs").describe_file_systems()["FileSystems"]


def security_groups_named(session, name):
    return session.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]


def test_without_create_a_missing_file_system_says_how_to_get_one(session):
    with pytest.raises(aws.AwsProblem) as problem:
        aws.resolve_efs(session, name_tag="qwen3-models", cluster_name="qwen3-sandbox")
    assert "no file system in us-west-2 carries Name=qwen3-models" in problem.value.message
    assert "efs_create: true" in problem.value.message


def test_dry_run_says_what_would_be_created_and_creates_nothing(sandbox_aws, session):
    before = len(file_systems(session))
    result = aws.resolve_efs(session, name_tag="qwen3-rehearsal", create=True, cluster_name="qwen3-sandbox",
                             dry_run=True)
    assert (result.file_system_id, result.action) == (None, "would-create")
    assert result.details["mount_target_subnets"] == sandbox_aws.facts["subnet_ids"]
    assert result.details["security_group"] == "qwen3-rehearsal-efs"
    assert result.details["nfs_from_security_groups"] == [sandbox_aws.facts["node_security_group_id"]]
    assert len(file_systems(session)) == before
    assert security_groups_named(session, "qwen3-rehearsal-efs") == []


def test_created_file_system_is_encrypted_mounted_per_zone_and_open_to_the_nodes(sandbox_aws, session):
    result = aws.resolve_efs(session, name_tag="qwen3-models", create=True, cluster_name="qwen3-sandbox",
                             poll_seconds=0.2)
    assert result.action == "created"
    efs = session.client("efs")
    file_system = efs.describe_file_systems(FileSystemId=result.file_system_id)["FileSystems"][0]
    assert file_system["Encrypted"] and file_system["LifeCycleState"] == "available"
    assert {"Key": "Name", "Value": "qwen3-models"} in file_system["Tags"]
    assert file_system["CreationToken"] == aws.efs_creation_token("qwen3-sandbox", "qwen3-models")
    targets = efs.describe_mount_targets(FileSystemId=result.file_system_id)["MountTargets"]
    assert sorted(target["SubnetId"] for target in targets) == sorted(sandbox_aws.facts["subnet_ids"])
    (group,) = security_groups_named(session, "qwen3-models-efs")
    nfs = [rule for rule in group["IpPermissions"] if rule.get("FromPort") == 2049]
    assert [pair["GroupId"] for pair in nfs[0]["UserIdGroupPairs"]] == [sandbox_aws.facts["node_security_group_id"]]
    for target in targets:
        assert efs.describe_mount_target_security_groups(MountTargetId=target["MountTargetId"])["SecurityGroups"] == [
            group["GroupId"]]


def test_rerun_finds_the_created_file_system_instead_of_making_another(session):
    first = aws.resolve_efs(session, name_tag="qwen3-rerun", create=True, cluster_name="qwen3-sandbox")
    count = len(file_systems(session))
    again = aws.resolve_efs(session, name_tag="qwen3-rerun", create=True, cluster_name="qwen3-sandbox")
    assert (again.file_system_id, again.action) == (first.file_system_id, "found")
    assert len(file_systems(session)) == count
    assert len(session.client("efs").describe_mount_targets(FileSystemId=first.file_system_id)["MountTargets"]) == 2


def test_renamed_file_system_is_still_found_by_its_creation_token(session):
    first = aws.resolve_efs(session, name_tag="qwen3-renamed", create=True, cluster_name="qwen3-sandbox")
    efs = session.client("efs")
    efs.tag_resource(ResourceId=first.file_system_id, Tags=[{"Key": "Name", "Value": "someone-renamed-it"}])
    count = len(file_systems(session))
    again = aws.resolve_efs(session, name_tag="qwen3-renamed", create=True, cluster_name="qwen3-sandbox")
    assert again.file_system_id == first.file_system_id and len(file_systems(session)) == count


def test_repository_without_the_tag_fails_preflight(session):
    with pytest.raises(aws.AwsProblem, match="no image tagged 'latest' in ECR repository 'qwen3-tts'"):
        aws.resolve_ecr_image(session, "qwen3-tts", "latest")


def test_missing_interruption_queue_is_reported_absent(session):
    assert aws.check_interruption_queue(session, "Karpenter-qwen3-sandbox") is False
