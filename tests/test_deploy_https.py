"""The edge over HTTPS, end to end: the playbook with ingress_certificate_arn against a sandbox,
then the real curl through the sandbox ALB as a client would call it."""

from __future__ import annotations

import subprocess

from tests.deploy_helpers import assert_ok, deploy, output, writes

HOSTS = {"asr": "asr.speech.sandbox.test", "tts": "tts.speech.sandbox.test"}


def curl(sandbox, url: str, *extra: str) -> str:
    """The real curl trusting the sandbox's CA; every name goes to 127.0.0.1 on the same port, as DNS would to the ALB."""
    done = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", sandbox.state["ca_file"],
                           "--connect-to", "::127.0.0.1:", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                           *extra, url], capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_with_a_certificate_both_services_answer_over_https_and_plain_http_is_redirected(sandbox):
    arn = sandbox.state["acm_certificate_arn"]
    result = deploy(sandbox, "--data", f"ingress_certificate_arn={arn}",
                    "--data", f"ingress_asr_host={HOSTS['asr']}", "--data", f"ingress_tts_host={HOSTS['tts']}",
                    "--data", "verify_long_request=false")
    assert_ok(result)
    assert "HTTPS :443 ASR asr.speech.sandbox.test" in output(result)
    listeners = sandbox.state["alb_listeners"]
    assert listeners["443"].startswith("https://") and listeners["80"].startswith("http://")
    https_port, http_port = (listeners[p].rsplit(":", 1)[1] for p in ("443", "80"))
    for host in HOSTS.values():
        assert curl(sandbox, f"https://{host}:{https_port}/health") == "200"
        assert curl(sandbox, f"http://{host}:{http_port}/health") == f"301 https://{host}:{https_port}/health"


def test_a_certificate_that_does_not_cover_the_hosts_is_refused_before_any_write(sandbox):
    arn = sandbox.state["acm_certificate_arn"]
    mark = sandbox.control.audit_mark()
    result = deploy(sandbox, "--data", f"ingress_certificate_arn={arn}",
                    "--data", "ingress_asr_host=asr.example.com", "--data", "ingress_tts_host=tts.example.com")
    assert result.returncode != 0
    assert "ALB certificate" in output(result) and "not ['asr.example.com', 'tts.example.com']" in output(result)
    assert not [r for r in writes(sandbox.control.audit_since(mark)) if r.get("resource") != "leases"]
