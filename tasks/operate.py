"""Day-2 commands beside the deploy: status, drift check and verify, outside pyinfra's run.

    python -m qwen_speech status inventories/production.py
    python -m qwen_speech drift  inventories/production.py   # exit 0 in sync, 1 drifted, 2 error
    python -m qwen_speech verify inventories/production.py
    python -m qwen_speech status --models inventories/production.py   # also audit the model files
    python -m qwen_speech image-cache build inventories/production.py # a data-volume snapshot of both images

They read the same inventory (group_data/all.py, then the group's file, then the host's data, as
pyinfra merges them), build the same manifests the deploy would apply (each step's `desired`),
and never write: drift asks the API server for server-side dry runs, like `--dry --diff`. The
one exception is `--models`: it runs a short Job (the model guard in audit mode, read-only on
EFS) and keeps it, so the next deploy re-seeds what it found damaged.

They answer in seconds, never sitting out a deploy's timeouts: what is missing is said at once,
a service that is not ready is given OPERATE_WAIT_SECONDS, the ALB is looked up once, and API
errors are retried for at most OPERATE_RETRY_SECONDS. Any error (no sandbox, no inventory file,
an API that does not answer) exits 2, never 1, so CI can tell "drifted" from "could not tell".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from pyinfra.context import ctx_host

from kubeops.changes import plan_all, with_applied_hash
from kubeops.client import KubeApiError, KubeUnreachable
from kubeops.kinds import Ref
from kubeops.waiter import describe_pod, is_ready, node_gpus, pod_selector
from qwen_speech.manifests import moving_tag
from qwen_speech.inventory_file import InventoryNotLoadable, run_file
from qwen_speech.settings import SettingsError, validate

from . import asr, efs_storage, gpu_nodepool, ingress, metrics, models, namespace, preflight, time_slicing, tts, verify
from .connect import open_context
from .context import DeployBlocked, DeployContext

OPERATE_WAIT_SECONDS = 10
OPERATE_RETRY_SECONDS = 10

STEPS: list[tuple[str, Callable[[DeployContext], list[dict]]]] = [
    ("0. GPU NodePool", gpu_nodepool.desired),
    ("1. time-slicing", time_slicing.desired),
    ("2. namespace", namespace.desired),
    ("3. EFS storage", efs_storage.desired),
    ("4. models", models.desired),
    ("5. ASR", asr.desired),
    ("5. ASR metrics", metrics.monitored_desired),
    ("6. TTS", tts.desired),
    ("7. ingress", ingress.desired),
]


def load_inventory(path: str) -> list[tuple[str, dict]]:
    """Hosts of a pyinfra inventory file with their merged data (all < group < host)."""
    inventory = Path(path)
    if not inventory.is_file():
        raise DeployBlocked(f"inventory file {path} does not exist (from {Path.cwd()}); "
                            "give the path of an inventory, e.g. inventories/sandbox.py")
    group_dir = inventory.resolve().parent / "group_data"
    defaults = _public(run_file(group_dir / "all.py")) if (group_dir / "all.py").exists() else {}
    hosts = []
    for group, members in _public(run_file(inventory)).items():
        if not isinstance(members, list):
            continue
        group_file = group_dir / f"{group}.py"
        group_data = _public(run_file(group_file)) if group_file.exists() else {}
        for member in members:
            name, data = member if isinstance(member, tuple) else (member, {})
            hosts.append((name, {**defaults, **group_data, **data}))
    if not hosts:
        raise DeployBlocked(f"{path} defines no hosts (a list of (name, data) tuples)")
    return hosts


def _public(namespace: dict) -> dict:
    return {k: v for k, v in namespace.items() if not k.startswith("_") and not callable(v)
            and not isinstance(v, type(sys))}


def context_for(data: dict, out=print) -> DeployContext:
    ctx = open_context(validate(data))
    ctx.kube.retry.budget_seconds = min(ctx.kube.retry.budget_seconds, OPERATE_RETRY_SECONDS)
    preflight.check(ctx)
    for line in models.resolve_models(ctx):
        out(line)
    return ctx


def drift(ctx: DeployContext, out=print, audit: bool = False) -> int:
    """Print the per-object diff of every object that differs; return how many do (with audit,
    damaged model files on EFS count too)."""
    document = drift_document(ctx, audit)
    for model in document["models"]:
        out(f"4. models: {model['repo']} {model['problem']}")
    for obj in document["objects"]:
        out(f"{obj['step']}: {obj['kind']} {_where(obj)} would be {obj['action']}d")
        for line in obj["diff"]:
            out("    " + line)
    return document["drifted"]


def drift_document(ctx: DeployContext, audit: bool = False) -> dict:
    """What differs from the inventory, as one JSON document (schema: files/schemas/drift.schema.json);
    Secret values appear only as digests (kubeops.changes.mask_secrets)."""
    drifted_models = []
    recorded = models.recorded_commits(ctx.kube, ctx.settings.namespace)
    for model in ctx.models.values():
        if recorded.get(model.key) != model.commit:
            drifted_models.append({"key": model.key, "repo": model.repo, "commit": model.commit,
                                   "seeded": recorded.get(model.key),
                                   "problem": f"wanted at {model.commit}, seeded: {recorded.get(model.key) or 'nothing'}"})
    if audit:
        for key, report in models.audit_models(ctx).items():
            if not report.get("ok"):
                m = ctx.models[key]
                drifted_models.append({"key": key, "repo": m.repo, "commit": m.commit, "seeded": recorded.get(key),
                                       "problem": f"files on EFS damaged: {models.describe_damage(report)}"})
    objects = []
    for step, desired in STEPS:
        stamped = [with_applied_hash(manifest) for manifest in desired(ctx)]
        for plan in plan_all(ctx.kube, stamped, field_manager=ctx.settings.field_manager):
            if plan.changes:
                objects.append({**_ref_fields(step, plan.ref), "action": plan.action, "diff": list(plan.diff)})
    return {"drifted": len(drifted_models) + len(objects), "models": drifted_models, "objects": objects}


def _ref_fields(step: str, ref: Ref) -> dict:
    return {"step": step, "apiVersion": ref.api_version, "kind": ref.kind, "namespace": ref.namespace,
            "name": ref.name}


def _where(obj: dict) -> str:
    return f"{obj['namespace']}/{obj['name']}" if obj.get("namespace") else obj["name"]


def status(ctx: DeployContext, out=print, audit: bool = False) -> bool:
    """Per step, each object and its health; then seeded models (with audit: their files on EFS,
    checked by a short Job), endpoints, GPU nodes and pods."""
    document = status_document(ctx, audit)
    step = None
    for obj in document["objects"]:
        if obj["step"] != step:
            step = obj["step"]
            out(step)
        mark = {"ok": "ok", "missing": "MISSING", "not-ready": "NOT READY"}[obj["health"]]
        out(f"    {obj['kind']} {_where(obj)}: {mark}{(' - ' + obj['detail']) if obj.get('detail') else ''}")
    out("models")
    for m in document["models"]:
        mark = "ok" if m["seeded"] == m["commit"] else "NOT SEEDED at the wanted commit"
        out(f"    {m['repo']} ({m['revision']} = {m['commit'][:12]}): seeded {m['seeded'] or 'nothing'} - {mark}")
        if "files" in m:
            out(f"    {m['repo']} files on EFS: {'ok' if m['files']['ok'] else 'DAMAGED'} - {m['files']['summary']}")
            for problem in m["files"]["problems"]:
                out(f"        {problem}")
    nodes = document["nodes"]
    out("GPU nodes" if nodes else f"GPU nodes: none matches {document['gpu_node_selector']} "
        "(Karpenter starts one for the ASR pod)")
    for node in nodes:
        out(f"    {node['name']}: allocatable nvidia.com/gpu {node['gpus']}, pods: {', '.join(node['pods']) or 'none'}")
    out("serving pods: the signals that say \"add a node\"")
    for entry in document["serving"]:
        out("    " + metrics.describe_signals(entry))
    out("endpoints")
    endpoints = document["endpoints"]
    for line in endpoints["lines"] + endpoints["warnings"] + endpoints["problems"]:
        out("    " + line)
    return document["healthy"]


def status_document(ctx: DeployContext, audit: bool = False) -> dict:
    """Objects and their health, models, GPU nodes and endpoints as one JSON document
    (schema: files/schemas/status.schema.json)."""
    kube, s = ctx.kube, ctx.settings
    objects = []
    for step, desired in STEPS:
        for manifest in desired(ctx):
            ref = Ref.of(manifest)
            live = kube.get(ref)
            entry = {**_ref_fields(step, ref), "health": "missing", "detail": ""}
            if live is not None:
                entry["health"] = "ok" if is_ready(live) else "not-ready"
                if entry["health"] != "ok" and pod_selector(live):
                    pods = kube.list("v1", "Pod", ref.namespace, label_selector=pod_selector(live))
                    entry["detail"] = "; ".join(describe_pod(p).summary for p in pods) or "no pods"
                if ref.kind in ("Deployment", "DaemonSet"):  # the full image reference, digest and all
                    entry["images"] = [c.get("image") for c in live["spec"]["template"]["spec"].get("containers", [])]
            objects.append(entry)
    recorded = models.recorded_commits(kube, s.namespace)
    model_entries = {m.key: {"key": m.key, "repo": m.repo, "revision": m.revision, "commit": m.commit,
                             "path": m.path, "seeded": recorded.get(m.key),
                             "seeded_at": recorded.get(f"{m.key}-seeded-at")} for m in ctx.models.values()}
    if audit:
        for key, report in models.audit_models(ctx).items():
            model_entries[key]["files"] = {"ok": bool(report.get("ok")), "summary": models.describe_damage(report),
                                           "problems": list(report.get("problems") or [])}
    selector = ",".join(f"{k}={v}" for k, v in sorted(s.gpu_node_selector.items()))
    pods = kube.list("v1", "Pod", s.namespace, label_selector="app.kubernetes.io/part-of=qwen3-speech")
    nodes = [{"name": node["metadata"]["name"], "gpus": node_gpus(node),
              "pods": [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == node["metadata"]["name"]
                       and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]}
             for node in kube.list("v1", "Node", label_selector=selector)]
    report = verify.Report()
    verify.check_endpoints(ctx, report, alb_wait=0)
    healthy = (all(o["health"] == "ok" for o in objects)
               and all(m["seeded"] == m["commit"] and m.get("files", {"ok": True})["ok"] for m in model_entries.values()))
    return {"healthy": healthy, "objects": objects, "models": list(model_entries.values()),
            "gpu_node_selector": selector, "nodes": nodes, "serving": metrics.serving_signals(kube, s, pods),
            "endpoints": {"ok": report.ok, "lines": report.lines, "warnings": report.warnings,
                          "problems": report.problems}}


def build_image_cache(data: dict, out=print) -> str:
    """`image-cache build`: a Bottlerocket data-volume snapshot holding both images as the deploy pins them.

    Needs AWS only (no cluster API): the images are resolved as preflight resolves them, and each
    must be pinned by digest, or the pods would pull their moving tag anyway.
    """
    from qwen_speech import aws, image_cache

    from .connect import aws_session_for

    s = validate(data)
    if not s.eks_cluster_name or not s.aws_region:
        raise DeployBlocked(f"eks_cluster_name = {s.eks_cluster_name!r}, aws_region = {s.aws_region!r}: image-cache "
                            "build launches its instance in the EKS cluster's VPC and region; set both")
    ctx = DeployContext(settings=s, kube=None, aws=aws_session_for(s))
    problems = preflight.resolve_images(ctx)
    images = {"asr": ctx.asr_image, "tts": ctx.tts_image}
    problems += [f"{key}_image {image!r} is not pinned by digest: the pods' pull policy would be Always and pull it "
                 "on every node anyway; pin it (asr_ecr_repository, or <image>@sha256:<digest>)"
                 for key, image in images.items() if image and moving_tag(image)]
    if problems:
        raise DeployBlocked("image-cache build: nothing was launched:\n  - " + "\n  - ".join(problems))
    models = cached_models(s, out)
    try:
        snapshot_id = image_cache.Builder(ctx.aws, s.eks_cluster_name, images, models=models, hf_endpoint=s.hf_endpoint,
                                          say=out, poll=min(5.0, s.poll_seconds * 5)).build()
    except aws.AwsProblem as err:
        raise DeployBlocked(f"image-cache build: {err}") from None
    held = [images[k] for k in sorted(images)] + [f"{repo}@{commit}" for repo, commit in models.values()]
    out(f"snapshot {snapshot_id} holds {', '.join(held)}")
    out(f"set in the inventory: manage_gpu_nodepool = True, gpu_image_cache_snapshot_id = {snapshot_id!r}")
    return snapshot_id


def cached_models(s, out=print) -> dict[str, tuple[str, str]]:
    """The models `image-cache build` puts on the data volume: each revision resolved on the Hub to
    its commit, as seeding resolves it. None with hf_token_secret: the build instance would need the
    token in an SSM command, whose parameters SSM keeps in its history."""
    if s.hf_token_secret:
        out(f"models: not in the snapshot: hf_token_secret = {s.hf_token_secret!r} says the Hub needs a token, and "
            "SSM keeps a command's parameters; deploys download them from the Hub")
        return {}
    return {key: (repo, models.resolve_commit(repo, revision, s.hf_endpoint))
            for key, repo, revision in (("asr", s.asr_model_repo, s.asr_model_revision),
                                        ("tts", s.tts_model_repo, s.tts_model_revision))}


def _overrides(pairs: list[str]) -> dict:
    """`--data key=value` read as pyinfra reads it: true/false, integers, JSON, else the string.

    (Not imported from pyinfra_cli: importing it monkey-patches ssl with gevent, which breaks
    the Kubernetes client's TLS once ssl is loaded.)"""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise DeployBlocked(f"--data {pair!r}: expected key=value")
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
            continue
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
    return out


SCHEMAS = Path(__file__).resolve().parent.parent / "files" / "schemas"
JSON_FORMAT = 1  # bumped only when a field changes meaning or goes away; new fields may appear


def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qwen_speech", description=__doc__.strip().splitlines()[0],
                                     epilog="`python -m qwen_speech COMMAND --help` for a command's options")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{status,drift,verify,image-cache}")
    for name, text, exits in (
            ("status", "per step each object and its health, models, GPU nodes, endpoints", "0 healthy, 1 not, 2 error"),
            ("drift", "what differs from the inventory, as server-side dry runs", "0 in sync, 1 drifted, 2 error"),
            ("verify", "health and the speech round trip, alone", "0 passed, 1 failed, 2 error")):
        sub = commands.add_parser(name, help=text, description=f"{text}. Exit codes: {exits}.")
        sub.add_argument("inventory", help="a pyinfra inventory file, e.g. inventories/sandbox.py")
        sub.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                         help="override an inventory value, as with pyinfra (repeatable)")
        if name != "verify":
            sub.add_argument("--models", action="store_true",
                             help="also audit the model files on EFS (a short Job runs the model guard)")
            sub.add_argument("--json", action="store_true",
                             help=f"one JSON document on stdout (schema files/schemas/{name}.schema.json); "
                                  "everything else goes to stderr")
    text = "an EBS snapshot of a Bottlerocket data volume holding both images, for manage_gpu_nodepool"
    sub = commands.add_parser("image-cache", help=text, description=f"{text}. Exit codes: 0 built, 2 error.")
    sub.add_argument("action", choices=["build"], help="build: launch, pull both pinned images, snapshot, terminate")
    sub.add_argument("inventory", help="a pyinfra inventory file, e.g. inventories/production.py")
    sub.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                     help="override an inventory value, as with pyinfra (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command
    as_json = getattr(args, "json", False)
    say = (lambda line: print(line, file=sys.stderr)) if as_json else print
    documents = []
    worst = 0
    try:
        overrides = _overrides(args.data)
        for name, data in load_inventory(args.inventory):
            data = {**data, **overrides}
            say(f"--> {name} ({data.get('environment', '?')})")
            # The tasks' log lines name pyinfra's current host (`[{host.name}] ...`); outside a pyinfra
            # run there is none, so this inventory host stands in for it.
            ctx_host.set(SimpleNamespace(name=name))
            if command == "image-cache":
                build_image_cache(data, out=say)
                continue
            ctx = context_for(data, out=say)
            if command == "drift" and as_json:
                documents.append({"host": name, "environment": data.get("environment"),
                                  **drift_document(ctx, audit=args.models)})
                worst = max(worst, 1 if documents[-1]["drifted"] else 0)
            elif command == "drift":
                count = drift(ctx, audit=args.models)
                print(f"{count} object(s) differ from the inventory" if count else "in sync with the inventory")
                worst = max(worst, 1 if count else 0)
            elif command == "status" and as_json:
                documents.append({"host": name, "environment": data.get("environment"),
                                  **status_document(ctx, audit=args.models)})
                worst = max(worst, 0 if documents[-1]["healthy"] else 1)
            elif command == "status":
                worst = max(worst, 0 if status(ctx, audit=args.models) else 1)
            else:
                report = verify.run_checks(ctx, wait=OPERATE_WAIT_SECONDS, alb_wait=0)
                for line in report.lines + [f"warning: {w}" for w in report.warnings] + [f"FAILED: {p}" for p in report.problems]:
                    print("    " + line)
                worst = max(worst, 0 if report.ok else 1)
    except (DeployBlocked, InventoryNotLoadable, SettingsError, KubeApiError, KubeUnreachable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # an inventory that stops itself: the sandbox's when no sandbox runs
        if isinstance(err.code, int) or err.code is None:
            raise
        print(f"error: {err.code}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else is an error too, never "drifted" (1)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"format": JSON_FORMAT, "command": command, "hosts": documents}, indent=2))
    return worst
