"""Step 8 (验证部署): proof that the service works, then the summary.

The guide checks that pods run and curls /health through port-forwards. This step goes
further, through the Kubernetes API's service proxy (no port-forward, no public ALB needed):
both health endpoints (TTS health is read as JSON, since it answers 200 while loading), a speech
round trip (TTS speaks a Chinese and an English sentence, ASR transcribes them, the character
error rate must stay under verify_max_cer), both pods on one GPU node, and the ALB when this
machine can reach it (its DNS name, or the listener URLs of `ingress_listener_urls_file`, which
the sandbox writes): health, the same round trips, and one synthesis longer than an ALB's default
idle timeout with a short request beside it, so long requests are proven end to end. Read-only, so a rerun that changes nothing still verifies and still
reports no change.

It waits like every other step: first until both Deployments are ready again (a Spot
interruption during steps 6 or 7 leaves them without pods for a while), then every request is
asked again while its answer is transient ("no endpoints available", 429, 5xx from the API
server, a dropped connection), up to timeout_verify. It fails only on a real answer (a 4xx, the
service's own 500, a wrong transcript) or at the deadline, and says which.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field

from pyinfra import host, logger, state
from pyinfra.api import deploy, operation

from kubeops import k8s

from kubeops.client import KubeApiError, KubeUnreachable
from kubeops.kinds import Ref
from kubeops.retry import RetryLog, RetryPolicy
from kubeops.waiter import WaitFailed, deployment_ready, wait_until_ready

from .context import context_of, host_tag
from .models import RECORD

ASR_SERVICE, TTS_SERVICE = "qwen3-asr-service", "qwen3-tts-service"
DEPLOYMENTS = ("qwen3-asr", "qwen3-tts")
INGRESSES = ("qwen3-asr-ingress", "qwen3-tts-ingress")


class ServiceProxy:
    """HTTP to a Service through the API server: the transport the round trip uses."""

    def __init__(self, kube, namespace: str, service: str, port: int | str = 80):
        self.kube, self.namespace, self.service, self.port = kube, namespace, service, port

    def __str__(self) -> str:
        return f"service {self.namespace}/{self.service}:{self.port} (via the API server's proxy)"

    def _send(self, method: str, path: str, body: bytes | None, content_type: str, timeout: float) -> tuple[int, bytes]:
        return self.kube.service_proxy(method, self.namespace, self.service, self.port, path, body=body,
                                       content_type=content_type, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 300.0) -> tuple[int, dict, bytes]:
        from qwen_speech.roundtrip import RoundTripError

        content_type = (headers or {}).get("Content-Type", "application/json")
        try:
            status, data = self._send(method, path, body, content_type, timeout)
        except KubeUnreachable as err:  # as UrlTransport: nothing answered (status 0), worth asking again
            raise RoundTripError(str(err), endpoint=f"{method} {path} on {self}") from None
        return status, {}, data


class PodProxy(ServiceProxy):
    """HTTP to one pod through the API server (pods/proxy, to its container port): each replica
    is asked itself, not whichever one its Service picks."""

    def __str__(self) -> str:
        return f"pod {self.namespace}/{self.service}:{self.port} (via the API server's proxy)"

    def _send(self, method: str, path: str, body: bytes | None, content_type: str, timeout: float) -> tuple[int, bytes]:
        return self.kube.pod_proxy(method, self.namespace, self.service, self.port, path, body=body,
                                   content_type=content_type, timeout=timeout)


class KeyedTransport:
    """A transport that sends `Authorization: Bearer KEY` (the services' API key) when there is a key."""

    def __init__(self, inner, key: str | None):
        self.inner, self.key = inner, key

    def __str__(self) -> str:
        return str(self.inner)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 300.0) -> tuple[int, dict, bytes]:
        if self.key:
            headers = {**(headers or {}), "Authorization": f"Bearer {self.key}"}
        return self.inner.request(method, path, body, headers, timeout)


@dataclass
class Report:
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    wait: float = 0.0  # seconds a check may keep asking while the answers are transient
    retries: RetryLog = field(default_factory=lambda: RetryLog("transient answer"))

    def fail(self, text: str) -> None:
        self.ok = False
        self.problems.append(text)

    def retrying(self, transport):
        """`transport`, asked again while its answers are transient, up to self.wait (API proxy and ALB alike)."""
        from qwen_speech.roundtrip import RetryingTransport

        policy = RetryPolicy(budget_seconds=self.wait, first_delay=0.2, max_delay=2.0)
        return RetryingTransport(transport, policy, self.retries)

    def transport(self, kube, namespace: str, service: str):
        """The way to a Service for the checks: its API proxy, asked again while answers are transient."""
        return self.retrying(ServiceProxy(kube, namespace, service))


def services_present(kube, namespace: str, report: Report) -> dict[str, dict] | None:
    """The Deployments verify talks to, by name, when they and their Services exist (one list of
    each kind: a rerun's request budget); what is missing is said at once, without waiting."""
    deployments = {d["metadata"]["name"]: d for d in kube.list("apps/v1", "Deployment", namespace)}
    services = {svc["metadata"]["name"] for svc in kube.list("v1", "Service", namespace)}
    missing = ([str(Ref("apps/v1", "Deployment", name, namespace)) for name in DEPLOYMENTS if name not in deployments]
               + [str(Ref("v1", "Service", name, namespace)) for name in (ASR_SERVICE, TTS_SERVICE) if name not in services])
    if missing:
        report.fail(f"missing: {', '.join(missing)}; deploy first (pyinfra INVENTORY deploy.py)")
        return None
    return deployments


def wait_for_services(kube, s, report: Report, progress=None, listed: dict[str, dict] | None = None) -> None:
    """Wait (up to report.wait) until both Deployments are ready, failing early with a pod's reason
    (a pod may stay unschedulable for unschedulable_grace_seconds: a Spot replacement is coming).
    A Deployment `listed` ready a moment ago (services_present) is not asked for again."""
    deadline = time.monotonic() + report.wait
    for name in DEPLOYMENTS:
        if name in (listed or {}) and deployment_ready(listed[name]):
            continue
        ref = Ref("apps/v1", "Deployment", name, s.namespace)
        try:
            wait_until_ready(kube, ref, timeout=max(0.0, deadline - time.monotonic()), poll=min(1.0, s.poll_seconds),
                             progress=progress, unschedulable_grace=s.unschedulable_grace_seconds)
        except WaitFailed as err:
            report.fail(str(err))
            return


def _health_reading(status: int, body: bytes) -> tuple[bool, dict]:
    try:
        health = json.loads(body) if status == 200 else {}
    except ValueError:
        health = {}
    backend = health.get("backend") or {}
    return status == 200 and health.get("status") == "healthy" and bool(backend.get("ready")), health


def check_health(kube, namespace: str, report: Report) -> None:
    check_asr_health(report.transport(kube, namespace, ASR_SERVICE), report)
    check_tts_health(report.transport(kube, namespace, TTS_SERVICE), report)


def check_asr_health(asr, report: Report, name: str = "ASR") -> None:
    status, _, body = asr.request("GET", "/health", timeout=15)
    if status == 200:
        report.lines.append(f"{name} /health: 200")
    else:
        report.fail(f"{name} /health through {asr} answered {status}: {body[:200].decode(errors='replace')}")


def check_tts_health(tts, report: Report, name: str = "TTS") -> None:
    deadline = time.monotonic() + report.wait
    while True:  # the TTS answers 200 while its model loads: ask until its backend is ready
        status, _, body = tts.request("GET", "/health", timeout=15)
        ready, health = _health_reading(status, body)
        if ready or status != 200 or time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    backend = health.get("backend") or {}
    if ready:
        report.lines.append(f"{name} /health: healthy, backend {backend.get('name', '?')} ready")
    else:
        report.fail(f"{name} /health through {tts} answered {status}: "
                    f"status={health.get('status')!r} ready={backend.get('ready')!r} {body[:200].decode(errors='replace')}")


def check_round_trip(kube, s, report: Report) -> None:
    check_round_trip_between(report.transport(kube, s.namespace, TTS_SERVICE),
                             report.transport(kube, s.namespace, ASR_SERVICE), s, report)


def check_every_pod(kube, s, report: Report, pods: list[dict]) -> None:
    """With more than one serving node, each pod itself: its health, and a round trip from every
    TTS pod to the ASR pod on its node (the Service checks above reach only the pods it picks;
    `pods`: serving_pods)."""
    pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    by_app: dict[str, list[dict]] = {"qwen3-asr": [], "qwen3-tts": []}
    for pod in sorted(pods, key=lambda p: (p["spec"].get("nodeName") or "", p["metadata"]["name"])):
        by_app.get(pod["metadata"]["labels"].get("app.kubernetes.io/name"), []).append(pod)
    if len(by_app["qwen3-asr"]) <= 1 and len(by_app["qwen3-tts"]) <= 1:
        return  # one pod each: the Service checks asked exactly those
    asr_on = {}
    for pod in by_app["qwen3-asr"]:
        name = pod["metadata"]["name"]
        transport = report.retrying(PodProxy(kube, s.namespace, name, s.asr_port))
        check_asr_health(transport, report, f"pod {name} (ASR on {pod['spec'].get('nodeName')})")
        asr_on[pod["spec"].get("nodeName")] = (name, transport)
    for pod in by_app["qwen3-tts"]:
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        tts = report.retrying(PodProxy(kube, s.namespace, name, s.tts_port))
        check_tts_health(tts, report, f"pod {name} (TTS on {node})")
        # Its node's ASR pod, else any (check_placement warns about a TTS pod without one beside it).
        asr_name, asr = asr_on.get(node) or next(iter(asr_on.values()), (None, None))
        if asr is not None and report.ok and not s.api_key_secret:  # the proxy cannot pass the Bearer key
            check_round_trip_between(tts, asr, s, report, where=f" on {node} ({name} -> {asr_name})")


def check_round_trip_between(tts, asr, s, report: Report, where: str = "") -> None:
    from qwen_speech import roundtrip

    try:
        results = roundtrip.round_trip(tts, asr, asr_model=s.asr_model_path, max_cer=s.verify_max_cer)
    except roundtrip.RoundTripError as err:
        report.fail(f"speech round trip{where}: {err}")
        return
    for r in results:
        # The transcript only when it differs: the sample sentence twice made the line too long to read.
        heard = "heard back exactly" if r.transcript == r.text else f"-> {r.transcript!r}"
        line = (f"round trip{where} {r.model}/{r.voice}: {r.text!r} {heard}, CER {r.cer:.2f}, "
                f"TTS {_took(r.tts_seconds)}, ASR {_took(r.asr_seconds)}")
        if r.ok:
            report.lines.append(line)
        else:
            report.fail(line + f" (over verify_max_cer {s.verify_max_cer})")


def _took(seconds: float) -> str:
    """A request's time, readable at both ends: the stand-ins answer in milliseconds, a GPU in seconds."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def serving_pods(kube, s) -> list[dict]:
    """This deploy's pods, read once for the placement check and the summary. Pods being deleted
    are left out: a drained pod (Spot notice, rollout) still runs out its grace period on the node
    that is leaving, and naming that node as where the service runs would send an operator there."""
    return [p for p in kube.list("v1", "Pod", s.namespace, label_selector="app.kubernetes.io/part-of=qwen3-speech")
            if not p["metadata"].get("deletionTimestamp")]


def check_placement(pods: list[dict], report: Report) -> None:
    nodes: dict[str, set[str]] = {"qwen3-asr": set(), "qwen3-tts": set()}
    for pod in pods:
        name = pod["metadata"]["labels"].get("app.kubernetes.io/name")
        if name in nodes and (pod.get("status") or {}).get("phase") == "Running":
            node = pod["spec"].get("nodeName", "?")
            nodes[name].add(node)
            report.lines.append(f"pod {pod['metadata']['name']}: Running on {node}")
    alone = sorted(nodes["qwen3-tts"] - nodes["qwen3-asr"])
    if alone:
        report.warnings.append(f"TTS runs without ASR beside it on {', '.join(alone)} (ASR on "
                               f"{', '.join(sorted(nodes['qwen3-asr'])) or 'no node'}): time-slicing is meant to "
                               "share one GPU per node; check GPU node capacity")


def check_endpoints(ctx, report: Report, alb_wait: float | None = None) -> str | None:
    """The ALB's address and listeners, `alb_wait` seconds for the ALB (default timeout_ingress); returns
    its DNS name (None when the Ingresses have none)."""
    s, kube = ctx.settings, ctx.kube
    hostname = None
    missing = []
    listed = {ing["metadata"]["name"]: ing for ing in kube.list("networking.k8s.io/v1", "Ingress", s.namespace)}
    for name in INGRESSES:
        ing = listed.get(name)
        if ing is None:
            missing.append(f"Ingress {s.namespace}/{name}")
        lb = (((ing or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or [{}]
        hostname = hostname or lb[0].get("hostname")
    if len(missing) == len(INGRESSES):  # no Ingress: no ALB to look for, nor to wait for
        report.fail(f"missing: {', '.join(missing)}; deploy first (pyinfra INVENTORY deploy.py)")
        return None
    if ctx.aws is not None:
        from qwen_speech import aws

        try:
            alb = aws.find_load_balancer(ctx.aws, cluster_name=s.eks_cluster_name or "", group_name=s.ingress_group,
                                         expected_ports=listen_ports(s),
                                         wait_seconds=s.timeout_ingress if alb_wait is None else alb_wait)
            hostname = alb.dns_name
            report.lines.append(f"ALB {alb.name} ({alb.state}), listeners {sorted(alb.listener_ports)}")
            if alb.missing_ports:
                report.fail(f"ALB {alb.name} has no listener on {alb.missing_ports}; "
                            "check the AWS Load Balancer Controller's logs")
        except aws.AwsProblem as err:
            report.warnings.append(f"ALB lookup in AWS: {err}")
    if not hostname:
        report.fail("the Ingresses have no load balancer address")
        return None
    report.lines.append(f"ALB {hostname}: ASR :{s.asr_port}, TTS :{s.tts_port}")
    if not s.ingress_listener_urls_file and not _reachable(hostname, s.asr_port):
        report.warnings.append(f"{hostname}:{s.asr_port} is not reachable from this machine: {_unreachable_why(s)}; "
                               "the checks went through the API server's proxy, and so can your calls (below)")
    return hostname


def listen_ports(s) -> list[int]:
    """The ALB's listen ports: one per service, or HTTP 80 and HTTPS 443 with a certificate (files/qwen3-speech-ingress.yaml)."""
    return [80, 443] if s.ingress_certificate_arn else [s.asr_port, s.tts_port]


def _unreachable_why(s) -> str:
    if s.ingress_scheme == "internal":
        return ("an internal ALB answers only inside the VPC: call it from a pod, a bastion, a VPN or a peered "
                "network, or set ingress_scheme: internet-facing with ingress_inbound_cidrs")
    return (f"an internet-facing ALB answers only to ingress_inbound_cidrs {s.ingress_inbound_cidrs or 'all'}: "
            "add this machine's address, or check the security group")


def call_summary(ctx, hostname: str | None, urls: dict[int, str] | None, report: Report, pods: list[dict]) -> None:
    """Per service: the URL to call and one curl line that works from here (the ALB when this
    machine reaches it, else the API server's service proxy), and the node it runs on (`pods`:
    serving_pods)."""
    s, kube = ctx.settings, ctx.kube
    on: dict[str, set[str]] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") == "Running":
            on.setdefault(pod["metadata"]["labels"].get("app.kubernetes.io/name"), set()).add(pod["spec"].get("nodeName", "?"))
    nodes = {app: ", ".join(sorted(names)) for app, names in on.items()}
    if hostname:  # what clients call; from here only when `urls` has it too
        report.lines.append(f"TTS URL: http://{hostname}:{s.tts_port}/v1/audio/speech")
        report.lines.append(f"ASR URL: http://{hostname}:{s.asr_port}/v1/audio/transcriptions")
    if urls:
        asr, tts, curl = urls[s.asr_port], urls[s.tts_port], "curl -s"
        if s.api_key_secret:  # the variable's name, never the key
            curl += ' -H "Authorization: Bearer $QWEN3_SPEECH_API_KEY"'
    else:
        proxy = f"{kube.host}/api/v1/namespaces/{s.namespace}/services"
        asr, tts = f"{proxy}/{ASR_SERVICE}:80/proxy", f"{proxy}/{TTS_SERVICE}:80/proxy"
        curl = 'curl -s --cacert "$CA" -H "Authorization: Bearer $TOKEN"'
        report.lines.append("through the API server's proxy (CA and token of your kubeconfig; "
                            "`kubectl get --raw` works too)")
    report.lines.append(f"call TTS (on {nodes.get('qwen3-tts', '?')}), then ASR (on {nodes.get('qwen3-asr', '?')}):")
    report.lines.append(f"  {curl} {tts}/v1/audio/speech -H 'Content-Type: application/json' -o /tmp/speech.wav "
                        "-d '{\"model\":\"tts-1\",\"input\":\"Hello\",\"voice\":\"Vivian\",\"response_format\":\"wav\"}'")
    report.lines.append(f"  {curl} {asr}/v1/audio/transcriptions -F file=@/tmp/speech.wav -F model={s.asr_model_path}")


def alb_urls(s, hostname: str | None) -> dict[int, str] | None:
    """Base URL per service port through the ALB, or None when this machine cannot reach it.

    From `ingress_listener_urls_file` (JSON with `alb_listeners`: port -> URL) when set, else the
    ALB's DNS name when it answers.
    """
    ports = (s.asr_port, s.tts_port)
    if s.ingress_listener_urls_file:
        try:
            with open(s.ingress_listener_urls_file, encoding="utf-8") as f:
                listeners = json.load(f).get("alb_listeners") or {}
        except (OSError, ValueError):
            return None
        urls = {port: listeners.get(str(port)) for port in ports}
        return urls if all(urls.values()) else None
    if hostname and _reachable(hostname, s.asr_port):
        return {port: f"http://{hostname}:{port}" for port in ports}
    return None


def check_through_alb(s, urls: dict[int, str], report: Report, long_request: bool = True) -> None:
    """Health, the round trips and (with `long_request`) a long synthesis, as a client of the ALB sends them."""
    from qwen_speech import roundtrip

    key = os.environ.get("QWEN3_SPEECH_API_KEY") if s.api_key_secret else None
    if s.api_key_secret and not key:
        report.warnings.append("through the ALB: not checked, api_key_secret is set but QWEN3_SPEECH_API_KEY is not "
                               "exported here; export it to check the services with their key")
        return
    asr, tts = (report.retrying(KeyedTransport(roundtrip.UrlTransport(urls[port]), key))
                for port in (s.asr_port, s.tts_port))
    try:
        for name, transport in (("ASR", asr), ("TTS", tts)):
            status, _, body = transport.request("GET", "/health", timeout=30)
            if status != 200:
                report.fail(f"{name} /health through the ALB ({transport}) answered {status}: "
                            f"{body[:200].decode(errors='replace')}")
                return
            report.lines.append(f"through the ALB: {name} /health: 200 ({transport})")
        results = roundtrip.round_trip(tts, asr, asr_model=s.asr_model_path, max_cer=s.verify_max_cer,
                                       timeout=s.ingress_idle_timeout_seconds + 60)
        for r in results:
            line = f"through the ALB: round trip {r.model}/{r.voice}, CER {r.cer:.2f}"
            (report.lines.append if r.ok else report.fail)(line if r.ok else line + f" (over {s.verify_max_cer})")
        if s.verify_long_request and not long_request:
            report.lines.append("through the ALB: long synthesis skipped, this run changed nothing "
                                "(`python -m qwen_speech verify` runs it)")
        elif s.verify_long_request:
            long = roundtrip.long_request(tts, timeout=s.ingress_idle_timeout_seconds + 60)
            report.lines.append(f"through the ALB: a {len(roundtrip.LONG_TEXT)}-character synthesis answered 200 after "
                                f"{long.long_seconds:.1f}s, a short one beside it after {long.short_seconds:.1f}s")
    except roundtrip.RoundTripError as err:
        report.fail(f"through the ALB: {err}")


def _reachable(hostname: str, port: int) -> bool:
    try:
        with socket.create_connection((hostname, port), timeout=3):
            return True
    except OSError:
        return False


def model_summary(kube, s, report: Report, recorded: dict[str, str] | None = None) -> None:
    """The seeded commits, from `recorded` (the models record as this run read it) or read now."""
    data = recorded if recorded is not None else (kube.get(Ref("v1", "ConfigMap", RECORD, s.namespace)) or {}).get("data") or {}
    for key in ("asr", "tts"):
        if data.get(key):
            report.lines.append(f"model {data.get(f'{key}-repo', key)} at {data[key]} (seeded {data.get(f'{key}-seeded-at', '?')})")


def run_checks(ctx, wait: float | None = None, alb_wait: float | None = None, progress=None,
               long_request: bool = True, recorded: dict[str, str] | None = None) -> Report:
    """Every check; `wait` seconds (default timeout_verify) for the services to be ready and answer.
    `long_request`: the long synthesis through the ALB too, when verify_long_request is on;
    `recorded`: the models record when this run has it current (None: read it)."""
    s, kube = ctx.settings, ctx.kube
    report = Report(wait=s.timeout_verify if wait is None else wait)
    try:
        deployments = services_present(kube, s.namespace, report)
        if deployments is not None:
            wait_for_services(kube, s, report, progress, listed=deployments)
        if report.ok:
            check_health(kube, s.namespace, report)
        if report.ok and s.api_key_secret:  # the API server keeps the Authorization header for itself
            report.lines.append("round trip through the API server's proxy: skipped (api_key_secret is set, and "
                                "the proxy cannot pass the services' Bearer key); the ALB check below sends it")
        elif report.ok:
            check_round_trip(kube, s, report)
        pods = serving_pods(kube, s)
        if report.ok:
            check_every_pod(kube, s, report, pods)
        check_placement(pods, report)
        hostname = check_endpoints(ctx, report, alb_wait)
        urls = alb_urls(s, hostname) if report.ok else None
        if urls:
            check_through_alb(s, urls, report, long_request)
        model_summary(kube, s, report, recorded)
        if report.ok:
            call_summary(ctx, hostname, urls, report, pods)
    except (KubeApiError, KubeUnreachable) as err:
        report.fail(str(err))
    summary = report.retries.take_summary()
    if summary:
        report.lines.append(summary)
    return report


@deploy("8. Verify")
def verify():
    verified(name="health, speech round trip, placement, endpoints")


@operation(is_idempotent=True)
def verified():
    """
    Check that both services answer and understand each other, then print the summary.

    Runs when the operations before it have run (during change detection it only says it will).
    A failed check fails the operation and the run.
    """
    if not state.is_executing:
        host.noop("verified after the steps above have run")
        return
    ctx = context_of(host)
    # The long synthesis proves what the steps set up (the ALB's idle timeout, the servers' keep-alive)
    # and holds the TTS for ~2 minutes on a T4, blocking its clients: a run that changed nothing
    # leaves it to the run that did (and to `verify`); the round trips still prove the path.
    changed = k8s.changed_this_run()
    report = run_checks(ctx, progress=lambda line: logger.info(f"    {host_tag()}8. verify: {line}"),
                        long_request=changed, recorded=None if changed else ctx.recorded_models)
    k8s.report_retries("8. verify")
    for line in report.lines:
        logger.info(f"    {host_tag()}8. verify: {line}")
    for line in report.warnings:
        logger.warning(f"    {host_tag()}8. verify: warning: {line}")
    if report.ok:
        host.noop("all checks passed")
        return

    def fail():
        for problem in report.problems:
            host.log_styled(f"8. verify: {problem}", fg="red", log_func=logger.error)
        return False

    yield k8s.python_command("8. verify", fail)
