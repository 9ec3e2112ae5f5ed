"""A branch that moves on the Hub never upgrades a model silently: the plan says so, and the
inventory's model_upgrade_policy decides (production pins, the sandbox follows)."""

from __future__ import annotations

import runpy
import socket

from kubernetes import client

from sandbox.control import inventory_data  # what inventories/sandbox.py and sandbox_fleet.py list
from tests.deploy_helpers import ROOT, assert_ok, deploy, deployed, output, run_pyinfra, writes  # noqa: F401

ASR_REPO = "Qwen/Qwen3-ASR-1.7B"


def _record(sandbox) -> dict:
    core = client.CoreV1Api(sandbox.control.kube_api_client())
    return core.read_namespaced_config_map("qwen3-speech-models", "hosthree").data


def test_a_moved_branch_is_named_in_the_plan_and_followed_when_the_policy_says_follow(deployed):
    old = _record(deployed)["asr"]
    new = deployed.control.fault("hub-new-revision", repo=ASR_REPO, path="config.json")["result"]["commit"]
    line = f"4. models: ASR {ASR_REPO}: branch main moved {old[:12]} -> {new[:12]}; re-seeding"
    dry = run_pyinfra(deployed, "deploy.py", "--dry")
    assert_ok(dry)
    assert line in output(dry)
    result = deploy(deployed)
    assert_ok(result)
    assert line in output(result)
    assert _record(deployed)["asr"] == new and _record(deployed)["asr-revision"] == "main"


def test_a_pinned_policy_keeps_the_seeded_commit_writes_nothing_and_says_how_to_upgrade(deployed):
    old = _record(deployed)["asr"]
    new = deployed.control.fault("hub-new-revision", repo=ASR_REPO, path="config.json")["result"]["commit"]
    kept = f"4. models: ASR {ASR_REPO}: branch main moved {old[:12]} -> {new[:12]}; keeping {old[:12]}"
    dry = run_pyinfra(deployed, "deploy.py", "--dry", "--data", "model_upgrade_policy=pinned")
    assert_ok(dry)
    assert kept in output(dry) and f"asr_model_revision: {new}" in output(dry)
    mark = deployed.control.audit_mark()
    result = deploy(deployed, "--data", "model_upgrade_policy=pinned")
    assert_ok(result)
    assert kept in output(result)
    assert writes(deployed.control.audit_since(mark)) == [], "a pinned rerun neither re-seeds nor restarts ASR"
    assert _record(deployed)["asr"] == old

    upgrade = deploy(deployed, "--data", "model_upgrade_policy=pinned", "--data", f"asr_model_revision={new}")
    assert_ok(upgrade)
    assert _record(deployed)["asr"] == new


def test_production_pins_models_and_the_sandbox_follows():
    defaults = runpy.run_path(str(ROOT / "inventories/group_data/all.py"))
    production = runpy.run_path(str(ROOT / "inventories/production.py"))["production"][0][1]
    assert defaults["model_upgrade_policy"] == "pinned"
    assert production["model_upgrade_policy"] == "pinned"
    state = {"cluster_name": "c", "region": "r", "aws_endpoint_url": "http://aws", "hub_url": "http://hub"}
    assert inventory_data(ROOT, state)["model_upgrade_policy"] == "follow"


def test_an_unreachable_hub_stops_the_run_before_any_write_with_one_line_naming_the_endpoint(deployed):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    mark = deployed.control.audit_mark()
    result = deploy(deployed, "--data", f"hf_endpoint={endpoint}")
    assert result.returncode != 0
    assert f"4. models: could not reach the Hub at {endpoint}: " in output(result)
    assert "Traceback" not in output(result)
    assert writes(deployed.control.audit_since(mark)) == []
