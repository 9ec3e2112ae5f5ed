"""Shared pieces of the AWS tests: a running SandboxAws (moto server) and boto3 sessions on it."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from qwen_speech.aws import AwsSession
from sandbox.aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY, AwsOptions, SandboxAws

# Only read back through eks.describe_cluster here; nothing connects to it.
KUBE_ENDPOINT = "https://127.0.0.1:6443"
KUBE_CA_PEM = b"-----BEGIN CERTIFICATE-----\nTUlJQnNhbmRib3gtY2E=\n-----END CERTIFICATE-----\n"
KUBE_CA_B64 = base64.b64encode(KUBE_CA_PEM).decode("ascii")
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running_sandbox_aws(root: Path, **options) -> Iterator[SandboxAws]:
    """A started SandboxAws under `root` with AwsOptions(**options), stopped afterwards."""
    sandbox_aws = SandboxAws(root, options=AwsOptions(**options))
    sandbox_aws.start(KUBE_ENDPOINT, KUBE_CA_B64)
    try:
        yield sandbox_aws
    finally:
        sandbox_aws.stop()


def sandbox_session(sandbox_aws: SandboxAws, **credentials) -> AwsSession:
    """An AwsSession on the sandbox with its credentials (or `credentials`), ignoring ~/.aws and the env."""
    boto_session = boto3.Session(
        aws_access_key_id=credentials.get("aws_access_key_id", ACCESS_KEY_ID),
        aws_secret_access_key=credentials.get("aws_secret_access_key", SECRET_ACCESS_KEY),
        aws_session_token=credentials.get("aws_session_token"), region_name=sandbox_aws.region)
    return AwsSession(boto_session, sandbox_aws.region, sandbox_aws.endpoint_url)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with no AWS credentials anywhere: no AWS_* vars, no ~/.aws, no instance metadata."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(HOME=str(home), AWS_CONFIG_FILE=str(home / "no-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
               AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def isolate_aws_env(monkeypatch, home: Path, **extra: str) -> None:
    """Make this test's process environment `clean_env(home, **extra)` (restored after the test)."""
    env = clean_env(home, **extra)
    for key in os.environ:
        if key.startswith("AWS_") and key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def sandbox_aws(tmp_path_factory):
    """One moto-backed sandbox AWS per test module (moto keeps its state per process)."""
    with running_sandbox_aws(tmp_path_factory.mktemp("aws")) as started:
        yield started


@pytest.fixture
def session(sandbox_aws):
    return sandbox_session(sandbox_aws)
