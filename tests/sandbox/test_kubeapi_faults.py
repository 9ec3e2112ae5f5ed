"""API faults injected through the sandbox's control endpoint, as clients see them."""

from __future__ import annotations

import http.client
import ssl

import pytest
from kubernetes.client.rest import ApiException


def config_map(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def test_api_errors_fault_answers_the_next_requests_with_503_and_429_with_retry_after(kube, api_sandbox):
    api_sandbox.control.fault("api-errors", codes=[503, 429], count=2, retry_after=3)
    # POSTs: urllib3 itself retries GETs that get a 429/503 with Retry-After, which would hide the burst.
    with pytest.raises(ApiException) as unavailable:
        kube.core.create_namespaced_config_map("default", config_map("first"))
    with pytest.raises(ApiException) as throttled:
        kube.core.create_namespaced_config_map("default", config_map("second"))
    assert unavailable.value.status == 503 and "Retry-After" not in unavailable.value.headers
    assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "3"
    assert '"reason":"TooManyRequests"' in throttled.value.body
    kube.core.create_namespaced_config_map("default", config_map("third"))  # the burst is over
    assert [r["code"] for r in api_sandbox.control.audit()[-3:]] == [503, 429, 201]
    assert [c.metadata.name for c in kube.core.list_namespaced_config_map("default").items] == ["third"]


def test_control_requests_do_not_use_up_a_fault_or_appear_in_the_audit_log(kube, api_sandbox):
    mark = api_sandbox.control.audit_mark()
    api_sandbox.control.fault("api-errors", codes=[500], count=1)
    assert api_sandbox.control.status()["api_faults"]["api-errors"]["left"] == 1
    assert api_sandbox.control.audit_since(mark) == []
    with pytest.raises(ApiException) as failed:
        kube.core.create_namespaced_config_map("default", config_map("refused"))
    assert failed.value.status == 500


def test_api_drop_fault_closes_the_connection_without_an_answer(api_sandbox):
    state = api_sandbox.state
    api_sandbox.control.fault("api-drop", count=1)
    connection = http.client.HTTPSConnection("127.0.0.1", state["kube_port"], timeout=10,
                                             context=ssl.create_default_context(cafile=state["ca_file"]))
    connection.request("GET", "/api/v1/namespaces", headers={"Authorization": f"Bearer {state['admin_token']}"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        connection.getresponse()
    connection.close()
    connection = http.client.HTTPSConnection("127.0.0.1", state["kube_port"], timeout=10,
                                             context=ssl.create_default_context(cafile=state["ca_file"]))
    connection.request("GET", "/api/v1/namespaces", headers={"Authorization": f"Bearer {state['admin_token']}"})
    assert connection.getresponse().status == 200


def test_api_slow_fault_is_armed_for_the_given_number_of_requests(kube, api_sandbox):
    api_sandbox.control.fault("api-slow", seconds=0.2, count=2)
    kube.core.list_namespace()
    assert api_sandbox.control.status()["api_faults"]["api-slow"]["left"] == 1
    kube.core.list_namespace()
    assert api_sandbox.control.status()["api_faults"]["api-slow"]["left"] == 0


def test_clear_disarms_every_api_fault(kube, api_sandbox):
    api_sandbox.control.fault("api-errors", codes=[503], count=5)
    api_sandbox.control.fault("clear")
    assert len(kube.core.list_namespace().items) == 4


def test_unknown_fault_and_bad_parameters_are_refused_with_what_is_known(api_sandbox):
    with pytest.raises(RuntimeError, match="unknown fault 'no-such-fault'.*api-errors"):
        api_sandbox.control.fault("no-such-fault")
    with pytest.raises(RuntimeError, match="codes"):
        api_sandbox.control.fault("api-errors", codes=["x"])
