"""Pods the controllers create go through the API server's admission, as on EKS: a missing
ServiceAccount stops a ReplicaSet or Job with FailedCreate until it exists; tokens are projected."""

from __future__ import annotations

from sandbox.cluster.common import DEPLOYMENTS, JOBS, REPLICASETS, condition
from sandbox.kubeapi.resources import by_key
from tests.cluster_helpers import deployment, events, job, pods, running_cluster, wait_for

SERVICE_ACCOUNTS = by_key("serviceaccounts")
REFUSAL = 'is forbidden: error looking up service account default/speech: serviceaccount "speech" not found'


def test_a_deployment_naming_a_missing_service_account_gets_no_pods_until_it_exists(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("web", spec={"serviceAccountName": "speech"}))
        [failed] = wait_for(lambda: events(store, "web-", reason="FailedCreate"), "a FailedCreate event")
        (rs,) = store.list(REPLICASETS, "default")
        prefix = rs["metadata"]["name"] + "-"
        assert failed["type"] == "Warning" and failed["involvedObject"]["kind"] == "ReplicaSet"
        assert failed["message"] == f'Error creating: pods "{prefix}" {REFUSAL}'
        failure = wait_for(lambda: condition(store.get(REPLICASETS, "default", rs["metadata"]["name"]),
                                             "ReplicaFailure"), "the ReplicaFailure condition")
        assert (failure["status"], failure["reason"]) == ("True", "FailedCreate")
        assert failure["message"] == f'pods "{prefix}" {REFUSAL}'
        assert not pods(store, selector="app=web")
        shown = wait_for(lambda: condition(store.get(DEPLOYMENTS, "default", "web"), "ReplicaFailure"),
                         "the Deployment to show the ReplicaSet's failure")
        assert (shown["reason"], shown["message"]) == ("FailedCreate", failure["message"])

        store.create(SERVICE_ACCOUNTS, {"metadata": {"name": "speech", "namespace": "default"}})
        [pod] = wait_for(lambda: pods(store, selector="app=web"), "the pod once the ServiceAccount exists")
        assert pod["spec"]["serviceAccountName"] == "speech"
        wait_for(lambda: not condition(store.get(REPLICASETS, "default", rs["metadata"]["name"]), "ReplicaFailure")
                 and not condition(store.get(DEPLOYMENTS, "default", "web"), "ReplicaFailure"),
                 "the ReplicaFailure conditions to clear")


def test_controller_pods_get_the_token_volume_unless_automounting_is_off(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(DEPLOYMENTS, deployment("plain"))
        store.create(DEPLOYMENTS, deployment("quiet", spec={"automountServiceAccountToken": False}))
        [plain] = wait_for(lambda: pods(store, selector="app=plain"), "the plain pod")
        [quiet] = wait_for(lambda: pods(store, selector="app=quiet"), "the quiet pod")
        [volume] = plain["spec"]["volumes"]
        assert volume["name"].startswith("kube-api-access-") and plain["spec"]["serviceAccountName"] == "default"
        assert plain["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == \
            "/var/run/secrets/kubernetes.io/serviceaccount"
        assert not quiet["spec"].get("volumes")
        assert plain["metadata"]["managedFields"][0]["manager"] == "kube-controller-manager"


def test_a_job_naming_a_missing_service_account_retries_until_it_exists(tmp_path):
    with running_cluster(tmp_path) as cluster:
        store = cluster.store
        store.create(JOBS, job("seed", ["python3", "-c", "pass"], spec={"serviceAccountName": "speech"}))
        [failed] = wait_for(lambda: events(store, "seed", reason="FailedCreate"), "a FailedCreate event")
        assert failed["message"] == f'Error creating: pods "seed-" {REFUSAL}'
        store.create(SERVICE_ACCOUNTS, {"metadata": {"name": "speech", "namespace": "default"}})
        wait_for(lambda: pods(store, selector="job-name=seed"), "the Job's pod once the ServiceAccount exists")
