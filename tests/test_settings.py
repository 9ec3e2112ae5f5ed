"""Bad inventory data is rejected before the first API call, naming the key, the value and the fix."""

from __future__ import annotations

import pytest

from qwen_speech.settings import SettingsError, settings_warnings, validate
from tests.manifest_helpers import default_data


def problems(**overrides) -> str:
    with pytest.raises(SettingsError) as err:
        validate(default_data(**overrides))
    return str(err.value)


def test_the_guides_defaults_are_a_valid_inventory():
    s = validate(default_data())
    assert s.namespace == "hosthree" and s.time_slicing_replicas == 2 and s.asr_gpu_memory_utilization == 0.45
    assert s.asr_model_path == "/models/Qwen3-ASR-1.7B" and s.tts_model_path == "/models/Qwen3-TTS-CustomVoice"


def test_an_unknown_key_is_named_with_its_neighbours():
    text = problems(asr_max_model_length=8192)
    assert "asr_max_model_length: unknown key (did you mean asr_max_model_len" in text


@pytest.mark.parametrize("key, value, expected", [
    ("time_slicing_replicas", 0, "an integer from 1 to 32"),
    ("asr_gpu_memory_utilization", 1.5, "between 0 and 1"),
    ("asr_gpu_memory_utilization", 0, "between 0 and 1"),
    ("asr_max_model_len", "4096", "an integer from 1 to 128000"),
    ("asr_max_model_len", -1, "an integer from 1 to 128000"),
    ("namespace", "Bad_Namespace", "DNS-1123 label"),
    ("asr_image", "qwenllm/Qwen3 ASR:latest", "an image reference"),
    ("tts_image", "repo@sha256:short", "an image reference"),
    ("asr_port", 70000, "a port number"),
    ("ingress_scheme", "public", "'internal', 'internet-facing'"),
    ("asr_memory", "6 GB", "a Kubernetes quantity"),
    ("efs_create", "yes", "true or false"),
    ("asr_model_repo", "Qwen3-ASR", "owner/name"),
    ("gpu_tolerations", [{"key": "nvidia.com/gpu", "operator": "Sometimes"}], "operator Exists or Equal"),
    ("gpu_tolerations", [{"key": "nvidia.com/gpu", "tolerationSeconds": "soon"}], "tolerationSeconds an integer"),
    ("ingress_idle_timeout_seconds", 5000, "an integer from 1 to 4000"),
    ("ingress_deregistration_delay_seconds", 10, "an integer from 20 to 3600 (also the serving pods' grace period"),
    ("asr_dtype", "bf16", "'auto', 'half'"),
    ("ingress_certificate_arn", "my-cert", "an ACM certificate ARN"),
    ("ingress_tts_host", "*.example.com", "a DNS name such as"),
])
def test_a_bad_value_is_named_with_what_would_be_right(key, value, expected):
    text = problems(**{key: value})
    assert f"{key} = {value!r}" in text
    assert expected in text


def test_tts_must_fit_next_to_asrs_share_of_the_gpu():
    text = problems(asr_gpu_memory_utilization=0.75)  # 15 x 0.25 = 3.75 GiB left, TTS needs 4.8
    assert "tts_gpu_memory_gib = 4.8" in text and "asr_gpu_memory_utilization 0.75" in text
    assert "gpu_memory_total_gib 15" in text and "at most 0.68" in text
    validate(default_data(asr_gpu_memory_utilization=0.6))  # 6 GiB left: fits


def test_every_problem_is_reported_at_once():
    text = problems(time_slicing_replicas=0, namespace="UPPER")
    assert "time_slicing_replicas" in text and "namespace" in text


def test_a_cluster_must_be_named_somehow():
    text = problems(kubeconfig=None, eks_cluster_name=None)
    assert "eks_cluster_name" in text and "kubeconfig" in text


def test_both_services_cannot_share_a_port():
    assert "asr_port = tts_port" in problems(tts_port=8000)


def test_a_backend_keep_alive_not_above_the_idle_timeout_is_refused_with_a_value_that_works():
    text = problems(ingress_idle_timeout_seconds=900, backend_keep_alive_seconds=900)
    assert "backend_keep_alive_seconds = 900: must be above ingress_idle_timeout_seconds = 900" in text
    assert "e.g. 960" in text


def test_tts_dtype_with_the_official_backend_is_warned_about_and_the_default_is_silent():
    assert settings_warnings(validate(default_data())) == []
    (warning,) = settings_warnings(validate(default_data(tts_dtype="bfloat16")))
    assert "tts_dtype = 'bfloat16' has no effect with tts_backend = 'official'" in warning
    assert settings_warnings(validate(default_data(tts_dtype="float16", tts_backend="pytorch"))) == []


def test_a_certificate_without_a_host_per_service_is_refused_naming_both_keys():
    arn = "arn:aws:acm:us-west-2:123456789012:certificate/0c3dbbb7-1213-4293-9147-a69c671065ac"
    text = problems(ingress_certificate_arn=arn, ingress_asr_host="asr.example.com")
    assert "ingress_asr_host / ingress_tts_host: with ingress_certificate_arn" in text
    assert validate(default_data(ingress_certificate_arn=arn, ingress_asr_host="asr.example.com",
                                 ingress_tts_host="tts.example.com")).ingress_certificate_arn == arn
