"""Day-2 commands beside the deploy: status, drift check and verify, outside pyinfra's run.

    python -m qwen_speech status inventories/production.py
    python -m qwen_speech drift  inventories/production.py   # exit 0 in sync, 1 drifted, 2 error
    python -m qwen_speech verify inventories/production.py
    python -m qwen_speech status --models inventories/production.py   # also audit the model files

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
from typing import Callable

from kubeops.changes import plan_apply, with_applied_hash
from kubeops.client import KubeApiError, KubeUnreachable
from kubeops.kinds import Ref
from kubeops.waiter import describe_pod, is_ready, node_gpus, pod_selector
from qwen_speech.inventory_file import InventoryNotLoadable, run_file
from qwen_speech.settings import SettingsError, validate

from . import asr, efs_storage, ingress, models, namespace, preflight, time_slicing, tts, verify
from .connect import open_context
from .context import DeployBlocked, DeployContext

OPERATE_WAIT_SECONDS = 10
OPERATE_RETRY_SECONDS = 10

STEPS: list[tuple[str, Callable[[DeployContext], list[dict]]]] = [
    ("1. time-slicing", time_slicing.desired),
    ("2. namespace", namespace.desired),
    ("3. EFS storage", efs_storage.desired),
    ("4. models", models.desired),
    ("5. ASR", asr.desired),
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
    drifted = 0
    recorded = models.recorded_commits(ctx.kube, ctx.settings.namespace)
    for model in ctx.models.values():
        if recorded.get(model.key) != model.commit:
            drifted += 1
            out(f"4. models: {model.repo} wanted at {model.commit}, seeded: {recorded.get(model.key) or 'nothing'}")
    if audit:
        for key, report in models.audit_models(ctx).items():
            if not report.get("ok"):
                drifted += 1
                out(f"4. models: {ctx.models[key].repo} files on EFS damaged: {models.describe_damage(report)}")
    for step, desired in STEPS:
        for manifest in desired(ctx):
            plan = plan_apply(ctx.kube, with_applied_hash(manifest), field_manager=ctx.settings.field_manager)
            if plan.changes:
                drifted += 1
                out(f"{step}: {plan.ref} would be {plan.action}d")
                for line in plan.diff:
                    out("    " + line)
    return drifted


def status(ctx: DeployContext, out=print, audit: bool = False) -> bool:
    """Per step, each object and its health; then seeded models (with audit: their files on EFS,
    checked by a short Job), endpoints, GPU nodes and pods."""
    kube, s = ctx.kube, ctx.settings
    healthy = True
    for step, desired in STEPS:
        out(step)
        for manifest in desired(ctx):
            ref = Ref.of(manifest)
            live = kube.get(ref)
            if live is None:
                healthy = False
                out(f"    {ref}: MISSING")
                continue
            ok = is_ready(live)
            healthy &= ok
            detail = ""
            if not ok and pod_selector(live):
                pods = kube.list("v1", "Pod", ref.namespace, label_selector=pod_selector(live))
                detail = "; ".join(describe_pod(p).summary for p in pods) or "no pods"
            out(f"    {ref}: {'ok' if ok else 'NOT READY'}{(' - ' + detail) if detail else ''}")
    recorded = models.recorded_commits(kube, s.namespace)
    out("models")
    for model in ctx.models.values():
        seeded = recorded.get(model.key)
        mark = "ok" if seeded == model.commit else "NOT SEEDED at the wanted commit"
        out(f"    {model.repo} ({model.revision} = {model.commit[:12]}): seeded {seeded or 'nothing'} - {mark}")
        healthy &= seeded == model.commit
    if audit:
        for key, report in models.audit_models(ctx).items():
            healthy &= bool(report.get("ok"))
            out(f"    {ctx.models[key].repo} files on EFS: {'ok' if report.get('ok') else 'DAMAGED'} - "
                + models.describe_damage(report))
            for problem in report.get("problems") or []:
                out(f"        {problem}")
    selector = ",".join(f"{k}={v}" for k, v in sorted(s.gpu_node_selector.items()))
    pods = kube.list("v1", "Pod", s.namespace, label_selector="app.kubernetes.io/part-of=qwen3-speech")
    gpu_nodes = kube.list("v1", "Node", label_selector=selector)
    out("GPU nodes" if gpu_nodes else f"GPU nodes: none matches {selector} (Karpenter starts one for the ASR pod)")
    for node in gpu_nodes:
        name = node["metadata"]["name"]
        on_it = [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == name
                 and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        out(f"    {name}: allocatable nvidia.com/gpu {node_gpus(node)}, pods: {', '.join(on_it) or 'none'}")
    out("endpoints")
    report = verify.Report()
    verify.check_endpoints(ctx, report, alb_wait=0)
    for line in report.lines + report.warnings + report.problems:
        out("    " + line)
    return healthy


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qwen_speech", description=__doc__.strip().splitlines()[0])
    parser.add_argument("command", choices=("status", "drift", "verify"))
    parser.add_argument("inventory")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help="override an inventory value, as with pyinfra")
    parser.add_argument("--models", action="store_true",
                        help="status, drift: also audit the model files on EFS (a short Job runs the model guard)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command
    worst = 0
    try:
        overrides = _overrides(args.data)
        for name, data in load_inventory(args.inventory):
            data = {**data, **overrides}
            print(f"--> {name} ({data.get('environment', '?')})")
            ctx = context_for(data)
            if command == "drift":
                count = drift(ctx, audit=args.models)
                print(f"{count} object(s) differ from the inventory" if count else "in sync with the inventory")
                worst = max(worst, 1 if count else 0)
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
    return worst
