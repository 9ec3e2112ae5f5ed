"""The sandbox API server refuses, defaults and normalises writes as kube-apiserver does (issue 9, part A).

Each refusal is checked as a real server answers it: status code, reason, the message's shape
("<Kind>.<group> \"name\" is invalid: <field>: <detail>") and the causes' field paths; each default
and normalisation by what a client reads back, through the official client's typed API.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
from kubernetes import client

from sandbox.kubeapi.strategies import quantity

NS = "default"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"
SERVICES = "/api/v1/namespaces/default/services"
PVCS = "/api/v1/namespaces/default/persistentvolumeclaims"
SECRETS = "/api/v1/namespaces/default/secrets"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
STORAGECLASSES = "/apis/storage.k8s.io/v1/storageclasses"
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
NETWORK_POLICIES = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"
BUDGETS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
APPLY = "application/apply-patch+yaml"


def container(**extra) -> dict:
    return {"name": "asr", "image": "vllm/vllm-openai:v0.8.5", **extra}


def deployment(name: str = "asr", *, labels: dict | None = None, selector: dict | None = None, **container_fields) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": selector or {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container(**container_fields)]}}}}


def pod(name: str = "p", **container_fields) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container(**container_fields)]}}


def job(name: str = "seed", restart_policy: str | None = "Never", image: str = "python:3.12-slim") -> dict:
    spec: dict = {"containers": [{"name": "seed", "image": image}]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"template": {"spec": spec}}}


def gpu_resources(requests: dict | None = None, limits: dict | None = None) -> dict:
    return {"resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}}


def refused(kube, method: str, path: str, body, *, content_type: str = "application/json", query: dict | None = None,
            code: int = 422) -> dict:
    status, answer, _ = kube.request(method, path, body=body, content_type=content_type, query=query)
    assert status == code, answer
    assert answer["kind"] == "Status" and answer["status"] == "Failure"
    return answer


def created(kube, path: str, body: dict) -> dict:
    status, answer, _ = kube.request("POST", path, body=body)
    assert status == 201, answer
    return answer


def fields(answer: dict) -> list[str]:
    return [c["field"] for c in answer["details"]["causes"]]


# -- validation on create ------------------------------------------------------------------------

def test_deployment_whose_selector_does_not_match_the_template_labels_is_422_as_on_eks(kube):
    answer = refused(kube, "POST", DEPLOYMENTS, deployment(labels={"app": "other"}))
    assert answer["reason"] == "Invalid"
    assert answer["message"] == ('Deployment.apps "asr" is invalid: spec.template.metadata.labels: Invalid value: '
                                 'map[string]string{"app":"other"}: `selector` does not match template `labels`')
    assert answer["details"] == {"name": "asr", "group": "apps", "kind": "Deployment", "causes": [
        {"reason": "FieldValueInvalid", "field": "spec.template.metadata.labels",
         "message": 'Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`'}]}
    assert kube.request("GET", f"{DEPLOYMENTS}/asr")[0] == 404


def test_container_without_an_image_is_refused_in_pods_and_in_templates(kube):
    no_image = pod()
    del no_image["spec"]["containers"][0]["image"]
    answer = refused(kube, "POST", PODS, no_image)
    assert answer["message"] == 'Pod "p" is invalid: spec.containers[0].image: Required value'
    template = deployment()
    del template["spec"]["template"]["spec"]["containers"][0]["image"]
    assert fields(refused(kube, "POST", DEPLOYMENTS, template)) == ["spec.template.spec.containers[0].image"]


def test_job_without_a_restart_policy_gets_always_by_default_and_is_refused(kube):
    answer = refused(kube, "POST", JOBS, job(restart_policy=None))
    assert answer["message"] == ('Job.batch "seed" is invalid: spec.template.spec.restartPolicy: Unsupported value: '
                                 '"Always": supported values: "OnFailure", "Never"')
    assert answer["details"]["causes"][0]["reason"] == "FieldValueNotSupported"


def test_fractional_gpu_is_refused_as_not_an_integer(kube):
    body = deployment(**gpu_resources({"nvidia.com/gpu": "0.5"}, {"nvidia.com/gpu": "0.5"}))
    answer = refused(kube, "POST", DEPLOYMENTS, body)
    base = "spec.template.spec.containers[0].resources"
    assert {"field": f"{base}.limits[nvidia.com/gpu]", "reason": "FieldValueInvalid",
            "message": 'Invalid value: "500m": must be an integer'} in answer["details"]["causes"]
    assert f"{base}.requests[nvidia.com/gpu]" in fields(answer)


def test_extended_resource_request_needs_an_equal_limit(kube):
    base = "spec.template.spec.containers[0].resources"
    missing = refused(kube, "POST", DEPLOYMENTS, deployment(**gpu_resources({"nvidia.com/gpu": 1})))
    assert missing["details"]["causes"] == [{"field": f"{base}.limits", "reason": "FieldValueRequired",
                                             "message": "Required value: Limit must be set for non overcommitable resources"}]
    unequal = refused(kube, "POST", DEPLOYMENTS, deployment(**gpu_resources({"nvidia.com/gpu": 1}, {"nvidia.com/gpu": 2})))
    assert unequal["details"]["causes"] == [{"field": f"{base}.requests", "reason": "FieldValueInvalid",
                                             "message": 'Invalid value: "1": must be equal to nvidia.com/gpu limit'}]


def test_requests_above_limits_are_refused(kube):
    answer = refused(kube, "POST", PODS, pod(**gpu_resources({"memory": "16Gi"}, {"memory": "8Gi"})))
    assert answer["message"] == ('Pod "p" is invalid: spec.containers[0].resources.requests: Invalid value: "16Gi": '
                                 "must be less than or equal to memory limit")


def test_malformed_quantity_is_a_400_before_anything_is_stored(kube):
    answer = refused(kube, "POST", DEPLOYMENTS, deployment(**gpu_resources({"cpu": "half"})), code=400)
    assert answer["reason"] == "BadRequest"
    assert answer["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: quantities must match '
                                 "the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    assert kube.request("GET", f"{DEPLOYMENTS}/asr")[0] == 404


def test_every_cause_is_listed_in_one_answer(kube):
    body = pod(volumeMounts=[{"name": "models", "mountPath": "/models"}],
               ports=[{"containerPort": 70000}], livenessProbe={"periodSeconds": 5})
    answer = refused(kube, "POST", PODS, body)
    assert fields(answer) == ["spec.containers[0].ports[0].containerPort", "spec.containers[0].volumeMounts[0].name",
                              "spec.containers[0].livenessProbe"]
    assert answer["message"].startswith('Pod "p" is invalid: [spec.containers[0].ports[0].containerPort: Invalid value: '
                                        "70000: must be between 1 and 65535, inclusive, ")
    assert 'spec.containers[0].volumeMounts[0].name: Not found: "models"' in answer["message"]
    assert "spec.containers[0].livenessProbe: Required value: must specify a handler type" in answer["message"]


def test_ingress_path_without_a_path_type_is_refused(kube):
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "asr"},
            "spec": {"ingressClassName": "alb", "rules": [{"http": {"paths": [
                {"path": "/", "backend": {"service": {"name": "asr", "port": {"number": 80}}}}]}}]}}
    answer = refused(kube, "POST", INGRESSES, body)
    assert answer["message"] == ('Ingress.networking.k8s.io "asr" is invalid: spec.rules[0].http.paths[0].pathType: '
                                 "Required value: pathType must be specified")


def test_a_disruption_budget_with_both_bounds_or_a_bad_percentage_is_refused_and_a_good_one_is_stored(kube):
    def budget(**spec) -> dict:
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "asr"},
                "spec": {"selector": {"matchLabels": {"app": "asr"}}, **spec}}

    answer = refused(kube, "POST", BUDGETS, budget(minAvailable=1, maxUnavailable="150%"))
    assert fields(answer) == ["spec", "spec.maxUnavailable"]
    assert answer["details"]["causes"][0]["message"].endswith(": minAvailable and maxUnavailable cannot be both set")
    assert answer["details"]["causes"][1]["message"] == 'Invalid value: "150%": must not be greater than 100%'
    assert fields(refused(kube, "POST", BUDGETS, budget(minAvailable=-1))) == ["spec.minAvailable"]
    assert fields(refused(kube, "POST", BUDGETS, budget(minAvailable=1, unhealthyPodEvictionPolicy="Never"))) == [
        "spec.unhealthyPodEvictionPolicy"]
    assert created(kube, BUDGETS, budget(minAvailable=1))["spec"]["minAvailable"] == 1


def test_spread_constraints_are_refused_as_upstream_words_them(kube):
    def spreading(**constraint) -> dict:
        body = pod()
        body["spec"]["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                     "whenUnsatisfiable": "DoNotSchedule", **constraint}]
        return body

    answer = refused(kube, "POST", PODS, spreading(maxSkew=0, minDomains=0))
    assert [c["message"] for c in answer["details"]["causes"]] == [
        "Invalid value: 0: must be greater than zero", "Invalid value: 0: must be greater than zero"]
    answer = refused(kube, "POST", PODS, spreading(whenUnsatisfiable="ScheduleAnyway", minDomains=2))
    assert answer["details"]["causes"][0]["message"] == (
        "Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway")
    assert created(kube, PODS, spreading(minDomains=1000))["spec"]["topologySpreadConstraints"][0]["minDomains"] == 1000


def test_network_policy_with_a_bad_cidr_a_mixed_peer_and_a_bad_port_is_refused_a_good_one_gets_its_defaults(kube):
    bad = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "asr"},
           "spec": {"podSelector": {"matchLabels": {"app": "asr"}}, "ingress": [
               {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}},
                         {"ipBlock": {"cidr": "10.0.0.0/16"}, "podSelector": {}}, {}],
                "ports": [{"protocol": "ICMP", "port": 0}]}]}}
    assert refused(kube, "POST", NETWORK_POLICIES, bad)["details"]["causes"] == [
        {"field": "spec.ingress[0].ports[0].protocol", "reason": "FieldValueNotSupported",
         "message": 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'},
        {"field": "spec.ingress[0].ports[0].port", "reason": "FieldValueInvalid",
         "message": "Invalid value: 0: must be between 1 and 65535, inclusive"},
        {"field": "spec.ingress[0].from[0].ipBlock.cidr", "reason": "FieldValueInvalid",
         "message": 'Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'},
        {"field": "spec.ingress[0].from[1]", "reason": "FieldValueForbidden",
         "message": "Forbidden: may not specify both ipBlock and another peer"},
        {"field": "spec.ingress[0].from[2]", "reason": "FieldValueRequired", "message": "Required value: must specify a peer"}]
    good = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "seed"},
            "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 443}]}]}}
    spec = created(kube, NETWORK_POLICIES, good)["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"][0]["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_claim_without_a_storage_request_and_a_class_with_an_unknown_reclaim_policy_are_refused(kube):
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {}}}}
    assert fields(refused(kube, "POST", PVCS, claim)) == ["spec.resources[storage]"]
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "efs"},
          "provisioner": "efs.csi.aws.com", "reclaimPolicy": "Keep"}
    assert refused(kube, "POST", STORAGECLASSES, sc)["details"]["causes"] == [
        {"field": "reclaimPolicy", "reason": "FieldValueNotSupported",
         "message": 'Unsupported value: "Keep": supported values: "Delete", "Retain"'}]


def test_secret_data_must_be_base64_and_config_keys_must_be_valid(kube):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "data": {"HF_TOKEN": "not base64!"}}
    answer = refused(kube, "POST", SECRETS, secret, code=400)
    assert answer["message"] == ('Secret in version "v1" cannot be handled as a Secret: '
                                 "illegal base64 data at input byte 3")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"bad key": "v"}}
    assert fields(refused(kube, "POST", CONFIGMAPS, cm)) == ["data[bad key]"]


def test_dry_run_create_is_validated_like_a_real_create(kube):
    answer = refused(kube, "POST", DEPLOYMENTS, deployment(labels={"app": "other"}), query={"dryRun": "All"})
    assert fields(answer) == ["spec.template.metadata.labels"]
    answer = refused(kube, "PATCH", f"{DEPLOYMENTS}/asr", deployment(labels={"app": "other"}), content_type=APPLY,
                     query={"fieldManager": "test", "dryRun": "All"})
    assert fields(answer) == ["spec.template.metadata.labels"]


# -- immutability ---------------------------------------------------------------------------------

SELECTOR_IMMUTABLE = ('Deployment.apps "asr" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:'
                      'map[string]string{"app":"asr", "track":"canary"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
                      "field is immutable")


@pytest.mark.parametrize("how", ["apply", "apply-dry-run", "merge", "strategic", "json", "put"])
def test_deployment_selector_cannot_change_through_any_write(kube, how):
    created(kube, DEPLOYMENTS, deployment())
    changed = deployment(labels={"app": "asr", "track": "canary"},
                         selector={"matchLabels": {"app": "asr", "track": "canary"}})
    path = f"{DEPLOYMENTS}/asr"
    if how.startswith("apply"):
        query = {"fieldManager": "test", "force": "true", **({"dryRun": "All"} if how == "apply-dry-run" else {})}
        answer = refused(kube, "PATCH", path, changed, content_type=APPLY, query=query)
    elif how in ("merge", "strategic"):
        answer = refused(kube, "PATCH", path, {"spec": changed["spec"]},
                         content_type="application/merge-patch+json" if how == "merge" else
                         "application/strategic-merge-patch+json")
    elif how == "json":
        answer = refused(kube, "PATCH", path, [{"op": "add", "path": "/spec/selector/matchLabels/track", "value": "canary"},
                                               {"op": "add", "path": "/spec/template/metadata/labels/track", "value": "canary"}],
                         content_type="application/json-patch+json")
    else:
        live = kube.request("GET", path)[1]
        live["spec"] = changed["spec"]
        answer = refused(kube, "PUT", path, live)
    assert answer["message"] == SELECTOR_IMMUTABLE
    assert fields(answer) == ["spec.selector"]


def test_job_template_and_selector_are_immutable(kube):
    created(kube, JOBS, job())
    answer = refused(kube, "PATCH", f"{JOBS}/seed", {"spec": {"template": {"spec": {"containers": [
        {"name": "seed", "image": "python:3.13-slim"}]}}}}, content_type="application/strategic-merge-patch+json")
    assert fields(answer) == ["spec.template"]
    assert answer["message"].endswith(": field is immutable")
    answer = refused(kube, "PATCH", f"{JOBS}/seed", {"spec": {"selector": {"matchLabels": {"app": "x"}}}},
                     content_type="application/merge-patch+json")
    assert "spec.selector" in fields(answer)


def test_service_cluster_ip_may_not_change_once_set(kube):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "asr"},
           "spec": {"selector": {"app": "asr"}, "ports": [{"port": 80, "targetPort": 8000}]}}
    ip = created(kube, SERVICES, svc)["spec"]["clusterIP"]
    answer = refused(kube, "PATCH", f"{SERVICES}/asr", {"spec": {"clusterIP": "None"}},
                     content_type="application/merge-patch+json")
    assert answer["message"] == ('Service "asr" is invalid: spec.clusterIPs[0]: Invalid value: []string{"None"}: '
                                 "may not change once set")
    # Leaving the allocated address out of a write keeps it, as upstream does.
    status, kept, _ = kube.request("PUT", f"{SERVICES}/asr", body={**svc, "metadata": {"name": "asr"}})
    assert status == 200 and kept["spec"]["clusterIP"] == ip


def test_storage_class_parameters_and_provisioner_are_fixed_at_creation(kube):
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "efs"},
          "provisioner": "efs.csi.aws.com", "parameters": {"provisioningMode": "efs-ap"}}
    created(kube, STORAGECLASSES, sc)
    answer = refused(kube, "PATCH", f"{STORAGECLASSES}/efs", {"parameters": {"basePath": "/x"},
                                                               "volumeBindingMode": "WaitForFirstConsumer"},
                     content_type="application/merge-patch+json")
    assert answer["details"]["causes"] == [
        {"field": "parameters", "reason": "FieldValueForbidden", "message": "Forbidden: updates to parameters are forbidden."},
        {"field": "volumeBindingMode", "reason": "FieldValueInvalid",
         "message": 'Invalid value: "WaitForFirstConsumer": field is immutable'}]


def test_claim_storage_class_is_immutable(kube):
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "efs-sc",
                      "resources": {"requests": {"storage": "100Gi"}}}}
    created(kube, PVCS, claim)
    answer = refused(kube, "PATCH", f"{PVCS}/models", {"spec": {"storageClassName": "gp3"}},
                     content_type="application/merge-patch+json")
    assert answer["message"] == ('PersistentVolumeClaim "models" is invalid: spec: Forbidden: spec is immutable after '
                                 "creation except resources.requests and volumeAttributesClassName for bound claims")


def test_pod_containers_are_immutable_but_their_image_is_not(kube):
    created(kube, PODS, pod())
    answer = refused(kube, "PATCH", f"{PODS}/p", {"spec": {"containers": [{"name": "asr", "args": ["--port", "9000"]}]}},
                     content_type="application/strategic-merge-patch+json")
    assert answer["message"].startswith('Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other '
                                        "than `spec.containers[*].image`")
    status, _, _ = kube.request("PATCH", f"{PODS}/p", body={"spec": {"containers": [{"name": "asr", "image": "vllm:v2"}]}},
                                content_type="application/strategic-merge-patch+json")
    assert status == 200


def test_immutable_config_map_keeps_its_data(kube):
    created(kube, CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                               "data": {"k": "v"}, "immutable": True})
    answer = refused(kube, "PATCH", f"{CONFIGMAPS}/c", {"data": {"k": "w"}}, content_type="application/merge-patch+json")
    assert answer["details"]["causes"] == [{"field": "data", "reason": "FieldValueForbidden",
                                            "message": "Forbidden: field is immutable when `immutable` is set"}]


# -- defaults and normalisation --------------------------------------------------------------------

def test_numeric_quantities_are_stored_canonical_so_typed_reads_work(kube):
    body = deployment(**gpu_resources({"cpu": 0.5, "memory": "1.5Gi", "nvidia.com/gpu": 1},
                                      {"memory": "2048Mi", "nvidia.com/gpu": 1}))
    created(kube, DEPLOYMENTS, body)
    typed = kube.apps.read_namespaced_deployment("asr", NS)
    resources = typed.spec.template.spec.containers[0].resources
    assert resources.requests == {"cpu": "500m", "memory": "1536Mi", "nvidia.com/gpu": "1"}
    assert resources.limits == {"memory": "2Gi", "nvidia.com/gpu": "1"}
    created(kube, PODS, pod(**gpu_resources(None, {"cpu": 2, "nvidia.com/gpu": 1})))
    [listed] = kube.core.list_namespaced_pod(NS).items
    # A pod's limits without requests request the limits (SetDefaults_Pod).
    assert listed.spec.containers[0].resources.requests == {"cpu": "2", "nvidia.com/gpu": "1"}


def test_deployment_reads_back_with_the_servers_defaults(kube):
    created(kube, DEPLOYMENTS, deployment(image="vllm/vllm-openai", ports=[{"containerPort": 8000}],
                                          readinessProbe={"httpGet": {"port": 8000}}))
    typed = kube.apps.read_namespaced_deployment("asr", NS)
    assert typed.spec.replicas == 1 and typed.spec.revision_history_limit == 10
    assert typed.spec.progress_deadline_seconds == 600
    assert (typed.spec.strategy.type, typed.spec.strategy.rolling_update.max_surge,
            typed.spec.strategy.rolling_update.max_unavailable) == ("RollingUpdate", "25%", "25%")
    spec = typed.spec.template.spec
    assert (spec.restart_policy, spec.dns_policy, spec.scheduler_name, spec.termination_grace_period_seconds) == \
        ("Always", "ClusterFirst", "default-scheduler", 30)
    c = spec.containers[0]
    assert c.image_pull_policy == "Always"  # no tag means :latest
    assert (c.termination_message_path, c.termination_message_policy) == ("/dev/termination-log", "File")
    assert c.ports[0].protocol == "TCP"
    probe = c.readiness_probe
    assert (probe.timeout_seconds, probe.period_seconds, probe.success_threshold, probe.failure_threshold,
            probe.http_get.path, probe.http_get.scheme) == (1, 10, 1, 3, "/", "HTTP")


@pytest.mark.parametrize("image, policy", [("vllm/vllm-openai:v0.8.5", "IfNotPresent"), ("nginx:latest", "Always"),
                                           ("registry:5000/asr", "Always"), ("asr@sha256:" + "0" * 64, "IfNotPresent")])
def test_image_pull_policy_defaults_by_tag(kube, image, policy):
    assert created(kube, PODS, pod(image=image))["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_job_gets_upstream_defaults_and_a_generated_selector(kube):
    answer = created(kube, JOBS, job())
    uid, spec = answer["metadata"]["uid"], answer["spec"]
    assert {k: spec[k] for k in ("backoffLimit", "completions", "parallelism", "completionMode", "suspend",
                                 "manualSelector", "podReplacementPolicy")} == \
        {"backoffLimit": 6, "completions": 1, "parallelism": 1, "completionMode": "NonIndexed", "suspend": False,
         "manualSelector": False, "podReplacementPolicy": "TerminatingOrFailed"}
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"] == {"batch.kubernetes.io/controller-uid": uid,
                                                      "batch.kubernetes.io/job-name": "seed",
                                                      "controller-uid": uid, "job-name": "seed"}
    typed = client.BatchV1Api(kube.api).read_namespaced_job("seed", NS)
    assert typed.spec.selector.match_labels == spec["selector"]["matchLabels"]


def test_service_reads_back_with_address_families_and_target_port(kube):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "asr"},
           "spec": {"selector": {"app": "asr"}, "ports": [{"port": 80}]}}
    spec = created(kube, SERVICES, svc)["spec"]
    assert (spec["type"], spec["sessionAffinity"], spec["ipFamilies"], spec["ipFamilyPolicy"],
            spec["internalTrafficPolicy"]) == ("ClusterIP", "None", ["IPv4"], "SingleStack", "Cluster")
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["clusterIPs"] == [spec["clusterIP"]]


def test_secret_string_data_is_folded_into_data(kube):
    answer = created(kube, SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"},
                                     "data": {"A": "YQ=="}, "stringData": {"HF_TOKEN": "hf_x"}})
    assert "stringData" not in answer
    assert answer["data"] == {"A": "YQ==", "HF_TOKEN": "aGZfeA=="} and answer["type"] == "Opaque"


def test_claim_and_class_get_their_defaults(kube):
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "102400Mi"}}}}
    answer = created(kube, PVCS, claim)
    assert answer["spec"]["volumeMode"] == "Filesystem" and answer["status"] == {"phase": "Pending"}
    assert answer["spec"]["resources"]["requests"]["storage"] == "100Gi"
    sc = created(kube, STORAGECLASSES, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                        "metadata": {"name": "efs"}, "provisioner": "efs.csi.aws.com"})
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")


def test_dry_run_answers_with_the_defaults_a_real_write_would_store(kube):
    status, predicted, _ = kube.request("PATCH", f"{DEPLOYMENTS}/asr", body=deployment(), content_type=APPLY,
                                        query={"fieldManager": "test", "dryRun": "All"})
    assert status == 201
    stored = created(kube, DEPLOYMENTS, deployment())
    strip = lambda o: {k: v for k, v in o.items() if k != "metadata"}  # noqa: E731
    assert strip(predicted) == strip(stored)


@pytest.mark.parametrize("written, stored", [
    ("0.5", "500m"), (0.5, "500m"), (1, "1"), ("1000m", "1"), ("1000", "1k"), ("1500", "1500"), ("100Mi", "100Mi"),
    ("1024Mi", "1Gi"), ("1.5Gi", "1536Mi"), ("16Gi", "16Gi"), ("1e3", "1e3"), ("100u", "1m"), ("0", "0")])
def test_quantities_are_stored_in_apimachinerys_canonical_form(written, stored):
    assert str(quantity.parse(written).round_up_to_milli()) == stored


def test_defaulting_is_idempotent_so_a_reapply_changes_nothing(kube):
    body = deployment(**gpu_resources({"cpu": 0.5}))
    query = {"fieldManager": "test"}
    first = kube.request("PATCH", f"{DEPLOYMENTS}/asr", body=body, content_type=APPLY, query=query)[1]
    time.sleep(1.1)  # into the next second: a no-op apply must not even move its managedFields time
    again = kube.request("PATCH", f"{DEPLOYMENTS}/asr", body=copy.deepcopy(body), content_type=APPLY, query=query)[1]
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert json.dumps(again["spec"], sort_keys=True) == json.dumps(first["spec"], sort_keys=True)


def test_pod_written_through_the_api_is_pending_with_its_qos_class_until_scheduled(kube):
    answer = created(kube, PODS, pod(**gpu_resources(None, {"cpu": "1", "memory": "1Gi"})))
    assert answer["status"] == {"phase": "Pending", "qosClass": "Guaranteed"}
    assert answer["spec"]["enableServiceLinks"] is True
