"""What a run survives without a rerun: a flaky API server, a Spot interruption at any point.

Every deploy here starts from scratch and must converge on its first run: no duplicate object,
every model byte downloaded once, verify passing.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from sandbox.fixtures import start_sandbox_process
from tests.deploy_helpers import ROOT, assert_ok, deploy, output, run_pyinfra, writes


def hub_bytes_served(sandbox) -> dict[str, int]:
    with urllib.request.urlopen(sandbox.state["hub_url"] + "/_sandbox/stats", timeout=10) as answer:
        return json.load(answer)["bytes_served"]


def model_sizes(sandbox) -> dict[str, int]:
    """Bytes of every file of both models at the commits the deploy recorded, from the Hub's own API."""
    from huggingface_hub import HfApi
    from kubernetes import client

    record = client.CoreV1Api(sandbox.control.kube_api_client()).read_namespaced_config_map(
        "qwen3-speech-models", "hosthree").data
    api = HfApi(endpoint=sandbox.state["hub_url"])
    sizes = {}
    for key in ("asr", "tts"):
        info = api.model_info(record[f"{key}-repo"], revision=record[key], files_metadata=True)
        sizes.update({f"{record[f'{key}-repo']}/{f.rfilename}": f.size for f in info.siblings})
    return sizes


def duplicate_creations(records: list[dict]) -> list[str]:
    """Objects created more than once (answered 201 twice; the playbook creates by server-side apply, by name)."""
    created = collections.Counter(r["path"] for r in writes(records) if r.get("code") == 201)
    return [path for path, count in created.items() if count > 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_deploy_from_scratch_with_api_errors_and_drops_at_ten_percent_converges_on_its_first_run(make_sandbox, seed):
    sandbox = make_sandbox()
    sandbox.control.fault("api-errors", rate=0.1, codes=[500, 503, 429], seed=seed)
    # Half the drops lose the answer after the server did the work: a retried write meets its own result.
    sandbox.control.fault("api-drop", rate=0.1, seed=seed + 100, after=True)
    result = deploy(sandbox)
    assert_ok(result)
    sandbox.control.fault("clear")
    records = sandbox.control.audit()
    assert sum(1 for r in records if r.get("fault")) >= 5, "the faults did not fire"
    assert "transient API error" in output(result)  # reported once per step, not silently absorbed
    assert "8. verify: ASR /health: 200" in output(result) and "round trip tts-1/Vivian" in output(result)
    assert duplicate_creations(records) == []
    assert hub_bytes_served(sandbox) == model_sizes(sandbox)


# ---------------------------------------------------------------------------------------------
# Spot interruptions: one sandbox for all of them; each scenario first purges what the last one
# built (models, time-slicing, PVC), so the deploy goes through every step and wait again.

@pytest.fixture(scope="module")
def spot_sandbox(tmp_path_factory):
    sandbox = start_sandbox_process(tmp_path_factory.mktemp("spot") / "sandbox")
    try:
        yield sandbox
    finally:
        sandbox.stop()


def _trigger_line(text: str):
    return lambda line, records: text in line


def _trigger_write(resource: str, name_part: str = ""):
    def seen(line, records):
        return any(r["resource"] == resource and name_part in r["path"] and r.get("code", 0) < 300
                   for r in writes(records))
    return seen


# When to interrupt: the start of a step (the boundary after the previous one) and the inside of a wait.
# Steps 4-7 apply first and are waited for after (deploy_order overlapped): inside ASR's and TTS's
# waits is the start of their "Ready" operations, inside the ALB's its Ingress write (it provisions
# while the models, ASR and TTS are waited for). The seeding Jobs run on the system node, so an
# interruption while they run takes the GPU node the serving pods are pulling on.
SPOT_MOMENTS = {
    "boundary-before-2-namespace": _trigger_line("Starting operation: 2. Namespace"),
    "boundary-before-4-models": _trigger_line("Starting operation: 4. Models | Seed "),
    "boundary-before-5-asr": _trigger_line("Starting operation: 5. ASR"),
    "boundary-before-6-tts": _trigger_line("Starting operation: 6. TTS"),
    "boundary-before-7-ingress": _trigger_line("Starting operation: 7. Ingress"),
    "boundary-before-8-verify": _trigger_line("Starting operation: 8. Verify"),
    "in-1-time-slicing-wait": _trigger_write("daemonsets", "nvidia-device-plugin"),
    "in-3-pvc-wait": _trigger_write("persistentvolumeclaims"),
    "in-4-seeding-job": _trigger_write("jobs", "qwen3-seed-"),
    "in-5-asr-wait": _trigger_line("Starting operation: 5. ASR | Ready"),
    "in-6-tts-wait": _trigger_line("Starting operation: 6. TTS | Ready"),
    "in-7-ingress-wait": _trigger_write("ingresses"),
}
# Two interruptions per run, so six runs cover every moment. The second comes once the first's
# replacement has joined: before that there is no GPU node to interrupt (steps 4-7 now apply
# without waiting in between, so two moments may be only seconds apart).
SPOT_RUNS = [
    ("in-1-time-slicing-wait", "boundary-before-4-models"),
    ("boundary-before-2-namespace", "in-4-seeding-job"),
    ("in-3-pvc-wait", "in-7-ingress-wait"),
    ("boundary-before-5-asr", "in-5-asr-wait"),
    ("boundary-before-7-ingress", "in-6-tts-wait"),
    ("boundary-before-6-tts", "boundary-before-8-verify"),
]


def _until_a_gpu_node_runs(sandbox, seconds: float = 60) -> None:
    """Wait (bounded) until a GPU node is there and not being interrupted."""
    import time

    from kubernetes import client

    core = client.CoreV1Api(sandbox.control.kube_api_client())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        nodes = core.list_node(label_selector="node-type=gpu").items
        if any(not any(t.key == "karpenter.sh/disrupted" for t in n.spec.taints or []) for n in nodes):
            return
        time.sleep(0.2)
    raise AssertionError("the replacement GPU node never joined")


def test_the_spot_runs_cover_every_moment():
    assert sorted(m for run in SPOT_RUNS for m in run) == sorted(SPOT_MOMENTS)


@pytest.mark.parametrize("moments", SPOT_RUNS, ids="+".join)
def test_spot_interruptions_at_step_boundaries_and_inside_waits_are_survived_by_the_same_run(spot_sandbox, moments):
    sandbox = spot_sandbox
    reset = run_pyinfra(sandbox, "destroy.py", "-y", "--data", "purge_models=true", "--data", "purge_time_slicing=true")
    assert_ok(reset)
    mark = sandbox.control.audit_mark()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update(QWEN3_SANDBOX_DIR=str(sandbox.root), PYTHONUNBUFFERED="1")
    run = subprocess.Popen([sys.executable, "-m", "pyinfra", "-y", "inventories/sandbox.py", "deploy.py"], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pending, lines, replacements = list(moments), [], []
    assert run.stdout is not None
    for line in run.stdout:
        lines.append(line)
        if pending and SPOT_MOMENTS[pending[0]](line, sandbox.control.audit_since(mark)):
            _until_a_gpu_node_runs(sandbox)
            replacements.append(sandbox.control.fault("spot-interruption", replacement_delay=1)["result"]["replacement"])
            pending.pop(0)
    run.wait(timeout=300)
    text = "".join(lines)
    assert not pending, f"{pending} never came:\n" + text[-3000:]
    assert run.returncode == 0, text[-6000:]
    assert "8. verify: ASR /health: 200" in text and "round trip tts-1/Vivian" in text
    # Verify's checks take milliseconds once its operation starts, so an interruption sent on the line
    # "Starting operation: 8. Verify" may come after them: then the run had nothing left to survive,
    # and verify rightly named the node it saw. Every earlier moment is waited out by a later step.
    if moments[-1] != "boundary-before-8-verify":
        assert f"Running on {replacements[-1]}" in text
