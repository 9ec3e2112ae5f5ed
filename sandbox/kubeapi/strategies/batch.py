"""batch/v1: Job.

Defaults after pkg/apis/batch/v1/defaults.go (SetDefaults_Job), the generated selector and
template labels after pkg/registry/batch/job/strategy.go (generateSelector: the
`batch.kubernetes.io/controller-uid` selector and the job-name/controller-uid labels, both the
prefixed and the legacy ones), validation after pkg/apis/batch/validation/validation.go
(ValidateJob, ValidateJobSpecUpdate: selector, template, completions and completionMode are
immutable; restartPolicy only OnFailure or Never).
"""

from __future__ import annotations

from .base import Context, Strategy, register, spec_of
from .fields import as_dict, immutable, invalid, non_negative, not_supported
from .pods import default_pod_template, pod_template_causes
from .selectors import selector_causes, selector_immutable, template_match_causes

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
JOB_RESTART_POLICIES = ["OnFailure", "Never"]
COMPLETION_MODES = ["NonIndexed", "Indexed"]


@register
class JobStrategy(Strategy):
    kind = "Job"

    def default(self, obj: dict) -> None:
        spec = spec_of(obj)
        if spec is None:
            return
        if "completions" not in spec and "parallelism" not in spec:
            spec["completions"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
        template_labels = as_dict(as_dict(as_dict(spec.get("template")).get("metadata")).get("labels"))
        meta = obj.setdefault("metadata", {})
        if template_labels and not meta.get("labels"):
            meta["labels"] = dict(template_labels)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
        spec.setdefault("manualSelector", False)
        default_pod_template(spec.get("template"))

    def prepare_for_create(self, obj: dict, ctx: Context) -> None:
        spec = spec_of(obj)
        if spec is None or spec.get("manualSelector") is True or not isinstance(spec.get("template"), dict):
            return
        meta = obj["metadata"]
        labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        if isinstance(labels, dict):
            for key in (LEGACY_JOB_NAME, JOB_NAME):
                labels.setdefault(key, meta.get("name", ""))
            for key in (LEGACY_CONTROLLER_UID, CONTROLLER_UID):
                labels.setdefault(key, meta.get("uid", ""))
        selector = spec.get("selector")
        if selector is None:
            selector = spec["selector"] = {}
        if isinstance(selector, dict):
            selector.setdefault("matchLabels", {}).setdefault(CONTROLLER_UID, meta.get("uid", ""))

    def validate(self, obj: dict) -> list[dict]:
        spec = spec_of(obj)
        if spec is None:
            return []
        causes: list[dict] = []
        for key in ("parallelism", "completions", "backoffLimit"):
            causes += non_negative(f"spec.{key}", spec.get(key))
        deadline = spec.get("activeDeadlineSeconds")
        if isinstance(deadline, int) and deadline <= 0:
            causes.append(invalid("spec.activeDeadlineSeconds", deadline, "must be greater than 0"))
        causes += selector_causes(spec.get("selector"), "spec.selector", empty_message=None)
        causes += template_match_causes(spec.get("selector"), spec.get("template"), "spec.template")
        causes += pod_template_causes(spec.get("template"), "spec.template")
        restart = as_dict(as_dict(spec.get("template")).get("spec")).get("restartPolicy")
        if restart not in JOB_RESTART_POLICIES:
            causes.append(not_supported("spec.template.spec.restartPolicy", restart, JOB_RESTART_POLICIES))
        elif spec.get("podFailurePolicy") is not None and restart != "Never":  # pkg/apis/batch/validation
            causes.append(invalid("spec.template.spec.restartPolicy", restart,
                                  'only "Never" is supported when podFailurePolicy is specified'))
        if spec.get("completionMode") not in COMPLETION_MODES:
            causes.append(not_supported("spec.completionMode", spec.get("completionMode"), COMPLETION_MODES))
        return causes

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        spec, old_spec = spec_of(obj) or {}, spec_of(old) or {}
        causes = self.validate(obj)
        causes += selector_immutable(spec.get("selector"), old_spec.get("selector"))
        if spec.get("template") != old_spec.get("template"):
            # Upstream prints the whole internal PodTemplateSpec here; the sandbox names its type only.
            causes += immutable("spec.template", spec.get("template"), old_spec.get("template"),
                                shown="core.PodTemplateSpec{...}")
        for key in ("completions", "completionMode", "podFailurePolicy"):
            causes += immutable(f"spec.{key}", spec.get(key), old_spec.get(key))
        return causes
