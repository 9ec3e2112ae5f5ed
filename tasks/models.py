"""Step 4 (模型下载): both models seeded into EFS once, at pinned commits, verified file by file.

The guide has each pod's init container download its model and only check that files exist.
Here the revision (branch, tag or commit) is resolved to a commit on the operator's machine, a
Job per model runs files/seed_models.py in the cluster (resumable, verified against the Hub's
sizes and hashes, completion manifest written last), and the result is recorded in the
ConfigMap `qwen3-speech-models`. A rerun that finds the wanted commits recorded, and no pod
whose model guard fails, does nothing at all: no Job, no write.
"""

from __future__ import annotations

import base64
import os
import time
from datetime import datetime, timezone

import click
from pyinfra import host, logger, state
from pyinfra.api import deploy, operation

from kubeops import k8s
from kubeops.client import KubeApiError
from kubeops.kinds import Ref
from kubeops.waiter import describe_pod, job_failed, job_log_line, job_ready
from qwen_speech.manifests import labels, render, script

from .context import DeployBlocked, Model, context_of

RECORD = "qwen3-speech-models"
SCRIPTS = ("seed_models.py", "check_model_manifest.py", "tts_health_check.py")


def resolve_commit(repo: str, revision: str, endpoint: str | None) -> str:
    """The commit a branch or tag points at now, asked of the Hub from this machine."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = endpoint or "https://huggingface.co"
    try:
        return HfApi(endpoint=endpoint).model_info(repo, revision=revision).sha
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
    except OSError as err:
        raise DeployBlocked(f"4. models: could not reach the Hub at {where}: {err}") from None


def job_name(model: Model) -> str:
    return f"qwen3-seed-{model.key}-{model.commit[:12]}"


def resolve_models(ctx) -> None:
    s = ctx.settings
    for key, repo, revision, path in (("asr", s.asr_model_repo, s.asr_model_revision, s.asr_model_path),
                                      ("tts", s.tts_model_repo, s.tts_model_revision, s.tts_model_path)):
        ctx.models[key] = Model(key, repo, revision, resolve_commit(repo, revision, s.hf_endpoint), path)


def desired(ctx) -> list[dict]:
    """The scripts ConfigMap, and the token Secret when this machine has HF_TOKEN to put in it."""
    s = ctx.settings
    manifests = render("qwen3-speech-scripts.yaml", s, scripts={name: script(name) for name in SCRIPTS})
    token = os.environ.get("HF_TOKEN")
    if s.hf_token_secret and token:
        manifests.append({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": s.hf_token_secret, "namespace": s.namespace, "labels": labels("qwen3-speech-hf-token")},
            "data": {"HF_TOKEN": base64.b64encode(token.encode()).decode()},
        })
    elif s.hf_token_secret and ctx.kube.get(Ref("v1", "Secret", s.hf_token_secret, s.namespace)) is None:
        raise DeployBlocked(f"4. models: hf_token_secret = {s.hf_token_secret!r} but there is no such Secret in "
                            f"{s.namespace} and HF_TOKEN is not set here; export HF_TOKEN so the playbook creates it")
    return manifests


@deploy("4. Models")
def seed():
    ctx = context_of(host)
    s = ctx.settings
    resolve_models(ctx)
    manifests = desired(ctx)
    k8s.applied(
        name="4. Seeding scripts" + (" + HF token Secret" if len(manifests) > 1 else ""),
        manifests=manifests,
        field_manager=s.field_manager,
        label="4. models",
    )
    models_seeded(
        name="4. Seed " + " + ".join(f"{m.repo}@{m.commit[:12]}" for m in ctx.models.values()),
        models=list(ctx.models.values()),
        timeout=s.timeout_seed,
        poll=s.poll_seconds,
    )


def recorded_commits(kube, namespace: str) -> dict[str, str]:
    record = kube.get(Ref("v1", "ConfigMap", RECORD, namespace))
    return dict((record or {}).get("data") or {})


def guard_failures(kube, namespace: str) -> set[str]:
    """Models whose pods are blocked by the model guard: their data on EFS is missing or stale."""
    failing: set[str] = set()
    try:
        pods = kube.list("v1", "Pod", namespace, label_selector="app.kubernetes.io/part-of=qwen3-speech")
    except KubeApiError:
        return failing
    for pod in pods:
        view = describe_pod(pod)
        if view.failing_container == "model-guard":
            failing.add(pod["metadata"]["labels"].get("app.kubernetes.io/name", "").replace("qwen3-", ""))
    return failing


@operation(is_idempotent=True)
def models_seeded(models: list[Model], timeout: float = 3600, poll: float = 2.0):
    """
    Seed models into the shared volume with one Job per model and commit, unless already recorded.

    + models: the models (repo, commit, path) to have on the volume
    + timeout: seconds to wait for the Jobs
    + poll: seconds between progress checks

    A Job that already exists for the same commit is reused when it completed, replaced when it
    failed; the ConfigMap ``qwen3-speech-models`` records each finished commit.
    """
    ctx = context_of(host)
    s, kube = ctx.settings, ctx.kube
    try:
        recorded = recorded_commits(kube, s.namespace)
    except k8s.API_ERRORS as err:
        yield from k8s.failed("4. models", err)
        return
    wanted = [m for m in models if recorded.get(m.key) != m.commit]
    broken: set[str] = set()
    if not wanted:
        broken = guard_failures(kube, s.namespace)
        wanted = [m for m in models if m.key in broken]
        for m in wanted:
            logger.warning(f"    [{host.name}] 4. models: the {m.key.upper()} pod's model guard fails: "
                           f"{m.path} on EFS is missing or incomplete; it will be seeded again")
    if not wanted:
        host.noop("models already seeded: " + ", ".join(f"{m.repo}@{m.commit[:12]}" for m in models))
        return
    if state.config.DIFF and not (state.is_executing and state.check_for_changes):
        for m in wanted:
            before = recorded.get(m.key)
            logger.info(f"    Will seed {click.style(m.repo, bold=True)} into {m.path}: "
                        + click.style(f"- {before or '(nothing recorded)'}", fg="red") + " "
                        + click.style(f"+ {m.commit} ({m.revision})", fg="green"))
    seed_image = s.seed_image or s.asr_image

    def run_jobs():
        label = "4. models"
        jobs = {}
        for m in wanted:
            manifest = render("qwen3-model-seed-job.yaml", s, job_name=job_name(m), model=m, seed_image=seed_image)[0]
            ref = Ref.of(manifest)
            live = kube.get(ref)
            if live is not None:
                # A Job's pod template cannot change; a finished one is replaced so it runs again.
                kube.delete(ref, propagation="Foreground")
                _wait_deleted(kube, ref, poll)
            # Server-side apply, not POST: if the answer is lost and the request retried, the retry
            # finds the Job it made and changes nothing (a POST would get 409 AlreadyExists).
            kube.apply(manifest, field_manager=s.field_manager)
            logger.info(f"    [{host.name}] {label}: created Job {ref.name} for {m.repo}@{m.commit[:12]}")
            jobs[m.key] = (m, ref)
        deadline = time.monotonic() + timeout
        last_lines: dict[str, str] = {}
        pending = dict(jobs)
        while pending:
            for key, (m, ref) in list(pending.items()):
                job = kube.get(ref)
                if job is None:
                    continue
                if job_ready(job):
                    logger.info(f"    [{host.name}] {label}: {m.repo}@{m.commit[:12]} seeded and verified in {m.path}")
                    _record(kube, s, m)
                    if key in broken:
                        _restart_blocked_pods(kube, s.namespace, key)
                    del pending[key]
                    continue
                failure = job_failed(job)
                if failure:
                    tail = job_log_line(kube, job) or ""
                    host.log_styled(f"{label}: Job {ref.name} failed ({failure}); last log line: {tail}",
                                    fg="red", log_func=logger.error)
                    return False
                line = job_log_line(kube, job)
                if line and line != last_lines.get(key):
                    logger.info(f"    [{host.name}] {label}: {m.key.upper()} {line}")
                    last_lines[key] = line
            if pending and time.monotonic() >= deadline:
                host.log_styled(f"{label}: seeding did not finish within {timeout}s (timeout_seed); the Jobs keep "
                                "running and a rerun picks them up", fg="red", log_func=logger.error)
                return False
            if pending:
                time.sleep(poll)
        return True

    yield k8s.python_command("4. models", run_jobs)


def _restart_blocked_pods(kube, namespace: str, key: str) -> None:
    """Pods whose model guard failed sit in a growing crash back-off; with the model back in
    place, replace them now instead of waiting minutes for their next restart."""
    for pod in kube.list("v1", "Pod", namespace, label_selector=f"app.kubernetes.io/name=qwen3-{key}"):
        if describe_pod(pod).failing_container == "model-guard":
            kube.delete(Ref("v1", "Pod", pod["metadata"]["name"], namespace))
            logger.info(f"    [{host.name}] 4. models: restarted pod {pod['metadata']['name']}, blocked by its model guard")


def _wait_deleted(kube, ref: Ref, poll: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while kube.get(ref) is not None and time.monotonic() < deadline:
        time.sleep(poll)


def _record(kube, s, m: Model) -> None:
    """Note the finished commit; the seeding manifest on EFS stays the source of truth for pods."""
    kube.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": RECORD, "namespace": s.namespace, "labels": labels("qwen3-speech-models")},
        "data": {m.key: m.commit, f"{m.key}-repo": m.repo,
                 f"{m.key}-seeded-at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }, field_manager=f"{s.field_manager}-{m.key}-record")
