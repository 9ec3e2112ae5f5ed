"""policy/v1: PodDisruptionBudget.

Validation after pkg/apis/policy/validation/validation.go ValidatePodDisruptionBudgetSpec: not
both minAvailable and maxUnavailable, each a non-negative integer or a percentage of at most
100%, a well-formed selector (an empty one selects every pod of the namespace in policy/v1), and
unhealthyPodEvictionPolicy one of the two policies. The spec is mutable in policy/v1.
"""

from __future__ import annotations

from .base import Strategy, register, spec_of
from .fields import as_dict, int_or_percent_causes, invalid, not_supported
from .selectors import selector_causes

EVICTION_POLICIES = ["AlwaysAllow", "IfHealthyBudget"]


@register
class PodDisruptionBudgetStrategy(Strategy):
    kind = "PodDisruptionBudget"

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return []
        causes = []
        if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
            causes.append(invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set"))
        causes += int_or_percent_causes(spec.get("minAvailable"), "spec.minAvailable", at_most_100=True)
        causes += int_or_percent_causes(spec.get("maxUnavailable"), "spec.maxUnavailable", at_most_100=True)
        if spec.get("selector") is not None:
            causes += selector_causes(as_dict(spec.get("selector")), "spec.selector", empty_message=None)
        policy = spec.get("unhealthyPodEvictionPolicy")
        if policy is not None and policy not in EVICTION_POLICIES:
            causes.append(not_supported("spec.unhealthyPodEvictionPolicy", policy, EVICTION_POLICIES))
        return causes
