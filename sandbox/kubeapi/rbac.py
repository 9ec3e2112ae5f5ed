"""Authentication of sandbox-issued tokens and the RBAC authorizer, as kube-apiserver has them.

Evaluation follows plugin/pkg/auth/authorizer/rbac/rbac.go and rbac/v1 helpers: ClusterRoleBindings
first, then the RoleBindings of the request's namespace; a rule allows when verb, API group,
resource (with `res/sub` and `*/sub`), resourceNames and nonResourceURLs (`prefix*`) match, `*`
matching anything. The admin token and EKS tokens are system:masters (allowed everything, as the
privileged-group authorizer in front of RBAC does). The bootstrap roles every authenticated user
has (system:discovery, system:basic-user, system:public-info-viewer) are built in, not stored.
Forbidden messages are those of apiserver's responsewriters/errors.go `forbiddenMessage`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from .resources import by_key
from .store import ApiError, Store, selector_matches

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"
TOKEN_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    @property
    def privileged(self) -> bool:
        return MASTERS in self.groups

    def review(self) -> dict:
        info: dict = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        return info


def user_for(name: str, groups: tuple[str, ...] = ()) -> UserInfo:
    """A user with the groups the authenticator adds (system:authenticated; a ServiceAccount's two)."""
    extra: list[str] = []
    if name.startswith(SA_PREFIX):
        namespace = name[len(SA_PREFIX):].split(":")[0]
        extra = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    return UserInfo(name, tuple(dict.fromkeys([*groups, *extra, AUTHENTICATED])))


# -- tokens ---------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(admin_token: str) -> bytes:
    # Whoever holds the admin token may mint tokens anyway; deriving the key keeps one secret per sandbox.
    return hmac.new(admin_token.encode(), b"sandbox service account token signing", hashlib.sha256).digest()


def mint_token(admin_token: str, user: str, groups: list[str] | tuple[str, ...] = (), *,
               seconds: int = 3600) -> str:
    """A JWT (HS256) for `user` (a ServiceAccount as system:serviceaccount:NS:NAME), valid `seconds`."""
    now = int(time.time())
    claims: dict = {"iss": TOKEN_ISSUER, "sub": user, "iat": now, "nbf": now, "exp": now + seconds,
                    "aud": ["https://kubernetes.default.svc"]}
    if user.startswith(SA_PREFIX):
        namespace, name = user[len(SA_PREFIX):].split(":", 1)
        claims["kubernetes.io"] = {"namespace": namespace, "serviceaccount": {"name": name}}
    if groups:
        claims["groups"] = list(groups)  # sandbox-only claim: the groups an EKS access entry would map
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(_signing_key(admin_token), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def user_of_token(admin_token: str, token: str, store: Store) -> UserInfo | None:
    """The user a minted token names; None when it is not one; ValueError when it is one but not valid."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    expected = hmac.new(_signing_key(admin_token), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(parts[2]), expected):
            return None
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, TypeError):
        return None
    if time.time() > claims.get("exp", 0):
        raise ValueError("token has expired")
    sa = claims.get("kubernetes.io")
    if sa:  # bound service account tokens die with their ServiceAccount
        if store.get(by_key("serviceaccounts"), sa["namespace"], sa["serviceaccount"]["name"]) is None:
            raise ValueError(f'service account {sa["namespace"]}/{sa["serviceaccount"]["name"]} does not exist')
    return user_for(claims["sub"], tuple(claims.get("groups") or ()))


# -- the authorizer -------------------------------------------------------------------------

@dataclass(frozen=True)
class Attributes:
    """authorizer.Attributes: what one request (or one SelfSubjectAccessReview) asks to do."""

    verb: str
    resource_request: bool
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


_BASIC_RULES = [  # bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go), for system:authenticated
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
    {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                           "/openapi/*", "/readyz", "/version", "/version/"]},
]


def _has(values: list | None, wanted: str) -> bool:
    values = values or []
    return "*" in values or wanted in values


def rule_allows(rule: dict, a: Attributes) -> bool:
    """rbac/v1 RuleAllows."""
    if not _has(rule.get("verbs"), a.verb):
        return False
    if not a.resource_request:
        return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                   for u in rule.get("nonResourceURLs") or [])
    if not _has(rule.get("apiGroups"), a.api_group):
        return False
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    if not any(r == "*" or r == combined or (a.subresource and r == f"*/{a.subresource}")
               for r in rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or a.name in names


def _applies(subject: dict, user: UserInfo, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace  # defaulted to the binding's namespace, as upstream
        return bool(sa_namespace) and user.name == f"{SA_PREFIX}{sa_namespace}:{name}"
    return False


class Authorizer:
    def __init__(self, store: Store):
        self.store = store

    def _cluster_role_rules(self, name: str) -> list[dict] | None:
        role = self.store.get(by_key("clusterroles.rbac.authorization.k8s.io"), None, name)
        if role is None:
            return None
        rules = list(role.get("rules") or [])
        selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        if selectors:  # what the aggregation controller would have written into .rules
            for other in self.store.list(by_key("clusterroles.rbac.authorization.k8s.io")):
                if other["metadata"]["name"] != name and any(
                        selector_matches(s, other["metadata"].get("labels")) for s in selectors if s):
                    rules.extend(other.get("rules") or [])
        return rules

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        """Every rule that applies to `user` in `namespace` ("" for cluster scope), and the errors met."""
        rules: list[dict] = list(_BASIC_RULES) if AUTHENTICATED in user.groups else []
        errors: list[str] = []
        bindings = [(b, "") for b in self.store.list(by_key("clusterrolebindings.rbac.authorization.k8s.io"))]
        if namespace:
            bindings += [(b, namespace) for b in self.store.list(by_key("rolebindings.rbac.authorization.k8s.io"),
                                                                    namespace)]
        for binding, ns in bindings:
            if not any(_applies(s, user, ns) for s in binding.get("subjects") or []):
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                found = self._cluster_role_rules(ref.get("name", ""))
                what = f'clusterrole.rbac.authorization.k8s.io "{ref.get("name")}" not found'
            else:
                role = self.store.get(by_key("roles.rbac.authorization.k8s.io"), ns, ref.get("name", ""))
                found = None if role is None else list(role.get("rules") or [])
                what = f'role.rbac.authorization.k8s.io "{ref.get("name")}" not found'
            if found is None:
                errors.append(what)
            else:
                rules.extend(found)
        return rules, errors

    def authorize(self, user: UserInfo, a: Attributes) -> tuple[bool, str]:
        if user.privileged:
            return True, ""
        rules, errors = self.rules_for(user, a.namespace)
        if any(rule_allows(r, a) for r in rules):
            return True, ""
        return False, (f"RBAC: [{', '.join(errors)}]" if len(errors) > 1 else f"RBAC: {errors[0]}") if errors else ""

    def check(self, user: UserInfo, a: Attributes) -> None:
        """Raise the real server's 403 unless `user` may do `a`."""
        allowed, reason = self.authorize(user, a)
        if not allowed:
            raise forbidden(user, a, reason)


def forbidden(user: UserInfo, a: Attributes, reason: str = "") -> ApiError:
    if not a.resource_request:
        message = f'forbidden: User "{user.name}" cannot {a.verb} path "{a.path}"'
        return ApiError(403, "Forbidden", message + (f": {reason}" if reason else ""), {})
    resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    detail = f'User "{user.name}" cannot {a.verb} resource "{resource}" in API group "{a.api_group}" {scope}'
    if reason:
        detail += f": {reason}"
    qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
    what = f'{qualified} "{a.name}"' if a.name else qualified
    details = {"name": a.name, "group": a.api_group, "kind": a.resource}
    return ApiError(403, "Forbidden", f"{what} is forbidden: {detail}", {k: v for k, v in details.items() if v})


# -- the review kinds ---------------------------------------------------------------------

REVIEW_GROUPS = ("authorization.k8s.io", "authentication.k8s.io")


def review(kind: str, body: dict, user: UserInfo, authorizer: Authorizer) -> dict:
    """Answer a SelfSubjectAccessReview, SelfSubjectRulesReview or SelfSubjectReview (never stored)."""
    spec = body.get("spec") or {}
    out = {"apiVersion": body.get("apiVersion"), "kind": kind, "metadata": {"creationTimestamp": None},
           "spec": spec}
    if kind == "SelfSubjectReview":
        out.pop("spec")
        out["status"] = {"userInfo": user.review()}
    elif kind == "SelfSubjectAccessReview":
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if ra:
            a = Attributes(ra.get("verb", ""), True, ra.get("group", ""), ra.get("resource", ""),
                           ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""))
        elif nra:
            a = Attributes(nra.get("verb", ""), False, path=nra.get("path", ""))
        else:
            raise ApiError(422, "Invalid", f'{kind}.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                           "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes "
                           "must be specified")
        allowed, reason = authorizer.authorize(user, a)
        out["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
    elif kind == "SelfSubjectRulesReview":
        if user.privileged:
            rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]},
                     *_BASIC_RULES]
            errors: list[str] = []
        else:
            rules, errors = authorizer.rules_for(user, spec.get("namespace", ""))
        out["status"] = {
            "resourceRules": [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in r}
                              for r in rules if "nonResourceURLs" not in r],
            "nonResourceRules": [{"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}
                                 for r in rules if "nonResourceURLs" in r],
            "incomplete": bool(errors), **({"evaluationError": "; ".join(errors)} if errors else {})}
    else:
        raise ApiError(405, "MethodNotAllowed", f"the sandbox does not serve {kind}")
    return out
