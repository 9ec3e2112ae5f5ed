"""apps/v1: Deployment, ReplicaSet, DaemonSet.

Defaults after pkg/apis/apps/v1/defaults.go (SetDefaults_Deployment, _DaemonSet, _ReplicaSet),
validation after pkg/apis/apps/validation/validation.go (ValidateDeploymentSpec,
ValidateReplicaSetSpec, ValidateDaemonSetSpec and their *Update: the selector is immutable in
apps/v1), strategies after pkg/registry/apps/{deployment,replicaset,daemonset}/strategy.go.
"""

from __future__ import annotations

from .base import Strategy, register, spec_of
from .fields import as_dict, forbidden, int_or_percent_causes, invalid, non_negative, not_supported
from .pods import default_pod_template, pod_template_causes
from .selectors import selector_causes, selector_immutable, template_match_causes

DEPLOYMENT_STRATEGIES = ["Recreate", "RollingUpdate"]
DAEMONSET_STRATEGIES = ["OnDelete", "RollingUpdate"]


def _workload_causes(spec: dict | None, kind_word: str) -> list[dict]:
    """What Deployments, ReplicaSets and DaemonSets share: selector, template, restartPolicy Always."""
    if spec is None:
        return []
    causes = non_negative("spec.replicas", spec.get("replicas")) if "replicas" in spec else []
    causes += non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    causes += non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    causes += selector_causes(spec.get("selector"), "spec.selector", empty_message=f"empty selector is invalid for {kind_word}")
    causes += template_match_causes(spec.get("selector"), spec.get("template"), "spec.template")
    causes += pod_template_causes(spec.get("template"), "spec.template")
    restart = as_dict(as_dict(spec.get("template")).get("spec")).get("restartPolicy")
    if restart not in (None, "Always"):
        causes.append(not_supported("spec.template.spec.restartPolicy", restart, ["Always"]))
    return causes


class _Workload(Strategy):
    kind_word = "deployment"

    def validate(self, obj: dict) -> list[dict]:
        return _workload_causes(spec_of(obj), self.kind_word)

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        return self.validate(obj) + selector_immutable((spec_of(obj) or {}).get("selector"),
                                                       (spec_of(old) or {}).get("selector"))


@register
class DeploymentStrategy(_Workload):
    kind = "Deployment"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is None:
            return
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        default_pod_template(spec.get("template"))

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        causes = super().validate(obj)
        if spec is None:
            return causes
        strategy = as_dict(spec.get("strategy"))
        if strategy.get("type") not in DEPLOYMENT_STRATEGIES:
            causes.append(not_supported("spec.strategy.type", strategy.get("type"), DEPLOYMENT_STRATEGIES))
        elif strategy["type"] == "Recreate" and strategy.get("rollingUpdate") is not None:
            causes.append(forbidden("spec.strategy.rollingUpdate",
                                    "may not be specified when strategy `type` is 'Recreate'"))
        rolling = as_dict(strategy.get("rollingUpdate"))
        causes += int_or_percent_causes(rolling.get("maxUnavailable"), "spec.strategy.rollingUpdate.maxUnavailable")
        causes += int_or_percent_causes(rolling.get("maxSurge"), "spec.strategy.rollingUpdate.maxSurge")
        if rolling.get("maxUnavailable") in (0, "0%") and rolling.get("maxSurge") in (0, "0%"):
            causes.append(invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling["maxUnavailable"],
                                  "may not be 0 when `maxSurge` is 0"))
        deadline = spec.get("progressDeadlineSeconds")
        causes += non_negative("spec.progressDeadlineSeconds", deadline)
        if isinstance(deadline, int) and deadline <= (spec.get("minReadySeconds") or 0):
            causes.append(invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"))
        return causes


@register
class ReplicaSetStrategy(_Workload):
    kind = "ReplicaSet"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is not None:
            spec.setdefault("replicas", 1)
            default_pod_template(spec.get("template"))


@register
class DaemonSetStrategy(_Workload):
    kind = "DaemonSet"
    kind_word = "daemonset"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is None:
            return
        strategy = spec.setdefault("updateStrategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", 1)
                    rolling.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        default_pod_template(spec.get("template"))

    def validate(self, obj: dict) -> list[dict]:
        causes = super().validate(obj)
        strategy = as_dict((spec_of(obj) or {}).get("updateStrategy"))
        if strategy and strategy.get("type") not in DAEMONSET_STRATEGIES:
            causes.append(not_supported("spec.updateStrategy.type", strategy.get("type"), DAEMONSET_STRATEGIES))
        return causes
