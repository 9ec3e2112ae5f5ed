"""HTTPS at the sandbox ALB: the certificate the sandbox imported into ACM, and HTTP redirected to it.

The TTS objects are rendered from files/ with `ingress_certificate_arn` and a host per service, as
the deploy renders them, and run in an in-process fast cluster on the sandbox's AWS (moto, whose
ACM holds the certificate). The client is the real curl binary, trusting the sandbox's CA.
"""

from __future__ import annotations

import subprocess

import pytest

from sandbox.cluster.common import INGRESSES
from tests.aws_helpers import running_sandbox_aws
from tests.cluster_helpers import events, running_cluster, wait_for
from tests.sandbox.test_cluster_alb import GROUP, start_tts_listeners, tts_objects

TTS_HOST = "tts.speech.sandbox.test"


@pytest.fixture(scope="module")
def sandbox_aws(tmp_path_factory):
    with running_sandbox_aws(tmp_path_factory.mktemp("aws")) as started:
        yield started


def https_objects(arn: str, file_system_id: str) -> list[dict]:
    objects = tts_objects(ingress_certificate_arn=arn, ingress_asr_host="asr.speech.sandbox.test",
                          ingress_tts_host=TTS_HOST)
    for obj in objects:  # with AWS, the EFS driver stand-in binds only a file system of the account
        if obj["kind"] == "StorageClass":
            obj["parameters"]["fileSystemId"] = file_system_id
    return objects


def start(cluster, objects: list[dict]) -> dict[int, str]:
    return start_tts_listeners(cluster, objects, ports={80, 443})


def curl(ca_file: str, url: str, *extra: str) -> tuple[str, str]:
    """The real curl; every name is sent to 127.0.0.1 on the same port (--connect-to), as DNS would to the ALB."""
    done = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", ca_file, "--connect-to", "::127.0.0.1:",
                           "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", *extra, url],
                          capture_output=True, text=True, timeout=30)
    code, _, redirect = done.stdout.partition(" ")
    return code, redirect or done.stderr


def test_with_a_certificate_curl_reaches_tts_over_https_and_plain_http_is_redirected(tmp_path, sandbox_aws):
    arn, ca_file = sandbox_aws.facts["acm_certificate_arn"], sandbox_aws.facts["acm_ca_file"]
    with running_cluster(tmp_path, aws=sandbox_aws) as cluster:
        listeners = start(cluster, https_objects(arn, sandbox_aws.facts["efs_file_system_id"]))
        assert listeners[443].startswith("https://") and listeners[80].startswith("http://")
        https_port, http_port = (int(listeners[p].rsplit(":", 1)[1]) for p in (443, 80))

        code, _ = curl(ca_file, f"https://{TTS_HOST}:{https_port}/health")
        assert code == "200"
        code, location = curl(ca_file, f"http://{TTS_HOST}:{http_port}/v1/audio/speech?x=1")
        assert (code, location) == ("301", f"https://{TTS_HOST}:{https_port}/v1/audio/speech?x=1")
        code, _ = curl(ca_file, f"http://{TTS_HOST}:{http_port}/health", "-L")
        assert code == "200"  # followed to HTTPS
        # Another host is not in the rules: the listener's default action, 404.
        code, _ = curl(ca_file, f"https://other.speech.sandbox.test:{https_port}/health")
        assert code == "404"
        # Without the sandbox's CA the certificate is not trusted.
        failed = subprocess.run(["curl", "-sS", "--max-time", "20", "--connect-to", "::127.0.0.1:",
                                 f"https://{TTS_HOST}:{https_port}/health"], capture_output=True, text=True, timeout=30)
        assert failed.returncode == 60, failed.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_a_certificate_arn_missing_from_acm_fails_the_model_and_opens_no_listener(tmp_path, sandbox_aws):
    arn = sandbox_aws.facts["acm_certificate_arn"].rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    with running_cluster(tmp_path, aws=sandbox_aws) as cluster:
        for obj in https_objects(arn, sandbox_aws.facts["efs_file_system_id"]):
            if obj["kind"] == "Ingress":
                cluster.store.create(INGRESSES, obj)
        found = wait_for(lambda: events(cluster.store, "qwen3-tts-ingress", reason="FailedBuildModel"),
                         "the controller to refuse the model")
        assert arn in found[0]["message"] and "not found" in found[0]["message"]
        assert 443 not in cluster.alb.listeners().get(GROUP, {})
