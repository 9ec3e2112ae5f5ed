"""Can a Karpenter NodePool (karpenter.sh/v1) make the GPU node the serving pods need?

Read only; preflight asks. Karpenter makes a node for a pending pod from a NodePool whose
template the pod is compatible with, read here as upstream does:

- requirements: `spec.template.spec.requirements` layered with `spec.template.metadata.labels`
  (each label an `In` requirement) and the pool's own `karpenter.sh/nodepool` label; a key named
  twice is the intersection (kubernetes-sigs/karpenter pkg/controllers/provisioning/scheduling/
  nodeclaimtemplate.go NewNodeClaimTemplate).
- operators In, NotIn, Exists, DoesNotExist, Gt, Lt (and v1's Gte, Lte) with Karpenter's meaning:
  Gt/Lt are exclusive integer bounds, NotIn and the bounds admit a missing label only as far as
  `Has` says (kubernetes-sigs/karpenter pkg/scheduling/requirement.go NewRequirementWithFlexibility,
  Has, Intersection).
- a pod's nodeSelector label must be one the pool defines, unless it is a well-known label
  (then only an intersection is needed): "label %q does not have known values"
  (pkg/scheduling/requirements.go Compatible; the well-known labels are pkg/apis/v1/labels.go
  WellKnownLabels plus the AWS provider's, all under karpenter.k8s.aws/, aws/karpenter-provider-aws
  pkg/apis/v1/labels.go).
- every taint of `spec.template.spec.taints` must be tolerated, whatever its effect;
  `startupTaints` are not (pkg/scheduling/taints.go Tolerates; pkg/apis/v1/nodepool.go).

Instance types: the T4 ones, with the labels the AWS provider gives them (aws/karpenter-provider-aws
website/content/en/preview/reference/instance-types.md; pkg/providers/instancetype/types.go:
instance-family is the type's prefix, instance-gpu-name the lower-kebab GPU name, "t4").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

FAMILY = "karpenter.k8s.aws/instance-family"
GPU_NAME = "karpenter.k8s.aws/instance-gpu-name"
GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
# kubernetes-sigs/karpenter pkg/apis/v1/labels.go WellKnownLabels; the AWS provider adds its own,
# all in the karpenter.k8s.aws/ domain.
WELL_KNOWN = {NODEPOOL_LABEL, "karpenter.sh/capacity-type", "topology.kubernetes.io/zone",
              "topology.kubernetes.io/region", INSTANCE_TYPE, "kubernetes.io/arch", "kubernetes.io/os",
              "node.kubernetes.io/windows-build"}
WELL_KNOWN_DOMAIN = "karpenter.k8s.aws/"
# The g4dn types (one to eight NVIDIA T4): vCPUs, memory MiB, GPUs (instance-types.md).
T4_TYPES = {"g4dn.xlarge": (4, 16384, 1), "g4dn.2xlarge": (8, 32768, 1), "g4dn.4xlarge": (16, 65536, 1),
            "g4dn.8xlarge": (32, 131072, 1), "g4dn.16xlarge": (64, 262144, 1), "g4dn.12xlarge": (48, 196608, 4),
            "g4dn.metal": (96, 393216, 8)}
T4_FIX = (f'add {{"key": "{FAMILY}", "operator": "In", "values": ["g4dn"]}} (or "{INSTANCE_TYPE}" In '
          '["g4dn.xlarge"]) to spec.template.spec.requirements')
GPU_BOUND_FIX = f'add {{"key": "{GPU_COUNT}", "operator": "Lt", "values": ["2"]}} to spec.template.spec.requirements'


def t4_labels(instance_type: str) -> dict[str, str]:
    """The labels a node of this T4 instance type carries (what requirements are matched against)."""
    cpu, memory, gpus = T4_TYPES[instance_type]
    family, size = instance_type.split(".")
    return {INSTANCE_TYPE: instance_type, FAMILY: family, "karpenter.k8s.aws/instance-category": "g",
            "karpenter.k8s.aws/instance-generation": "4", "karpenter.k8s.aws/instance-size": size,
            "karpenter.k8s.aws/instance-cpu": str(cpu), "karpenter.k8s.aws/instance-memory": str(memory),
            GPU_NAME: "t4", "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia", GPU_COUNT: str(gpus),
            "karpenter.k8s.aws/instance-gpu-memory": "16384", "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"}


@dataclass(frozen=True)
class Requirement:
    """One key's admitted values, as Karpenter's scheduling.Requirement: a set or its complement,
    with inclusive integer bounds; `source` is the NodePool field (or setting) it came from."""

    key: str
    complement: bool
    values: frozenset = frozenset()
    gte: int | None = None
    lte: int | None = None
    source: str = ""
    text: str = ""

    @classmethod
    def parse(cls, spec: dict, source: str) -> "Requirement":
        key, op, values = spec.get("key", ""), spec.get("operator", ""), [str(v) for v in spec.get("values") or []]
        text = f"{key} {op}" + (f" {json.dumps(values)}" if values else "")
        bound = _int(values[0]) if values else None
        if op == "In":
            return cls(key, False, frozenset(values), source=source, text=text)
        if op == "DoesNotExist":
            return cls(key, False, source=source, text=text)
        if op == "NotIn":
            return cls(key, True, frozenset(values), source=source, text=text)
        # Gt N is Gte N+1, Lt N is Lte N-1 (requirement.go); an unparsable bound admits nothing.
        if op in ("Gt", "Gte") and bound is not None:
            return cls(key, True, gte=bound + (op == "Gt"), source=source, text=text)
        if op in ("Lt", "Lte") and bound is not None:
            return cls(key, True, lte=bound - (op == "Lt"), source=source, text=text)
        if op == "Exists":
            return cls(key, True, source=source, text=text)
        return cls(key, False, source=source, text=text)

    def has(self, value: str) -> bool:
        """Whether a node labelled key=value satisfies this (requirement.go Has)."""
        if self.gte is not None or self.lte is not None:
            number = _int(value)
            if number is None or (self.gte is not None and number < self.gte) or (self.lte is not None and number > self.lte):
                return False
        return (value not in self.values) if self.complement else (value in self.values)

    def intersect(self, other: "Requirement") -> "Requirement":
        """Both at once (requirement.go Intersection), keeping where each came from."""
        gte = max((b for b in (self.gte, other.gte) if b is not None), default=None)
        lte = min((b for b in (self.lte, other.lte) if b is not None), default=None)
        if self.complement and other.complement:
            values, complement = self.values | other.values, True
        else:
            finite = [r for r in (self, other) if not r.complement]
            values = finite[0].values.intersection(*[r.values for r in finite[1:]])
            values = frozenset(v for v in values if all(not r.complement or r.has(v) for r in (self, other)))
            complement, gte, lte = False, None, None
        return Requirement(self.key, complement, values, gte, lte, source=f"{self.source} and {other.source}",
                           text=f"{self.text} and {other.text}")

    @property
    def finite(self) -> bool:
        return not self.complement


@dataclass
class PoolVerdict:
    """What one NodePool can do for the serving pods."""

    name: str
    problems: list[str] = field(default_factory=list)  # each names the pool, the field, the value and the fix
    t4_types: list[str] = field(default_factory=list)  # the T4 instance types it may launch for them
    multi_gpu: str | None = None  # a warning: consolidation or a launch could pick a multi-GPU type

    @property
    def fits(self) -> bool:
        return not self.problems


def check_pool(pool: dict, selector: dict[str, str], tolerations: list[dict]) -> PoolVerdict:
    """Whether `pool` can make a T4 node for pods with this nodeSelector and these tolerations."""
    name = pool["metadata"]["name"]
    verdict = PoolVerdict(name)
    template = (pool.get("spec") or {}).get("template") or {}
    spec = template.get("spec") or {}
    for i, taint in enumerate(spec.get("taints") or []):
        if not any(tolerates(t, taint) for t in tolerations):
            shown = f"{taint.get('key', '')}{'=' + taint['value'] if taint.get('value') else ''}:{taint.get('effect', '')}"
            wanted = {"key": taint.get("key", ""), "operator": "Equal" if taint.get("value") else "Exists",
                      **({"value": taint["value"]} if taint.get("value") else {}), "effect": taint.get("effect", "")}
            verdict.problems.append(
                f"NodePool {name}: spec.template.spec.taints[{i}] = {shown} is not tolerated by the serving pods "
                f"(gpu_tolerations = {json.dumps(tolerations)}); add {json.dumps(wanted)} to gpu_tolerations, "
                "or remove the taint from the NodePool")
    requirements = pool_requirements(pool)
    for key, value in sorted(selector.items()):
        req = requirements.get(key)
        if req is None and not (key in WELL_KNOWN or key.startswith(WELL_KNOWN_DOMAIN)):
            verdict.problems.append(
                f"NodePool {name}: gpu_node_selector {key}={value} is a label its nodes do not get (neither "
                f"spec.template.metadata.labels nor spec.template.spec.requirements names {key}; Karpenter: label "
                f'"{key}" does not have known values); add {key}: "{value}" to spec.template.metadata.labels, '
                "or set gpu_node_selector to a label the NodePool's nodes carry")
        elif req is not None and not req.has(value):
            verdict.problems.append(
                f"NodePool {name}: {req.source} = {req.text} does not admit gpu_node_selector {key}={value}; "
                f'set {key}: "{value}" in spec.template.metadata.labels (or admit it in the requirement), '
                "or set gpu_node_selector to a label the NodePool's nodes carry")
    # The pods' selector narrows what the pool may launch for them, as Karpenter intersects them.
    for key, value in selector.items():
        wanted = Requirement(key, False, frozenset([value]), source="gpu_node_selector", text=f"{key}={value}")
        requirements[key] = requirements[key].intersect(wanted) if key in requirements else wanted
    rejected: dict[str, Requirement] = {}
    for instance_type in T4_TYPES:
        labels = t4_labels(instance_type)
        refusal = next((r for k, r in requirements.items() if k in labels and not r.has(labels[k])), None)
        if refusal is None:
            verdict.t4_types.append(instance_type)
        else:
            rejected[instance_type] = refusal
    if not verdict.t4_types:
        why = rejected["g4dn.xlarge"]
        verdict.problems.append(
            f"NodePool {name}: {why.source} = {why.text} admits no T4 instance type (g4dn.*, "
            f"{GPU_NAME} t4) for the serving pods; {T4_FIX}")
        return verdict
    several = [f"{t} ({T4_TYPES[t][2]} GPUs)" for t in verdict.t4_types if T4_TYPES[t][2] > 1]
    count = requirements.get(GPU_COUNT)
    confined = any(k in requirements and requirements[k].finite for k in (FAMILY, INSTANCE_TYPE, GPU_NAME))
    unbounded = (count is None or any(count.has(n) for n in ("2", "4", "8"))) and not confined
    if several or unbounded:
        what = ", ".join(several) if several else f"multi-GPU types (no bound on {GPU_COUNT})"
        verdict.multi_gpu = (f"NodePool {name} admits {what}: Karpenter, which does not count time-slicing, may "
                             f"launch or consolidate to one for the 1-GPU pods; {GPU_BOUND_FIX}")
    return verdict


def gpu_limit(pool: dict) -> int | None:
    """The pool's `spec.limits` on nvidia.com/gpu (physical GPUs: Karpenter counts an instance's
    own GPUs, not time-slicing replicas), or None when it has none or it is not a whole number."""
    value = ((pool.get("spec") or {}).get("limits") or {}).get("nvidia.com/gpu")
    return _int(str(value)) if value is not None else None


def pool_requirements(pool: dict) -> dict[str, Requirement]:
    """The pool's requirements by key: its requirements, its template labels and its own name label."""
    template = (pool.get("spec") or {}).get("template") or {}
    out: dict[str, Requirement] = {}

    def add(req: Requirement) -> None:
        out[req.key] = out[req.key].intersect(req) if req.key in out else req

    for i, spec in enumerate((template.get("spec") or {}).get("requirements") or []):
        add(Requirement.parse(spec, f"spec.template.spec.requirements[{i}]"))
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    for key, value in labels.items():
        add(Requirement(key, False, frozenset([str(value)]), source="spec.template.metadata.labels", text=f"{key}={value}"))
    add(Requirement(NODEPOOL_LABEL, False, frozenset([pool["metadata"]["name"]]), source="metadata.name",
                    text=f"{NODEPOOL_LABEL}={pool['metadata']['name']}"))
    return out


def tolerates(toleration: dict, taint: dict) -> bool:
    """k8s.io/api core/v1 toleration.go ToleratesTaint: effect, key and (for Equal) value match."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration.get("key") != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def _int(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
