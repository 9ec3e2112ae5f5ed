"""Step 0, rights: does the identity the run uses have every right `files/deployer-rbac.yaml` grants?

The role file is the one list of what the playbook needs (a new API call means a new verb there).
Asking before writing turns a 403 halfway through step 6 into one message before step 1 that names
every missing verb and resource. One SelfSubjectRulesReview per namespace the run touches answers
most clusters (as `kubectl auth can-i --list` does); where the review is incomplete (EKS's access
entries are a webhook authorizer, which rules reviews cannot list: apiserver's
authorization/authorizer rules.go), each right not listed is asked for with a SelfSubjectAccessReview.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubeops.client import KubeApiError
from qwen_speech.manifests import load_all

ROLE_FILE = Path(__file__).resolve().parent.parent / "files" / "deployer-rbac.yaml"
# Resources of the role file that live outside any namespace.
CLUSTER_SCOPED = {"nodes", "namespaces", "storageclasses", "csidrivers", "ingressclasses", "nodepools",
                  "persistentvolumes", "clusterpolicies", "ec2nodeclasses"}
LOCK_NAMESPACE = "kube-system"  # the deploy lock's Lease (tasks/lock.py)


@dataclass(frozen=True)
class Right:
    verb: str
    group: str
    resource: str  # may be "resource/subresource"
    namespace: str  # "" for cluster-scoped
    name: str = ""

    def __str__(self) -> str:
        what = self.resource if not self.group else f"{self.resource.split('/')[0]}.{self.group}" + (
            f"/{self.resource.split('/', 1)[1]}" if "/" in self.resource else "")
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {what}" + (f" {self.name!r}" if self.name else "") + where


# A ClusterRole annotated with this is needed only when the setting it names is true.
NEEDED_WITH = "qwen3-speech/needed-with"


def needed_rights(app_namespace: str, role_file: Path = ROLE_FILE, settings_on: frozenset[str] = frozenset()) -> list[Right]:
    """Every (verb, resource, name) the shipped ClusterRoles grant, placed in the namespace the run uses it in;
    a role needed only with a setting (its `qwen3-speech/needed-with` annotation) counts when that setting is on."""
    rights: list[Right] = []
    for doc in load_all(role_file.read_text()):
        if not doc or doc.get("kind") != "ClusterRole":
            continue
        needed_with = ((doc.get("metadata") or {}).get("annotations") or {}).get(NEEDED_WITH)
        if needed_with and needed_with not in settings_on:
            continue
        for rule in doc.get("rules") or []:
            for group in rule.get("apiGroups") or [""]:
                for resource in rule.get("resources") or []:
                    base = resource.split("/")[0]
                    namespace = ("" if base in CLUSTER_SCOPED else
                                 LOCK_NAMESPACE if base == "leases" else app_namespace)
                    for verb in rule.get("verbs") or []:
                        for name in rule.get("resourceNames") or [""]:
                            rights.append(Right(verb, group, resource, namespace, name))
    return list(dict.fromkeys(rights))


def _matches(values: list | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)


def _rule_grants(rule: dict, right: Right) -> bool:
    base = right.resource.split("/")[0]
    sub = right.resource.split("/", 1)[1] if "/" in right.resource else ""
    resources = rule.get("resources") or []
    resource_ok = (right.resource in resources or "*" in resources
                   or (sub and f"*/{sub}" in resources) or (not sub and base in resources))
    names = rule.get("resourceNames") or []
    return (_matches(rule.get("verbs"), right.verb) and _matches(rule.get("apiGroups"), right.group)
            and resource_ok and (not names or (right.name and right.name in names)))


def missing_rights(kube, rights: list[Right]) -> list[Right]:
    """The rights the cluster does not grant the caller (reviews only: nothing is stored)."""
    by_namespace: dict[str, list[Right]] = {}
    for right in rights:
        by_namespace.setdefault(right.namespace, []).append(right)
    missing: list[Right] = []
    for namespace, wanted in by_namespace.items():
        review = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            # A cluster-scoped right shows in any namespace's review; "default" always exists. Not
            # folded into the app namespace's review: a RoleBinding there would list cluster-scoped
            # rules it does not grant (a namespace's review adds that namespace's RoleBindings).
            "spec": {"namespace": namespace or "default"}})
        status = review.get("status") or {}
        rules = status.get("resourceRules") or []
        unlisted = [r for r in wanted if not any(_rule_grants(rule, r) for rule in rules)]
        if not status.get("incomplete"):
            missing.extend(unlisted)
            continue
        for right in unlisted:
            group_resource = right.resource.split("/")
            attributes = {"verb": right.verb, "group": right.group, "resource": group_resource[0],
                          "subresource": group_resource[1] if len(group_resource) > 1 else "",
                          "namespace": right.namespace, "name": right.name}
            answer = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}}})
            if not (answer.get("status") or {}).get("allowed"):
                missing.append(right)
    return missing


def check_rights(kube, app_namespace: str, settings_on: frozenset[str] = frozenset()) -> str | None:
    """None when every right is granted; otherwise one message naming what is missing and how to grant it.

    + settings_on: the boolean settings that are true (a role annotated needed-with one of them counts)
    """
    try:
        missing = missing_rights(kube, needed_rights(app_namespace, settings_on=settings_on))
    except KubeApiError as err:
        if err.status == 404:  # an API server without the review APIs: the writes themselves will tell
            return None
        raise
    if not missing:
        return None
    return (f"the identity this run uses lacks {len(missing)} right(s) the playbook needs, so nothing was written:\n"
            + "\n".join(f"      {right}" for right in missing)
            + f"\n    grant them: kubectl apply -f {ROLE_FILE.relative_to(ROLE_FILE.parent.parent)} and put the "
              "identity in group qwen3-speech-deployers (on EKS: an access entry with that Kubernetes group; "
              "README, \"Least-privilege access\")")
