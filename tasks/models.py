"""Step 4 (模型下载): both models seeded into EFS once, at pinned commits, verified file by file.

The guide has each pod's init container download its model and only check that files exist.
Here the revision (branch, tag or commit) is resolved to a commit on the operator's machine, a
Job per model runs files/seed_models.py in the cluster (resumable, verified against the Hub's
sizes and hashes, completion manifest written last), and the result is recorded in the
ConfigMap `qwen3-speech-models`. A rerun that finds the wanted commits recorded, and no pod
whose model guard fails, does nothing at all: no Job, no write.

With gpu_image_cache_snapshot_id, a model whose commit the snapshot's tags name is on every GPU
node of the managed pool (qwen_speech/image_cache.py puts it on the data volume): its Job runs
there and copies it from the node's disk (seed_models.py --local-source, each file checked against
the Hub's hash, the Hub for what does not verify). Another commit is downloaded as without the cache.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timezone

import click
from pyinfra import host, logger, state
from pyinfra.api import deploy, operation

from kubeops import k8s
from kubeops.client import KubeApiError
from kubeops.kinds import Ref
from kubeops.waiter import (Heartbeat, describe_pod, init_log_line, job_failed, job_log_line, job_log_tail, job_ready,
                            pod_selector)
from qwen_speech.manifests import labels, render, script
from qwen_speech.settings import COMMIT

from . import gpu_nodepool
from .context import DeployBlocked, Model, context_of, host_tag

RECORD = "qwen3-speech-models"
AUDIT_JOB = "qwen3-model-audit"
AUDIT_LINE = "MODEL-AUDIT "
SCRIPTS = ("seed_models.py", "check_model_manifest.py", "tts_health_check.py", "tts_api_key.py", "wait_for_asr.py")


def resolve_commit(repo: str, revision: str, endpoint: str | None) -> str:
    """The commit a branch or tag points at now, asked of the Hub from this machine.

    The request `HfApi.model_info` sends (huggingface_hub hf_api.py: GET /api/models/<repo>/revision/
    <revision> with build_hf_headers, checked by hf_raise_for_status), made through huggingface_hub's
    light utils: importing `HfApi` (hf_api.py, the Inference Endpoints, Jobs and Spaces APIs) cost
    ~0.3 s of every run for one field of the answer.
    """
    from urllib.parse import quote

    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError,
                                       build_hf_headers, get_session, hf_raise_for_status)

    where = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        response = get_session().get(f"{where}/api/models/{repo}/revision/{quote(revision, safe='')}",
                                     headers=build_hf_headers())
        hf_raise_for_status(response)
        return response.json()["sha"]
    except GatedRepoError:
        raise DeployBlocked(f"4. models: {repo} on {where} is gated: accept its terms on the Hub and export HF_TOKEN "
                            "(and set hf_token_secret so the seeding Job gets it too)") from None
    except RevisionNotFoundError:
        raise DeployBlocked(f"4. models: revision {revision!r} of {repo} not found on {where}; "
                            "fix asr_model_revision / tts_model_revision (a branch, tag or 40-hex commit)") from None
    except RepositoryNotFoundError:
        raise DeployBlocked(f"4. models: repository {repo} not found on {where} (or it is private and HF_TOKEN is "
                            "missing or wrong); fix asr_model_repo / tts_model_repo or export HF_TOKEN") from None
    except HfHubHTTPError as err:
        raise DeployBlocked(f"4. models: the Hub at {where} answered {err}") from None
    # huggingface_hub's session is an httpx2.Client (utils/_http.py default_client_factory): a refused
    # connection or a timeout is an httpx2.TransportError, which is no OSError.
    except (OSError, httpx2.TransportError) as err:
        raise DeployBlocked(f"4. models: could not reach the Hub at {where}: {err}") from None


def job_name(model: Model) -> str:
    return f"qwen3-seed-{model.key}-{model.commit[:12]}"


def _revisions(s) -> list[tuple[str, str, str, str]]:
    """(key, repo, revision, path in the pods) of both models."""
    return [("asr", s.asr_model_repo, s.asr_model_revision, s.asr_model_path),
            ("tts", s.tts_model_repo, s.tts_model_revision, s.tts_model_path)]


def look_up_commits(ctx) -> None:
    """Ask the Hub for both models' commits in the background, from the start of the preparation:
    the round trips to the Hub and importing huggingface_hub's HTTP client (~0.17 s CPU, most of
    it its TLS context) overlap the prerequisites' API calls instead of following them.
    resolve_models takes the answers, or the error, where it asked before."""
    s = ctx.settings
    for key, repo, revision, _ in _revisions(s):
        ctx.hub_commits[key] = _in_background(resolve_commit, repo, revision, s.hf_endpoint)


def _in_background(function, *args) -> Future:
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as err:  # DeployBlocked and anything else: raised by result(), where it was asked
            future.set_exception(err)

    # Daemon: a run stopped by an earlier step does not wait for the Hub to answer.
    threading.Thread(target=run, name="hub-commit", daemon=True).start()
    return future


def resolve_models(ctx) -> list[str]:
    """Each model's commit: the revision resolved on the Hub, or, when a branch or tag moved since
    the model was seeded and model_upgrade_policy is "pinned", the seeded commit. Returns the
    plan lines that say so (a moved branch is never followed, or refused, silently)."""
    s = ctx.settings
    try:
        recorded = ctx.recorded_models = recorded_commits(ctx.kube, s.namespace)
    except KubeApiError:
        recorded = {}
    lines = []
    for key, repo, revision, path in _revisions(s):
        asked = ctx.hub_commits.pop(key, None)
        commit = asked.result() if asked is not None else resolve_commit(repo, revision, s.hf_endpoint)
        commit, line = _upgrade_decision(key, repo, revision, commit, recorded, s.model_upgrade_policy)
        if line:
            lines.append(line)
        node_path, line = _on_node_disk(ctx, key, repo, commit, recorded)
        if line:
            lines.append(line)
        ctx.models[key] = Model(key, repo, revision, commit, path, node_path)
    return lines


def _on_node_disk(ctx, key: str, repo: str, commit: str, recorded: dict[str, str]) -> tuple[str | None, str | None]:
    """(where the GPU nodes have repo@commit on their disk, the plan line when they do not and a seed is due).

    With gpu_image_cache_snapshot_id, a snapshot whose tags say it holds this commit lets the seed
    copy from the node; any other commit (the revision moved, or the snapshot predates the models)
    is downloaded from the Hub, and the line says why."""
    snapshot = ctx.image_cache
    if snapshot is None:
        return None, None
    from qwen_speech.image_cache import node_model_path

    node_path = node_model_path(snapshot, key, repo, commit)
    if node_path is not None or recorded.get(key) == commit:
        return node_path, None
    held = snapshot.models.get(key)
    return None, (f"4. models: {key.upper()} {repo}@{commit[:12]}: image cache {snapshot.snapshot_id} holds "
                  f"{held[:held.index('@') + 13] if held and '@' in held else 'no ' + key.upper() + ' model'}, not "
                  "this commit: seeding from the Hub (`python -m qwen_speech image-cache build` makes a snapshot with it)")


def _upgrade_decision(key: str, repo: str, revision: str, commit: str, recorded: dict[str, str],
                      policy: str) -> tuple[str, str | None]:
    """(the commit to deploy, the plan line) for a model whose revision may have moved."""
    seeded = recorded.get(key)
    if not seeded or seeded == commit or COMMIT.match(revision) or recorded.get(f"{key}-repo", repo) != repo:
        return commit, None
    seeded_revision = recorded.get(f"{key}-revision")
    if seeded_revision is not None and seeded_revision != revision:
        return commit, (f"4. models: {key.upper()} {repo}: revision changed {seeded_revision} -> {revision} "
                        f"({seeded[:12]} -> {commit[:12]}); re-seeding")
    moved = f"4. models: {key.upper()} {repo}: branch {revision} moved {seeded[:12]} -> {commit[:12]}"
    if policy == "follow":
        return commit, f"{moved}; re-seeding (model_upgrade_policy follow)"
    return seeded, (f"{moved}; keeping {seeded[:12]} (model_upgrade_policy pinned; to upgrade, set "
                    f"{key}_model_revision: {commit} or model_upgrade_policy: follow)")


def env_secret(ctx, name: str | None, key: str, env_var: str, step: str, setting: str) -> list[dict]:
    """The Secret `name` holding $env_var under `key`, made from this machine's environment only
    (never from inventory data, so the value is on no command line); blocked when neither exists."""
    s = ctx.settings
    value = os.environ.get(env_var)
    if name and value:
        return [{
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": s.namespace, "labels": labels("qwen3-speech-" + key.lower().replace("_", "-"))},
            "data": {key: base64.b64encode(value.encode()).decode()},
        }]
    if name and ctx.kube.get(Ref("v1", "Secret", name, s.namespace)) is None:
        raise DeployBlocked(f"{step}: {setting} = {name!r} but there is no such Secret in "
                            f"{s.namespace} and {env_var} is not set here; export {env_var} so the playbook creates it")
    return []


def desired(ctx) -> list[dict]:
    """The scripts ConfigMap, and the token Secret when this machine has HF_TOKEN to put in it."""
    s = ctx.settings
    manifests = render("qwen3-speech-scripts.yaml", s, scripts={name: script(name) for name in SCRIPTS})
    return manifests + env_secret(ctx, s.hf_token_secret, "HF_TOKEN", "HF_TOKEN", "4. models", "hf_token_secret")


@deploy("4. Models")
def seed():
    """The scripts, and a seeding Job per model that needs one; waited for here in the guide's order."""
    ctx = context_of(host)
    s = ctx.settings
    for line in resolve_models(ctx):
        logger.warning(f"    {host_tag()}{line}")
    manifests = desired(ctx)
    k8s.applied(
        name="Seeding scripts" + (" + HF token Secret" if len(manifests) > 1 else ""),
        manifests=manifests,
        field_manager=s.field_manager,
        label="4. models",
    )
    models = list(ctx.models.values())
    seeding_started(name="Seed " + " + ".join(f"{m.repo}@{m.commit[:12]}" for m in models), models=models)
    if s.deploy_order == "guide":
        _seeded(ctx)


@deploy("4. Models")
def wait_seeded():
    """deploy_order overlapped: wait for the Jobs seed() started, while the pods pull and the ALB comes."""
    ctx = context_of(host)
    if ctx.settings.deploy_order == "overlapped":
        _seeded(ctx)


def _seeded(ctx) -> None:
    models = list(ctx.models.values())
    models_seeded(name="Seeded and verified: " + " + ".join(f"{m.key.upper()} @{m.commit[:12]}" for m in models),
                  models=models, timeout=ctx.settings.timeout_seed, poll=ctx.settings.poll_seconds,
                  unschedulable_grace=ctx.settings.unschedulable_grace_seconds)


def recorded_commits(kube, namespace: str) -> dict[str, str]:
    record = kube.get(Ref("v1", "ConfigMap", RECORD, namespace))
    return dict((record or {}).get("data") or {})


GUARD_WAITING = ": waiting for the seed"  # what check_model_manifest.py's waiting lines say


def guard_failures(kube, namespace: str, recorded: dict[str, str]) -> set[str]:
    """Models whose pods are blocked by the model guard: their data on EFS is missing or stale.

    Blocked means failed (a damaged model), or waiting for a seed of a model the record says is
    seeded (its manifest was deleted, say: no Job will come unless this run starts one)."""
    failing: set[str] = set()
    try:
        pods = kube.list("v1", "Pod", namespace, label_selector="app.kubernetes.io/part-of=qwen3-speech")
    except KubeApiError:
        return failing
    for pod in pods:
        view = describe_pod(pod)
        key = pod["metadata"]["labels"].get("app.kubernetes.io/name", "").replace("qwen3-", "")
        if view.failing_container == "model-guard":
            failing.add(key)
        elif view.init_running == "model-guard" and recorded.get(key):
            line = init_log_line(kube, namespace, view) or ""
            if GUARD_WAITING in line:
                failing.add(key)
    return failing


def models_to_seed(ctx, models: list[Model], recorded: dict[str, str]) -> tuple[list[Model], set[str]]:
    """The models that need a seeding Job (not recorded at their commit, or found damaged), and those
    of them whose pods' guard is blocked; warns why a recorded model is seeded again."""
    s, kube = ctx.settings, ctx.kube
    wanted = [m for m in models if recorded.get(m.key) != m.commit]
    if wanted:
        return wanted, set()
    broken = guard_failures(kube, s.namespace, recorded)
    damaged = audit_damage(kube, s.namespace, recorded)
    wanted = [m for m in models if m.key in broken or m.key in damaged]
    for m in wanted:
        if m.key in broken:
            logger.warning(f"    {host_tag()}4. models: the {m.key.upper()} pod's model guard is blocked: "
                           f"{m.path} on EFS is missing or incomplete; it will be seeded again")
        else:
            logger.warning(f"    {host_tag()}4. models: the last model audit (status --models) found "
                           f"{m.path} damaged ({describe_damage(damaged[m.key])}); it will be seeded again, "
                           "fetching only the damaged files")
    return wanted, broken


@operation(is_idempotent=True)
def seeding_started(models: list[Model]):
    """
    Start one seeding Job per model and commit that the volume does not hold yet; do not wait.

    + models: the models (repo, commit, path) to have on the volume

    A model recorded at its commit in the ConfigMap ``qwen3-speech-models``, with no pod whose
    model guard is blocked and no damage found by the last audit, needs nothing. A model on the GPU
    nodes' disk (``node_path``, the image cache) is copied from there, on a node of the managed pool. A Job that already
    exists for the same commit is replaced (its template cannot change; the seeder resumes).
    ``models_seeded`` waits for the Jobs and records them.
    """
    ctx = context_of(host)
    s, kube = ctx.settings, ctx.kube
    try:
        # The record read while preparing stands while nothing has changed in this run (only step 4
        # writes it); after a change, the cluster is read again, as every operation does.
        reuse = ctx.recorded_models is not None and not k8s.changed_this_run()
        recorded = ctx.recorded_models = ctx.recorded_models if reuse else recorded_commits(kube, s.namespace)
        wanted, broken = models_to_seed(ctx, models, recorded)
    except k8s.API_ERRORS as err:
        yield from k8s.failed("4. models", err)
        return
    if not wanted:
        host.noop("models already seeded: " + ", ".join(f"{m.repo}@{m.commit[:12]}" for m in models))
        return
    if state.config.DIFF and not (state.is_executing and state.check_for_changes):
        for m in wanted:
            before = recorded.get(m.key)
            logger.info(f"    {host_tag()}Will seed {click.style(m.repo, bold=True)} into {m.path}: "
                        + click.style(f"- {before or '(nothing recorded)'}", fg="red") + " "
                        + click.style(f"+ {m.commit} ({m.revision})", fg="green"))
    seed_image = ctx.seed_image
    # A copy from the image cache runs where the cache is: a node of the managed GPU pool.
    cache_node_selector = {**s.gpu_node_selector, "karpenter.sh/nodepool": gpu_nodepool.NAME}

    def start_jobs():
        for i, m in enumerate(wanted):
            # In load order (ASR, TTS), each Job downloads after the one before it: see the manifest.
            manifest = render("qwen3-model-seed-job.yaml", s, job_name=job_name(m), model=m, seed_image=seed_image,
                              after=wanted[i - 1] if i else None, cache_node_selector=cache_node_selector)[0]
            ref = Ref.of(manifest)
            if kube.get(ref) is not None:
                # A Job's pod template cannot change; a finished one is replaced so it runs again.
                kube.delete(ref, propagation="Foreground")
                _wait_deleted(kube, ref, s.poll_seconds)
            # Server-side apply, not POST: if the answer is lost and the request retried, the retry
            # finds the Job it made and changes nothing (a POST would get 409 AlreadyExists).
            kube.apply(manifest, field_manager=s.field_manager)
            source = f", copying from the GPU node's disk ({m.node_path})" if m.node_path else ""
            logger.info(f"    {host_tag()}4. models: created Job {ref.name} for {m.repo}@{m.commit[:12]}{source}")
            ctx.seeding[m.key] = m.key in broken

    yield k8s.python_command("4. models", start_jobs)


@operation(is_idempotent=True)
def models_seeded(models: list[Model], timeout: float = 3600, poll: float = 2.0, unschedulable_grace: float = 0.0):
    """
    Wait for the seeding Jobs ``seeding_started`` started, and record each finished commit.

    + models: the models (repo, commit, path) to have on the volume
    + timeout: seconds to wait for the Jobs
    + poll: seconds between progress checks
    + unschedulable_grace: seconds a seeding pod may stay unschedulable before the wait fails

    Nothing to wait for (every commit recorded, no Job started by this run) is a no-op. The
    ConfigMap ``qwen3-speech-models`` records each finished commit.
    """
    ctx = context_of(host)
    s, kube = ctx.settings, ctx.kube
    # The record as seeding_started read it in this run: only this operation changes it.
    recorded = ctx.recorded_models or {}
    pending = [m for m in models if recorded.get(m.key) != m.commit or m.key in ctx.seeding]
    if not pending:
        host.noop("models seeded: " + ", ".join(f"{m.repo}@{m.commit[:12]}" for m in models))
        return

    def wait_jobs():
        label = "4. models"
        refs = {m.key: Ref("batch/v1", "Job", job_name(m), s.namespace) for m in pending}
        deadline = time.monotonic() + timeout
        beats = {m.key: Heartbeat(f"Job {refs[m.key].name}", timeout, _say_for(label, m.key), kube.progress_interval)
                 for m in pending}
        unschedulable_since: dict[str, float] = {}
        waiting = {m.key: m for m in pending}
        while waiting:
            for key, m in list(waiting.items()):
                job = kube.get(refs[key])
                if job is None:
                    beats[key].update("its Job is not there yet")
                    continue
                if job_ready(job):
                    logger.info(f"    {host_tag()}{label}: {seed_summary(m, seed_result(kube, job))}")
                    _record(kube, s, m)
                    # Whatever found the damage (a blocked guard, or the last audit), a pod whose guard
                    # failed meanwhile sits in a growing back-off: replace it now the model is whole.
                    _restart_blocked_pods(kube, s.namespace, key)
                    del waiting[key]
                    continue
                failure = job_failed(job) or _unschedulable(kube, job, unschedulable_since, unschedulable_grace)
                if failure:
                    tail = job_log_line(kube, job) or ""
                    host.log_styled(f"{label}: Job {refs[key].name} failed ({failure})"
                                    + (f"; last log line: {tail}" if tail else ""), fg="red", log_func=logger.error)
                    return False
                line = job_log_line(kube, job)
                beats[key].update(_seed_line(line) if line else "the seeding pod has printed nothing yet")
            if waiting and time.monotonic() >= deadline:
                host.log_styled(f"{label}: seeding did not finish within {timeout}s (timeout_seed); the Jobs keep "
                                "running and a rerun picks them up", fg="red", log_func=logger.error)
                return False
            if waiting:
                time.sleep(poll)
        return True

    yield k8s.python_command("4. models", wait_jobs)


def _unschedulable(kube, job: dict, since: dict[str, float], grace: float) -> str | None:
    """Why a seeding pod will not start, once it has stayed unschedulable for `grace` seconds: no
    Karpenter pool makes a node for it unless it tolerates that pool's taints."""
    for pod in kube.list("v1", "Pod", job["metadata"]["namespace"], label_selector=pod_selector(job)):
        view = describe_pod(pod)
        if not view.unschedulable:
            since.pop(view.name, None)
            continue
        if time.monotonic() - since.setdefault(view.name, time.monotonic()) >= grace:
            return (f"{view.fatal}; seed_node_selector and seed_tolerations choose its node: by default any node "
                    "without a taint; give them a node group with room, or gpu_node_selector and gpu_tolerations "
                    "to seed on the GPU node")
    return None


SEED_RESULT = "SEED-RESULT "


def _say_for(label: str, key: str):
    return lambda line: logger.info(f"    {host_tag()}{label}: {key.upper()} {line}")


def _seed_line(line: str) -> str:
    """A seeder log line as progress: without its "[seed] " tag. Its JSON result and its closing
    "complete in" line are not progress: the summary printed when the Job is done says it once, shorter."""
    if line.startswith(SEED_RESULT) or (line.startswith("[seed] ") and "complete in " in line):
        return "finished, reading the result"
    return line.removeprefix("[seed] ")


def seed_result(kube, job: dict) -> dict:
    """The seeder's SEED-RESULT of a finished Job (empty when its log is gone)."""
    for line in reversed(job_log_tail(kube, job, lines=5)):
        if line.startswith(SEED_RESULT):
            try:
                return json.loads(line[len(SEED_RESULT):])
            except ValueError:
                break
    return {}


def seed_summary(m: Model, result: dict) -> str:
    """One human line per seeded model: files, bytes, time, rate, bytes resumed."""
    head = f"{m.key.upper()} @{m.commit[:12]}:"  # the operation's name has the repo
    if not result:
        return f"{head} seeded and verified in {m.path}"
    verified = f"{result.get('files')} files, {_bytes(result.get('total_bytes', 0))} in {m.path} verified"
    if result.get("fast_path"):
        return f"{head} already complete, {verified}"
    copied = int(result.get("copied_bytes") or 0)
    if copied:
        verified += f"; {_bytes(copied)} copied from the GPU node's disk"
    seconds = float(result.get("seconds") or 0)
    downloaded = int(result.get("downloaded_bytes") or 0)
    rate = f" ({_bytes(downloaded / seconds)}/s)" if seconds >= 0.1 else ""
    resumed = int(result.get("resumed_bytes") or 0)  # said only when a run was cut: keeps the line short
    return (f"{head} {verified}; {_bytes(downloaded)} downloaded in {seconds:.1f}s{rate}"
            + (f", {_bytes(resumed)} resumed" if resumed else ""))


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1000
    return f"{count:.2f} GB"


def _restart_blocked_pods(kube, namespace: str, key: str) -> None:
    """Pods whose model guard failed sit in a growing crash back-off; with the model back in
    place, replace them now instead of waiting minutes for their next restart."""
    for pod in kube.list("v1", "Pod", namespace, label_selector=f"app.kubernetes.io/name=qwen3-{key}"):
        if describe_pod(pod).failing_container == "model-guard":
            kube.delete(Ref("v1", "Pod", pod["metadata"]["name"], namespace))
            logger.info(f"    {host_tag()}4. models: restarted pod {pod['metadata']['name']}, blocked by its model guard")


def _wait_deleted(kube, ref: Ref, poll: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while kube.get(ref) is not None and time.monotonic() < deadline:
        time.sleep(poll)


def _record(kube, s, m: Model) -> None:
    """Note the finished commit; the seeding manifest on EFS stays the source of truth for pods."""
    kube.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": RECORD, "namespace": s.namespace, "labels": labels("qwen3-speech-models")},
        "data": {m.key: m.commit, f"{m.key}-repo": m.repo, f"{m.key}-revision": m.revision,
                 f"{m.key}-seeded-at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }, field_manager=f"{s.field_manager}-{m.key}-record")


# ---- the model audit: the guard in audit mode, as a short Job (`status --models`) ----------------

def audit_job(ctx) -> dict:
    s = ctx.settings
    models = list(ctx.models.values())
    commits = {f"qwen3-speech.io/{m.key}-commit": m.commit for m in models}
    return render("qwen3-model-audit-job.yaml", s, job_name=AUDIT_JOB, models=models, commits=commits,
                  image=ctx.seed_image, timeout=max(60, min(s.timeout_seed, 3600)))[0]


def audit_models(ctx, timeout: float = 600, poll: float = 1.0) -> dict[str, dict]:
    """Run the audit Job over the models on EFS; each model's report (see check_model_manifest.py).

    Its one write: the Job (replacing the previous audit's, which the next deploy reads)."""
    kube, s = ctx.kube, ctx.settings
    if kube.get(Ref("v1", "ConfigMap", "qwen3-speech-scripts", s.namespace)) is None:
        raise DeployBlocked(f"models: nothing to audit, the scripts ConfigMap is missing in {s.namespace}; "
                            "deploy first (`pyinfra INVENTORY deploy.py`)")
    if kube.get(Ref("v1", "PersistentVolumeClaim", s.models_pvc, s.namespace)) is None:
        raise DeployBlocked(f"models: nothing to audit, the PVC {s.namespace}/{s.models_pvc} is missing; deploy first")
    manifest = audit_job(ctx)
    ref = Ref.of(manifest)
    if kube.get(ref) is not None:
        kube.delete(ref, propagation="Foreground")
        _wait_deleted(kube, ref, poll)
    kube.request("POST", f"/apis/batch/v1/namespaces/{s.namespace}/jobs", body=manifest)
    deadline = time.monotonic() + timeout
    while True:
        job = kube.get(ref)
        if job is not None and (job_ready(job) or job_failed(job)):
            break
        if time.monotonic() >= deadline:
            raise DeployBlocked(f"models: the audit Job {ref.name} did not finish within {timeout:.0f}s; "
                                f"see `kubectl -n {s.namespace} describe job {ref.name}`")
        time.sleep(poll)
    reports = audit_reports(kube, job)
    if not reports:
        raise DeployBlocked(f"models: the audit Job {ref.name} ended ({job_failed(job) or 'Complete'}) without "
                            f"a report; see `kubectl -n {s.namespace} logs job/{ref.name} --all-containers`")
    return reports


def audit_reports(kube, job: dict) -> dict[str, dict]:
    """The MODEL-AUDIT report of each model in a finished audit Job's pod, by model key."""
    namespace = job["metadata"]["namespace"]
    pods = kube.list("v1", "Pod", namespace, label_selector=pod_selector(job))
    if not pods:
        return {}
    pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    reports = {}
    for container in pod["spec"]["containers"]:
        key = container["name"].removeprefix("audit-")
        log = kube.pod_log(namespace, pod["metadata"]["name"], container=container["name"], tail_lines=5)
        for line in reversed(log.splitlines()):
            if line.startswith(AUDIT_LINE):
                try:
                    reports[key] = json.loads(line[len(AUDIT_LINE):])
                except ValueError:
                    pass
                break
    return reports


def audit_damage(kube, namespace: str, recorded: dict[str, str]) -> dict[str, dict]:
    """Models the last audit found damaged at their recorded commit, after they were last seeded."""
    try:
        job = kube.get(Ref("batch/v1", "Job", AUDIT_JOB, namespace))
    except KubeApiError:
        return {}
    if job is None or not job_ready(job):
        return {}
    finished = (job.get("status") or {}).get("completionTime") or ""
    damaged = {}
    for key, report in audit_reports(kube, job).items():
        if (not report.get("ok") and report.get("commit") == recorded.get(key)
                and finished >= recorded.get(f"{key}-seeded-at", "")):
            damaged[key] = report
    return damaged


def describe_damage(report: dict) -> str:
    """One line: what an audit report found wrong."""
    if report.get("ok"):
        rehashed = len(report.get("rehashed") or [])
        return (f"ok: {report.get('files')} files, {report.get('bytes')} bytes as verified"
                + (f" ({rehashed} re-hashed: stat changed, content intact)" if rehashed else ""))
    parts = [f"manifest: {report['manifest']}"] if report.get("manifest") else []
    for kind in ("missing", "truncated", "corrupt"):
        if report.get(kind):
            parts.append(f"{kind}: {', '.join(report[kind])}")
    return "; ".join(parts) or "; ".join(report.get("problems") or ["damaged"])
