"""The cluster against the sandbox's AWS account (moto): EFS file systems and ALBs are real there."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from sandbox.cluster.common import INGRESSES, PVCS, PVS, STORAGECLASSES
from tests.aws_helpers import running_sandbox_aws
from tests.cluster_helpers import events, running_cluster, wait_for
from tests.sandbox.test_cluster_network import hostname, ingress
from tests.sandbox.test_cluster_storage import claim, phase, storage_class


@pytest.fixture(scope="module")
def sandbox_aws(tmp_path_factory):
    with running_sandbox_aws(tmp_path_factory.mktemp("aws")) as started:
        yield started


def load_balancers(sandbox_aws) -> dict[str, list[int]]:
    elbv2 = sandbox_aws.client("elbv2")
    out = {}
    for lb in elbv2.describe_load_balancers()["LoadBalancers"]:
        try:
            listeners = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        except ClientError:  # deleted between the two calls
            continue
        out[lb["DNSName"]] = sorted(listener["Port"] for listener in listeners)
    return out


def test_claim_binds_only_for_the_file_system_that_exists_in_the_account(tmp_path, sandbox_aws):
    with running_cluster(tmp_path, aws=sandbox_aws) as cluster:
        store = cluster.store
        store.create(STORAGECLASSES, storage_class("real", fs_id=sandbox_aws.facts["efs_file_system_id"]))
        store.create(STORAGECLASSES, storage_class("made-up", fs_id="fs-0123456789abcdef0"))
        store.create(PVCS, claim("models", "real"))
        store.create(PVCS, claim("other", "made-up"))
        wait_for(lambda: phase(store, "models") == "Bound", "the claim on the real file system to bind")
        failed = wait_for(lambda: events(store, "other", reason="ProvisioningFailed"), "ProvisioningFailed")
        assert "fs-0123456789abcdef0" in failed[0]["message"]
        assert phase(store, "other") == "Pending"
        assert [pv["spec"]["claimRef"]["name"] for pv in store.list(PVS)] == ["models"]


def test_ingress_group_gets_one_load_balancer_with_both_listeners_deleted_with_the_last_ingress(tmp_path, sandbox_aws):
    with running_cluster(tmp_path, aws=sandbox_aws) as cluster:
        store = cluster.store
        store.create(INGRESSES, ingress("asr", 8000))
        store.create(INGRESSES, ingress("tts", 8880))
        wait_for(lambda: hostname(store, "asr") and hostname(store, "asr") == hostname(store, "tts")
                 and load_balancers(sandbox_aws).get(hostname(store, "asr")) == [8000, 8880],
                 "one shared load balancer listening on 8000 and 8880")
        dns = hostname(store, "asr")
        store.delete(INGRESSES, "default", "asr")
        wait_for(lambda: load_balancers(sandbox_aws).get(dns) == [8880], "the ASR listener to go")
        store.delete(INGRESSES, "default", "tts")
        wait_for(lambda: dns not in load_balancers(sandbox_aws), "the load balancer to be deleted")
