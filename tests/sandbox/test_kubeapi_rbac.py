"""RBAC in the sandbox API server: what a non-admin token may do, answered as kube-apiserver answers."""

from __future__ import annotations

import json
import subprocess

import pytest

from sandbox.kubeapi.rbac import mint_token

RBAC = "/apis/rbac.authorization.k8s.io/v1"
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "team"},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}


def _admin_token(kube) -> str:
    return kube.handle.state["admin_token"]


def _create(kube, path, body):
    code, answer, _ = kube.request("POST", path, body=body)
    assert code == 201, answer


@pytest.fixture
def team(kube):
    """Namespace `team`, a Deployment in it, and a Role that lets group `deployers` read and scale deployments."""
    _create(kube, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    _create(kube, "/apis/apps/v1/namespaces/team/deployments", DEPLOYMENT)
    _create(kube, f"{RBAC}/namespaces/team/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"],
                   "verbs": ["get", "list"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"], "resourceNames": ["allowed"]}]})
    _create(kube, f"{RBAC}/namespaces/team/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "Group", "name": "deployers", "apiGroup": "rbac.authorization.k8s.io"}]})
    return mint_token(_admin_token(kube), "alice", ["deployers"])


def test_a_role_allows_its_verbs_and_subresources_and_refuses_the_rest_with_upstreams_message(kube, team):
    assert kube.request("GET", "/apis/apps/v1/namespaces/team/deployments/web", token=team)[0] == 200
    assert kube.request("GET", "/apis/apps/v1/namespaces/team/deployments/web/scale", token=team)[0] == 200
    code, status, _ = kube.request("PATCH", "/apis/apps/v1/namespaces/team/deployments/web", token=team,
                                   body={"spec": {"replicas": 2}}, content_type="application/merge-patch+json")
    assert code == 403 and status["reason"] == "Forbidden"
    assert status["message"] == ('deployments.apps "web" is forbidden: User "alice" cannot patch resource '
                                 '"deployments" in API group "apps" in the namespace "team"')
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    code, status, _ = kube.request("GET", "/api/v1/namespaces/other/pods", token=team)
    assert code == 403 and status["message"] == ('pods is forbidden: User "alice" cannot list resource "pods" in '
                                                 'API group "" in the namespace "other"')
    code, status, _ = kube.request("GET", "/api/v1/nodes", token=team)
    assert code == 403 and status["message"].endswith('cannot list resource "nodes" in API group "" at the cluster scope')


def test_resource_names_limit_a_rule_and_an_apply_that_creates_needs_create(kube, team):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "allowed"}, "data": {"a": "b"}}
    ok = kube.request("PATCH", "/api/v1/namespaces/team/configmaps/allowed", token=team, body=body,
                      content_type="application/apply-patch+yaml", query={"fieldManager": "t"})
    assert ok[0] == 201, ok[1]
    other = dict(body, metadata={"name": "other"})
    code, status, _ = kube.request("PATCH", "/api/v1/namespaces/team/configmaps/other", token=team, body=other,
                                   content_type="application/apply-patch+yaml", query={"fieldManager": "t"})
    assert code == 403 and 'cannot patch resource "configmaps"' in status["message"]


def test_cluster_roles_with_aggregation_bound_to_service_accounts_and_missing_roles(kube):
    _create(kube, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}})
    _create(kube, "/api/v1/namespaces/ops/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}})
    _create(kube, f"{RBAC}/clusterroles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "node-reader", "labels": {"agg": "yes"}},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
                  {"nonResourceURLs": ["/metrics*"], "verbs": ["get"]}]})
    _create(kube, f"{RBAC}/clusterroles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "aggregate"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]}, "rules": []})
    for name, role in (("bot-agg", "aggregate"), ("bot-missing", "nowhere")):
        _create(kube, f"{RBAC}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "ops"}]})
    token = mint_token(_admin_token(kube), "system:serviceaccount:ops:bot")
    assert kube.request("GET", "/api/v1/nodes", token=token)[0] == 200
    code, status, _ = kube.request("GET", "/api/v1/pods", token=token)
    assert code == 403 and status["message"].endswith(
        ': RBAC: clusterrole.rbac.authorization.k8s.io "nowhere" not found')
    # A bound ServiceAccount token dies with its ServiceAccount.
    assert kube.request("DELETE", "/api/v1/namespaces/ops/serviceaccounts/bot")[0] == 200
    assert kube.request("GET", "/api/v1/nodes", token=token)[0] == 401


def test_admin_is_system_masters_and_a_forged_token_is_unauthorized(kube):
    code, review, _ = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                   body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert code == 201 and "system:masters" in review["status"]["userInfo"]["groups"]
    forged = mint_token("not-the-admin-token", "mallory", ["system:masters"])
    assert kube.request("GET", "/api/v1/nodes", token=forged)[0] == 401


def _kubectl(kube, tmp_path, token, *args):
    config = json.loads(json.dumps(__import__("yaml").safe_load(kube.handle.kubeconfig.read_text())))
    config["users"] = [{"name": "u", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "u"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return subprocess.run(["kubectl", "--kubeconfig", str(path), *args], capture_output=True, text=True, timeout=60)


def test_kubectl_auth_can_i_and_whoami_answer_for_a_non_admin_token(kube, team, tmp_path):
    yes = _kubectl(kube, tmp_path, team, "auth", "can-i", "get", "deployments.apps/web", "-n", "team")
    assert yes.returncode == 0 and yes.stdout.strip() == "yes", yes.stderr
    no = _kubectl(kube, tmp_path, team, "auth", "can-i", "patch", "deployments", "-n", "team")
    assert no.returncode == 1 and no.stdout.strip() == "no", no.stderr
    listed = _kubectl(kube, tmp_path, team, "auth", "can-i", "--list", "-n", "team")
    assert listed.returncode == 0 and "deployments.apps/scale" in listed.stdout, listed.stderr
    who = _kubectl(kube, tmp_path, team, "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == "alice" and set(info["groups"]) == {"deployers", "system:authenticated"}


def test_the_shipped_deployer_role_lets_its_group_apply_the_app_but_not_read_other_secrets_kinds(kube):
    import yaml
    from pathlib import Path

    for doc in yaml.safe_load_all((Path(__file__).resolve().parents[2] / "files/deployer-rbac.yaml").read_text()):
        _create(kube, f"{RBAC}/{'clusterroles' if doc['kind'] == 'ClusterRole' else 'clusterrolebindings'}", doc)
    token = mint_token(_admin_token(kube), "ci", ["qwen3-speech-deployers"])

    def can(verb, group, resource, namespace="", name=""):
        code, review, _ = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token=token,
                                       body={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                             "spec": {"resourceAttributes": {"verb": verb, "group": group,
                                                                             "resource": resource, "name": name,
                                                                             "namespace": namespace}}})
        assert code == 201, review
        return review["status"]["allowed"]

    assert can("patch", "apps", "deployments", "hosthree") and can("create", "batch", "jobs", "hosthree")
    assert can("update", "coordination.k8s.io", "leases", "kube-system", "qwen3-speech-deploy")
    assert not can("update", "coordination.k8s.io", "leases", "kube-system", "someone-elses")
    assert not can("delete", "", "namespaces", "hosthree", "hosthree")
    assert not can("create", "rbac.authorization.k8s.io", "clusterrolebindings")
