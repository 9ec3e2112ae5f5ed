"""A client for a running sandbox: its state, its audit log, faults, and a Kubernetes client for it.

Everything comes from ROOT/state.json and ROOT/audit.jsonl, so it works for a sandbox in
another process (`python -m sandbox up`, the pytest fixtures) as well as an in-process one.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class SandboxNotRunning(RuntimeError):
    """ROOT/state.json is missing: no sandbox runs for that directory."""


class SandboxControl:
    """Talk to the sandbox whose root directory is `root`."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> dict:
        """The current ROOT/state.json (re-read on every access)."""
        path = self.root / "state.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise SandboxNotRunning(f"no sandbox runs for {self.root} ({path} is missing); start one with "
                                    f"`python -m sandbox up --dir {self.root}`") from None

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> Any:
        state = self.state
        context = ssl.create_default_context(cafile=state["ca_file"])
        request = urllib.request.Request(state["kube_url"] + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {state['admin_token']}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise RuntimeError(f"sandbox control {method} {path} failed with {err.code}: {detail}") from None

    def fault(self, name: str, **params: Any) -> dict:
        """Inject fault `name` (api-errors, api-slow, api-drop, spot-interruption, hub-cut, clear, ...)."""
        return self._request("POST", "/sandbox/v1/faults", {"name": name, "params": params})

    def status(self) -> dict:
        """Object counts per kind and armed API faults, from the running server."""
        return self._request("GET", "/sandbox/v1/status")

    # -- audit -------------------------------------------------------------------------------

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    def audit(self) -> list[dict]:
        """Every audit record so far (one per Kubernetes API request)."""
        return self.audit_since(0)

    def audit_mark(self) -> int:
        """A position in the audit log; `audit_since(mark)` returns what came after it."""
        try:
            return self.audit_path.stat().st_size
        except FileNotFoundError:
            return 0

    def audit_since(self, mark: int) -> list[dict]:
        """Audit records written after `mark` (from `audit_mark()`)."""
        try:
            with open(self.audit_path, "rb") as log:
                log.seek(mark)
                data = log.read()
        except FileNotFoundError:
            return []
        # A line being written right now may be incomplete: leave it for the next call.
        complete = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    # -- clients -----------------------------------------------------------------------------

    def kube_api_client(self):
        """A `kubernetes.client.ApiClient` for this sandbox, from its kubeconfig (admin token)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), persist_config=False)

    def env(self) -> dict[str, str]:
        """The variables of ROOT/env (KUBECONFIG, AWS_ENDPOINT_URL, AWS_*, HF_ENDPOINT) as a dict."""
        import shlex

        out = {}
        for line in (self.root / "env").read_text().splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                out[key] = shlex.split(value)[0] if value else ""
        return out


def for_inventory(root: Path | str | None = None) -> tuple[Path, dict]:
    """The sandbox an inventory file points at (root, else $QWEN3_SANDBOX_DIR, else ./.sandbox) and its state.

    Also gives boto3 the dummy credentials the sandbox's moto server accepts (only where none are
    set), so `pyinfra inventories/sandbox.py deploy.py` needs nothing exported by hand.
    """
    import os

    root = Path(root or os.environ.get("QWEN3_SANDBOX_DIR") or Path(__file__).resolve().parent.parent / ".sandbox")
    try:
        state = SandboxControl(root).state
    except SandboxNotRunning as err:
        raise SystemExit(str(err)) from None
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    return root, state


def inventory_data(root: Path, state: dict, environment: str = "sandbox") -> dict:
    """One sandbox as a pyinfra host's data, reached by its kubeconfig (inventories/sandbox.py, sandbox_fleet.py)."""
    # A sandbox on the real-world profile (--time-scale N) lives the inventory's real defaults N times
    # faster: poll as often as 2 s would be in life (but not busier than 10 times a second), and give
    # Karpenter the real 240 s grace, scaled. Otherwise its replacement nodes join within seconds.
    scale = ((state.get("options") or {}).get("time_scale")) or None
    poll, grace = (max(0.1, 2.0 / scale), max(8.0, 240.0 / scale)) if scale else (0.2, 8)
    return {
        "environment": environment,
        "kubeconfig": str(root / "kubeconfig"),
        "eks_cluster_name": state["cluster_name"],  # for AWS look-ups; the kubeconfig is what connects
        "aws_region": state["region"],
        "aws_endpoint_url": state["aws_endpoint_url"],
        "hf_endpoint": state["hub_url"],
        # The ASR image from ECR (the sandbox's stand-in for a pull-through cache of Docker Hub), pinned by digest.
        "asr_ecr_repository": state.get("asr_ecr_repository"),
        "karpenter_interruption_queue": state.get("sqs_queue_name"),
        "poll_seconds": poll,
        "model_upgrade_policy": "follow",  # the sandbox Hub's new commits are test data: take them
        "unschedulable_grace_seconds": grace,
        # The sandbox's ALB name does not resolve; its listeners are on loopback, listed here.
        "ingress_listener_urls_file": str(root / "state.json"),
    }
