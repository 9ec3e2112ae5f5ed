"""A deploy rehearsed with the rights it will have on EKS: the shipped least-privilege role, no more."""

from __future__ import annotations

import subprocess
import sys

import yaml
from kubernetes import utils

from tests.deploy_helpers import ROOT, assert_ok, deploy, output, writes

ROLE_FILE = ROOT / "files" / "deployer-rbac.yaml"


def _deployer_kubeconfig(sandbox, tmp_path) -> str:
    """A kubeconfig whose token belongs to user ci in group qwen3-speech-deployers (not system:masters)."""
    path = tmp_path / "ci.kubeconfig"
    subprocess.run([sys.executable, "-m", "sandbox", "token", "--dir", str(sandbox.root), "--user", "ci",
                    "--group", "qwen3-speech-deployers", "--kubeconfig", str(path)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    return str(path)


def _grant(sandbox, docs: list[dict]) -> None:
    utils.create_from_yaml(sandbox.api_client(), yaml_objects=docs)


def test_a_deploy_with_the_shipped_deployer_role_converges_and_reruns_without_writes(sandbox, tmp_path):
    _grant(sandbox, [d for d in yaml.safe_load_all(ROLE_FILE.read_text()) if d])
    kubeconfig = _deployer_kubeconfig(sandbox, tmp_path)
    assert_ok(deploy(sandbox, "--data", f"kubeconfig={kubeconfig}"))
    mark = sandbox.control.audit_mark()
    assert_ok(deploy(sandbox, "--data", f"kubeconfig={kubeconfig}"))
    assert [r for r in writes(sandbox.control.audit_since(mark)) if r.get("resource") != "leases"] == []


def test_a_role_missing_one_rule_stops_in_preflight_naming_the_verb_and_resource_and_writes_nothing(sandbox, tmp_path):
    docs = [d for d in yaml.safe_load_all(ROLE_FILE.read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    # Jobs may be read but not created: the seeding step would fail halfway without preflight.
    for rule in role["rules"]:
        if rule.get("apiGroups") == ["batch"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    _grant(sandbox, docs)
    kubeconfig = _deployer_kubeconfig(sandbox, tmp_path)
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox, "--data", f"kubeconfig={kubeconfig}")
    text = output(result)
    assert result.returncode != 0, text[-3000:]
    assert "lacks 1 right(s)" in text and "create jobs.batch in namespace hosthree" in text, text[-3000:]
    assert "files/deployer-rbac.yaml" in text
    assert writes(sandbox.control.audit_since(mark)) == []
    token = yaml.safe_load(open(kubeconfig))["users"][0]["user"]["token"]
    assert token not in text  # the bearer token is never printed
