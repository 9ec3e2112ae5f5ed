"""`python -m sandbox up|down|status|fault|serve`: run the simulated EKS account in the background.

    python -m sandbox up [--dir .sandbox] [--fast] [--without gpu-node ...]   # start, wait until ready
    python -m sandbox up --time-scale 100                                   # real-world timings, 100x faster
    python -m sandbox up --device-plugin helm|gpu-operator|bottlerocket       # ... installed another way
    python -m sandbox up --with prometheus-operator                          # ... serving ServiceMonitor/PodMonitor
    source .sandbox/env                                                     # KUBECONFIG, AWS_*, HF_ENDPOINT
    python -m sandbox status                                                # what runs, object counts
    python -m sandbox fault api-errors codes='[503,429]' count=4            # inject a fault
    python -m sandbox fault api-errors rate=0.1 codes=[500,503,429] seed=7  # ... at a rate, until `fault clear`
    python -m sandbox fault api-drop rate=0.1 after=true                    # lose answers after the work is done
    python -m sandbox token --group qwen3-speech-deployers --user ci --kubeconfig ci.kubeconfig  # a non-admin token
    python -m sandbox down                                                  # stop it; the next up starts clean

`serve` runs the sandbox in the foreground (what `up` starts detached, logging to ROOT/server.log).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .control import SandboxControl, SandboxNotRunning
from .runtime import WITH, WITHOUT, Sandbox, SandboxOptions, process_start_ticks

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UP_TIMEOUT_SECONDS = 120
DOWN_TIMEOUT_SECONDS = 15


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def _is_sandbox_process(pid: int, started: int | None = None) -> bool:
    """Guard against a recycled pid: the process started when the sandbox's state says (`started`,
    clock ticks since boot: a sandbox forked by the tests' fork server has that server's command
    line), else it must be a `sandbox serve`."""
    if started is not None:
        now = process_start_ticks(pid)
        if now is not None:
            return now == started
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)  # no /proc (macOS): trust the pid
    return b"sandbox" in cmdline and b"serve" in cmdline


def _running_state(root: Path) -> dict | None:
    """state.json of a live sandbox for `root`, or None (a stale state.json is removed)."""
    path = root / "state.json"
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = state.get("pid")
    if isinstance(pid, int) and _pid_alive(pid) and _is_sandbox_process(pid, state.get("pid_start_ticks")):
        return state
    path.unlink(missing_ok=True)
    return None


def _options(args: argparse.Namespace) -> SandboxOptions:
    values = json.loads(args.options_json) if getattr(args, "options_json", None) else {}
    options = SandboxOptions.from_dict(values)
    if args.fast:
        options.fast = True
    if getattr(args, "time_scale", None) is not None:
        options.time_scale = args.time_scale
    if getattr(args, "device_plugin", None):
        options.device_plugin_setup = args.device_plugin
    for name in getattr(args, "with_addons", None) or []:
        setattr(options, WITH[name], True)
    return options.without(args.without or [])


def _options_differ(asked: SandboxOptions, running: dict) -> list[str]:
    """'name: running X, asked Y' for each option asked for (not left at its default) that differs."""
    default = dataclasses.asdict(SandboxOptions())
    return [f"{name} runs {running.get(name)!r}, asked {value!r}"
            for name, value in dataclasses.asdict(asked).items()
            if value != default.get(name) and value != running.get(name, default.get(name))]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


# -- commands ------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    running = _running_state(root)
    if running and running.get("pid") != os.getpid():
        print(f"a sandbox already runs for {root} (pid {running['pid']}); stop it with "
              f"`python -m sandbox down --dir {args.dir}`", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sandbox = Sandbox(root, _options(args))
    try:
        sandbox.start()
        while not stop.wait(0.1):
            pass
    finally:
        logging.getLogger("sandbox").info("stopping")
        sandbox.stop()
    # Everything is stopped and flushed; skip tearing down moto's many modules (about a second).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    running = _running_state(root)
    try:
        options = _options(args)  # refuse bad --without names and options before starting anything
    except ValueError as err:
        print(f"python -m sandbox up: {err}", file=sys.stderr)
        return 2
    if running:
        # Like `minikube start` on a cluster made with other flags, the running sandbox is not changed
        # silently; unlike it, asking for other options is an error, so a script expecting --fast
        # does not go on with a slow sandbox. Only options asked for (not defaults) count.
        differ = _options_differ(options, running.get("options") or {})
        if differ:
            print(f"The sandbox for {args.dir} runs (pid {running['pid']}) with other options: "
                  f"{'; '.join(differ)}.\n  Restart it with them: python -m sandbox down --dir {args.dir} && "
                  f"python -m sandbox {' '.join(sys.argv[1:]) or 'up'}", file=sys.stderr)
            return 1
        print(f"The sandbox for {args.dir} already runs (pid {running['pid']}, API {running['kube_url']}).")
        print(f"  source {args.dir}/env")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    command = [sys.executable, "-m", "sandbox", "serve", "--dir", str(root), "--options-json", options.to_json()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    began = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                   start_new_session=True, cwd=str(PROJECT_ROOT))
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = _running_state(root)
        if state and state.get("pid") == process.pid and state.get("ready"):
            _print_endpoints(args.dir, state, time.monotonic() - began)
            return 0
        if process.poll() is not None:
            print(f"The sandbox did not start (exit code {process.returncode}). Last lines of {log_path}:\n"
                  f"{_log_tail(log_path)}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    process.terminate()
    print(f"The sandbox did not become ready within {UP_TIMEOUT_SECONDS}s; stopped it. Last lines of {log_path}:\n"
          f"{_log_tail(log_path)}", file=sys.stderr)
    return 1


def _print_endpoints(dir_arg: str, state: dict, seconds: float) -> None:
    print(f"The sandbox runs (pid {state['pid']}, ready in {seconds:.1f}s).")
    print(f"  Kubernetes API  {state['kube_url']}   kubeconfig {state['kubeconfig']}")
    if state.get("aws_endpoint_url"):
        print(f"  AWS (moto)      {state['aws_endpoint_url']}   region {state['region']}, account {state['account_id']}")
    if state.get("hub_url"):
        print(f"  Hugging Face    {state['hub_url']}")
    print(f"  audit log       {state['audit_log']}")
    print("Use it from a shell with:")
    print(f"  source {dir_arg}/env")


def cmd_down(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    state = _running_state(root)
    if state is None:
        print(f"No sandbox runs for {args.dir}.")
        return 0
    pid = state["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT_SECONDS
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
        try:  # reap it if it is our child (it is not when `up` ran in another shell)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        print(f"The sandbox (pid {pid}) did not stop within {DOWN_TIMEOUT_SECONDS}s; killed it.")
    (root / "state.json").unlink(missing_ok=True)
    kept = ""
    if args.keep_hub_revisions:
        kept = "; the Hub's injected revisions are kept"
    else:  # the next `up` starts from the generated commits (the blob cache stays: no regeneration)
        (root / "hub" / "state.json").unlink(missing_ok=True)
    print(f"Stopped the sandbox for {args.dir} (pid {pid}){kept}.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    state = _running_state(root)
    if state is None:
        print(f"No sandbox runs for {args.dir}. Start one with `python -m sandbox up --dir {args.dir}`.")
        return 3
    print(f"The sandbox for {args.dir} runs: pid {state['pid']}, alive, started {state['started_at']}")
    scale = (state.get("options") or {}).get("time_scale")
    if scale:
        print(f"  time scale      {scale:g}: real-world durations (sandbox/cluster/profile.py), {scale:g} times faster")
    print(f"  Kubernetes API  {state['kube_url']}")
    print(f"  AWS (moto)      {state.get('aws_endpoint_url') or '-'}")
    print(f"  Hugging Face    {state.get('hub_url') or '-'}")
    try:
        status = SandboxControl(root).status()
    except (RuntimeError, OSError) as err:
        print(f"  (the API server did not answer: {err})")
        return 1
    print("  objects:")
    for key, count in sorted(status["objects"].items()):
        print(f"    {key:40} {count}")
    armed = {k: v for k, v in status["api_faults"].items() if v.get("left") or v.get("rate")}
    print(f"  armed API faults: {json.dumps(armed) if armed else 'none'}")
    for node, gpu in sorted((status.get("gpu_memory") or {}).items()):
        held = ", ".join(f"{who} {gib:.2f}" for who, gib in sorted(gpu["used_gib"].items())) or "nothing"
        print(f"  GPU memory on {node}: {gpu['free_gib']:.2f} of {gpu['total_gib']:.2f} GiB free; GiB held: {held}")
    for group, target_groups in sorted((status.get("alb_targets") or {}).items()):
        for service, targets in sorted(target_groups.items()):
            shown = ", ".join(f"{target} {state}" for target, state in sorted(targets.items())) or "no targets"
            print(f"  ALB {group}, target group {service}: {shown}")
    return 0


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_fault(args: argparse.Namespace) -> int:
    params = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"fault parameter {item!r} must be key=value, e.g. count=3", file=sys.stderr)
            return 2
        params[key] = _parse_value(value)
    try:
        result = SandboxControl(Path(args.dir)).fault(args.name, **params)
    except SandboxNotRunning as err:
        print(str(err), file=sys.stderr)
        return 3
    except RuntimeError as err:
        print(str(err), file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print (only to stdout, as `kubectl create token`) a token for a user or ServiceAccount; RBAC decides."""
    import yaml

    from .kubeapi.rbac import SA_PREFIX, mint_token

    root = Path(args.dir).resolve()
    state = _running_state(root)
    if state is None:
        print(f"No sandbox runs for {args.dir}; start one with `python -m sandbox up --dir {args.dir}`.", file=sys.stderr)
        return 3
    if bool(args.user) == bool(args.service_account):
        print("name exactly one identity: --user NAME or --service-account NAMESPACE/NAME", file=sys.stderr)
        return 2
    if args.service_account:
        namespace, sep, name = args.service_account.partition("/")
        if not sep or not namespace or not name:
            print(f"--service-account {args.service_account!r} must be NAMESPACE/NAME, e.g. hosthree/deployer",
                  file=sys.stderr)
            return 2
        user = f"{SA_PREFIX}{namespace}:{name}"
    else:
        user = args.user
    token = mint_token(state["admin_token"], user, args.group or [], seconds=args.duration)
    if args.kubeconfig:
        config = yaml.safe_load(Path(state["kubeconfig"]).read_text())
        config["users"] = [{"name": user, "user": {"token": token}}]
        for context in config.get("contexts") or []:
            context["context"]["user"] = user
        path = Path(args.kubeconfig)
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # The same sandbox the inventory picks: $QWEN3_SANDBOX_DIR, else ./.sandbox.
        p.add_argument("--dir", default=os.environ.get("QWEN3_SANDBOX_DIR") or ".sandbox",
                       help="the sandbox's root directory (default: $QWEN3_SANDBOX_DIR, else .sandbox)")
        return p

    for name, helptext in (("up", "start in the background and wait until ready"),
                           ("serve", "run in the foreground (what `up` starts)")):
        p = with_dir(commands.add_parser(name, help=helptext))
        p.add_argument("--fast", action="store_true", help="scale every delay down (tests, demos)")
        p.add_argument("--time-scale", type=float, metavar="N",
                       help="live the real-world profile (sandbox/cluster/profile.py: node launch, image pulls "
                            "by size, model downloads and loads, ALB) N times faster than life")
        p.add_argument("--without", action="append", choices=sorted(WITHOUT), metavar="PIECE",
                       help=f"leave a piece out (repeatable): {', '.join(WITHOUT)}")
        p.add_argument("--with", dest="with_addons", action="append", choices=sorted(WITH), metavar="ADD-ON",
                       help=f"install an add-on EKS lacks by default (repeatable): {', '.join(WITH)}")
        p.add_argument("--device-plugin", choices=("static", "helm", "gpu-operator", "bottlerocket"),
                       help="who installed the NVIDIA device plugin (default: static, its plain manifest)")
        p.add_argument("--options-json", help=argparse.SUPPRESS)
    p = with_dir(commands.add_parser("down", help="stop the sandbox (idempotent); the next up starts clean"))
    p.add_argument("--keep-hub-revisions", action="store_true",
                   help="keep the Hub's commits added by hub-new-revision for the next up (default: drop them)")
    with_dir(commands.add_parser("status", help="print what runs"))
    p = with_dir(commands.add_parser("fault", help="inject a fault: NAME key=value ..."))
    p.add_argument("name", help="api-errors, api-slow, api-drop, spot-interruption, restart-pods, image-pull-failure, crash-loop, "
                                "karpenter-drift, karpenter-consolidate, gpu-operator-upgrade, hub-cut, hub-429, hub-corrupt, "
                                "hub-new-revision, clear")
    p.add_argument("params", nargs="*", help="key=value (values parsed as JSON when they can be)")
    p = with_dir(commands.add_parser("token", help="print a bearer token for a user or ServiceAccount (RBAC applies)"))
    p.add_argument("--user", help="user name, e.g. ci-deployer")
    p.add_argument("--group", action="append", help="a group of that user (repeatable), e.g. qwen3-speech-deployers")
    p.add_argument("--service-account", help="NAMESPACE/NAME: a ServiceAccount's token instead of a user's")
    p.add_argument("--duration", type=int, default=3600, help="seconds the token is valid (default 3600)")
    p.add_argument("--kubeconfig", help="also write a kubeconfig using the token to this path (mode 0600)")
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:  # `python -m sandbox status | head -3`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


_COMMANDS = {"token": cmd_token, "up": cmd_up, "serve": cmd_serve, "down": cmd_down, "status": cmd_status, "fault": cmd_fault}


if __name__ == "__main__":
    sys.exit(main())
