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
    assert [c.metadata.name for c in kube.core.list_namespaced_config_map("default").items] == ["kube-root-ca.crt",
                                                                                                  "third"]


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


def _codes_of(kube, api_sandbox, requests: int) -> list[int]:
    mark = api_sandbox.control.audit_mark()
    for _ in range(requests):
        kube.request("POST", "/api/v1/namespaces/default/configmaps", body=config_map("x"))
    return [r["code"] for r in api_sandbox.control.audit_since(mark)]


def test_api_errors_armed_at_a_rate_fail_about_that_share_of_requests_repeatably_for_one_seed(kube, api_sandbox):
    api_sandbox.control.fault("api-errors", rate=0.3, codes=[500, 503, 429], seed=11, retry_after=0)
    first = _codes_of(kube, api_sandbox, 60)
    api_sandbox.control.fault("api-errors", rate=0.3, codes=[500, 503, 429], seed=11, retry_after=0)
    again = _codes_of(kube, api_sandbox, 60)
    failed = [c for c in first if c >= 500 or c == 429]
    assert 5 <= len(failed) <= 35, first  # a rate, not a burst: some fail, most pass
    assert {500, 503, 429} <= set(failed)
    # The same seed gives the same sequence of faults (201 for the first create, 409 after).
    assert [c in (500, 503, 429) for c in first] == [c in (500, 503, 429) for c in again]
    assert api_sandbox.control.status()["api_faults"]["api-errors"]["rate"] == 0.3  # armed until cleared


def test_a_rate_fault_with_a_path_filter_spares_every_other_path(kube, api_sandbox):
    api_sandbox.control.fault("api-drop", rate=1.0, path=["/configmaps/only-this"])
    for _ in range(5):
        assert kube.request("GET", "/api/v1/namespaces")[0] == 200
    api_sandbox.control.fault("clear")


def test_a_dropped_answer_after_the_server_processed_it_leaves_the_write_done(kube, api_sandbox):
    api_sandbox.control.fault("api-drop", count=1, after=True)
    with pytest.raises(Exception):
        kube.core.create_namespaced_config_map("default", config_map("written-unheard"))
    record = api_sandbox.control.audit()[-1]
    assert record["fault"] == "api-drop" and record["after"] and record["code"] == 201
    assert kube.core.read_namespaced_config_map("written-unheard", "default").data == {"k": "v"}
    # The client's retry of the create now meets its own object.
    status, body, _ = kube.request("POST", "/api/v1/namespaces/default/configmaps", body=config_map("written-unheard"))
    assert status == 409 and body["reason"] == "AlreadyExists"


def test_an_error_after_the_server_processed_it_hides_a_done_write_behind_a_5xx(kube, api_sandbox):
    api_sandbox.control.fault("api-errors", codes=[504], count=1, after=True)
    status, body, _ = kube.request("POST", "/api/v1/namespaces/default/configmaps", body=config_map("done-anyway"))
    assert status == 504 and body["reason"] == "Timeout"
    assert kube.core.read_namespaced_config_map("done-anyway", "default")


def test_rate_parameters_are_checked_naming_the_value(api_sandbox):
    with pytest.raises(RuntimeError, match="rate=1.5 must be a probability"):
        api_sandbox.control.fault("api-drop", rate=1.5)
    with pytest.raises(RuntimeError, match="after='maybe' must be true or false"):
        api_sandbox.control.fault("api-drop", rate=0.1, after="maybe")
