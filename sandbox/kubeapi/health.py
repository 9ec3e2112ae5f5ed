"""`/healthz`, `/livez`, `/readyz` as kube-apiserver answers them (k8s.io/apiserver pkg/server/healthz).

Plain text: `ok`, or with `?verbose` one `[+]<check> ok` line per check and `<name> check passed`.
`?exclude=<check>` marks a check as excluded; `/<endpoint>/<check>` asks for one check; an unknown
check is 404. They need no credentials (system:public-info-viewer lets anyone read them, EKS included).
"""

from __future__ import annotations

# The checks a 1.31 kube-apiserver lists (a representative subset of its post-start hooks).
_COMMON = ("ping", "log", "etcd", "poststarthook/start-apiserver-admission-initializer",
           "poststarthook/generic-apiserver-start-informers", "poststarthook/start-apiextensions-informers",
           "poststarthook/start-apiextensions-controllers", "poststarthook/crd-informer-synced",
           "poststarthook/start-system-namespaces-controller", "poststarthook/bootstrap-controller",
           "poststarthook/rbac/bootstrap-roles", "poststarthook/scheduling/bootstrap-system-priority-classes",
           "poststarthook/apiservice-registration-controller", "autoregister-completion")
CHECKS = {
    "healthz": _COMMON,
    "livez": _COMMON,
    "readyz": _COMMON[:3] + ("etcd-readiness", "informer-sync") + _COMMON[3:] + ("shutdown",),
}


def answer(path: str, query: dict[str, str], raw_query: str) -> tuple[int, str]:
    """(HTTP code, text body) for a health path."""
    parts = path.strip("/").split("/", 1)
    endpoint, check = parts[0], parts[1] if len(parts) > 1 else ""
    checks = CHECKS[endpoint]
    if check:
        return (200, "ok") if check in checks else (404, "404 page not found\n")
    excluded = {v for k, v in (p.split("=", 1) for p in raw_query.split("&") if "=" in p) if k == "exclude"}
    if "verbose" not in query:
        return 200, "ok"
    lines = [f"[+]{c} excluded: ok" if c in excluded else f"[+]{c} ok" for c in checks]
    return 200, "\n".join(lines) + f"\n{endpoint} check passed\n"
