"""What the API server does with an object between the HTTP request and the store.

The generic registry of a real API server: namespace checks, server-owned metadata, defaults,
status handled only through the status subresource, validation, field ownership, server-side
apply and the patch formats, dry runs; admission (admission.py) and deletion (lifecycle.py). The HTTP layer
(server.py) parses requests and calls one method here per verb.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

from . import admission, lifecycle, strategies, validation
from .managed import default_manager, keep_time_of_a_no_op, server_side_apply, track_update
from .patches import json_patch, merge_patch, strategic_merge
from .resources import Resource, by_key
from .schema import root_schema
from .store import ApiError, Store

# Kinds whose DELETE answers with the deleted object (the others answer with a Status), as the real server does.
_DELETE_RETURNS_OBJECT = {"Pod", "Service", "PersistentVolumeClaim", "PersistentVolume", "ServiceAccount",
                          "StorageClass", "CSIDriver", "Namespace"}
# Metadata only the server writes; ignored in request bodies.
_SERVER_META = ("uid", "creationTimestamp", "generation", "managedFields", "resourceVersion", "selfLink",
                "deletionTimestamp", "deletionGracePeriodSeconds")
APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (APPLY, MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _what(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _random_suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # what the real server uses for generateName
    return "".join(secrets.choice(alphabet) for _ in range(length))


class Registry:
    """Object semantics over a Store. Every write method takes `dry_run` and stores nothing when set."""

    def __init__(self, store: Store, root_ca_pem: bytes | None = None):
        self.store = store
        self._next_cluster_ip = 10
        if root_ca_pem is not None:
            store.add_listener(admission.namespace_defaults_controller(self, root_ca_pem))

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _check_body(res: Resource, body: Any, what: str = "object") -> dict:
        if isinstance(body, str):
            raise bad_request(f"the request body must be a JSON {what} of kind {res.kind}, but it is a JSON string "
                              "(was it JSON-encoded twice? the kubernetes client encodes dict bodies itself)")
        if not isinstance(body, dict):
            raise bad_request(f"the request body must be a JSON {what} of kind {res.kind}; got {type(body).__name__}")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if (api_version and api_version != res.api_version) or (kind and kind != res.kind):
            raise bad_request(f"the body is {kind or '?'} of {api_version or '?'} but the URL is for {res.kind} of "
                              f"{res.api_version}; send the object to its own URL")
        if not isinstance(body.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return body

    @staticmethod
    def _place(res: Resource, obj: dict, namespace: str | None, name: str | None) -> dict:
        """Fill name/namespace from the URL; refuse bodies that name another object."""
        meta = obj.setdefault("metadata", {})
        if name is not None:
            if meta.get("name") and meta["name"] != name:
                raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
            meta["name"] = name
        if res.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  f"request ({meta['namespace']} vs {namespace})")
            if namespace:
                meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def allocate_cluster_ip(self) -> str:
        """A free Service address (strategies.Context: the Service strategy allocates on create)."""
        used = {(o.get("spec") or {}).get("clusterIP") for o in self.store.list(by_key("services"))}
        while True:
            self._next_cluster_ip += 1
            candidate = f"172.20.{self._next_cluster_ip // 250 % 250}.{self._next_cluster_ip % 250 + 1}"
            if candidate not in used:
                return candidate

    def admit(self, res: Resource, obj: dict, old: dict | None, *, subresource: str = "",
              field_validation: str | None = None) -> None:
        """What happens to every written object before it is stored: the kind's strategy
        (sandbox/kubeapi/strategies/) defaults it, sets what the server sets, and validates it,
        together with the schema and metadata checks; one 422 lists every cause.

        + old: the stored object for an update, None for a create
        + subresource: "status" for status writes (defaults and schema only: the spec is the stored one)
        """
        strategy = strategies.strategy_for(res.kind)
        try:
            strategy.default(obj)
            if subresource != "status":
                if old is None:
                    strategy.prepare_for_create(obj, self)
                else:
                    strategy.prepare_for_update(obj, old, self)
            checked = obj if subresource == "status" or "status" not in res.subresources else \
                {k: v for k, v in obj.items() if k != "status"}
            causes = validation.object_causes(res, checked)
            if subresource != "status":
                semantic = strategy.validate(obj) if old is None else strategy.validate_update(obj, old)
                # The kind's own rule for a field replaces the schema's generic one (upstream has only the former).
                named = {c["field"] for c in semantic}
                causes = [c for c in causes if c["field"] not in named] + semantic
        except (strategies.QuantityError, strategies.DecodeError) as err:
            # Upstream fails while decoding the body into its type, before validation: 400, not 422.
            raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: {err}') from None
        if field_validation in ("Ignore", "Warn"):
            causes = [c for c in causes if not c["message"].startswith("unknown field")]
        if causes:
            raise validation.invalid(res, obj["metadata"].get("name"), causes)

    @staticmethod
    def _keep_status(res: Resource, new: dict, live: dict | None) -> None:
        """Writes to the main resource do not change the status (the status subresource does)."""
        if "status" not in res.subresources:
            return
        if live is not None and live.get("status") is not None:
            new["status"] = copy.deepcopy(live["status"])
        else:
            new.pop("status", None)

    @staticmethod
    def _strip_server_meta(obj: dict) -> None:
        meta = obj.get("metadata") or {}
        for key in _SERVER_META:
            meta.pop(key, None)

    # -- reads -------------------------------------------------------------------------------

    def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        return self.store.must_get(res, namespace, name)

    def list(self, res: Resource, namespace: str | None, *, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None, continue_token: str | None = None) -> dict:
        """A `<Kind>List` with the store's resourceVersion; `limit`/`continue` page through it."""
        with self.store.lock:
            items = self.store.list(res, namespace, label_selector, field_selector)
            rv = self.store.resource_version
        start = 0
        if continue_token:
            try:
                start = int(json.loads(base64.urlsafe_b64decode(continue_token.encode()))["start"])
            except (ValueError, KeyError, TypeError):
                raise bad_request(f"continue token {continue_token!r} is not one this server issued") from None
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if limit and limit > 0:
            page = items[start:start + limit]
            if start + limit < len(items):
                metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start + limit}).encode()).decode()
                metadata["remainingItemCount"] = len(items) - start - limit
            items = page
        elif start:
            items = items[start:]
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": metadata, "items": items}

    # -- writes ------------------------------------------------------------------------------

    def create(self, res: Resource, namespace: str | None, body: Any, *, manager: str, dry_run: bool = False,
               field_validation: str | None = None) -> dict:
        obj = copy.deepcopy(self._check_body(res, body))
        self._place(res, obj, namespace, None)
        self._strip_server_meta(obj)
        meta = obj["metadata"]
        if "status" in res.subresources:
            obj.pop("status", None)
        with self.store.lock:
            if res.namespaced:
                if not meta.get("namespace"):
                    raise bad_request(f"{res.kind} {meta.get('name') or meta.get('generateName')!r} needs a "
                                      f"namespace: POST it under /namespaces/<namespace>/{res.plural}")
            admission.admit_create(res, obj, self)
            # After admission, as upstream (whose refusals name the generateName prefix).
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + _random_suffix()
            meta.setdefault("uid", str(uuid.uuid4()))  # before admission: a Job's generated selector names it
            self.admit(res, obj, None, field_validation=field_validation)
            obj = track_update(res, None, obj, manager)
            return self.store.create(res, obj, dry_run=dry_run, keep_uid=True)

    def update(self, res: Resource, namespace: str | None, name: str, body: Any, *, manager: str,
               subresource: str = "", dry_run: bool = False, field_validation: str | None = None) -> dict:
        obj = copy.deepcopy(self._check_body(res, body))
        self._place(res, obj, namespace, name)
        expected_rv = obj["metadata"].get("resourceVersion")
        with self.store.lock:
            live = self.store.must_get(res, namespace, name)
            return self._write(res, live, obj, manager=manager, subresource=subresource, expected_rv=expected_rv,
                               dry_run=dry_run, field_validation=field_validation)

    def _write(self, res: Resource, live: dict, obj: dict, *, manager: str, subresource: str,
               expected_rv: str | None, dry_run: bool, field_validation: str | None) -> dict:
        """The common end of update and patch: `obj` is the full new object a client wants."""
        if subresource == "status":
            new = copy.deepcopy(live)
            if obj.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = obj["status"]
        else:
            new = obj
            self._strip_server_meta(new)
            self._keep_status(res, new, live)
        new["metadata"]["managedFields"] = live["metadata"].get("managedFields")
        if new["metadata"]["managedFields"] is None:
            del new["metadata"]["managedFields"]
        lifecycle.keep_deletion_marks(new, live)
        self.admit(res, new, live, subresource=subresource, field_validation=field_validation)
        new = track_update(res, live, new, manager, subresource=subresource)
        stored = self.store.update(res, new, expected_rv, dry_run=dry_run)
        if not dry_run:
            lifecycle.finish_if_released(self, res, stored)
        return stored

    def patch(self, res: Resource, namespace: str | None, name: str, body: Any, content_type: str, *,
              manager: str | None, user_agent: str | None = None, subresource: str = "", force: bool = False,
              dry_run: bool = False, field_validation: str | None = None) -> tuple[int, dict]:
        """Apply one of the four patch types; returns (HTTP code, object). Apply may create (201)."""
        if content_type == APPLY:
            if not manager:
                raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                               "is required for apply patch (add ?fieldManager=<your tool's name>)",
                               {"kind": "PatchOptions", "group": "meta.k8s.io", "causes": [
                                   {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
                                    "field": "fieldManager"}]})
            return self.apply(res, namespace, name, body, manager=manager, subresource=subresource, force=force,
                              dry_run=dry_run, field_validation=field_validation)
        if force:
            raise bad_request("force is only allowed for apply patches (Content-Type application/apply-patch+yaml)")
        manager = manager or default_manager(user_agent)
        with self.store.lock:
            live = self.store.must_get(res, namespace, name)
            if content_type == MERGE_PATCH:
                patched = merge_patch(live, self._check_patch_object(body))
            elif content_type == JSON_PATCH:
                patched = json_patch(live, body)
            elif content_type == STRATEGIC_PATCH:
                if root_schema(res) is None:
                    raise ApiError(415, "UnsupportedMediaType", f"strategic merge patch is not supported for {res.kind} "
                                   f"({res.api_version}, a custom resource); use {MERGE_PATCH} or {JSON_PATCH}")
                patched = strategic_merge(live, self._check_patch_object(body), root_schema(res))
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format ({content_type}) - accepted media "
                               f"types include: {', '.join(PATCH_TYPES)}")
            if not isinstance(patched, dict):
                raise ApiError(422, "Invalid", f"the patched {res.kind} {name!r} is not an object")
            meta = patched.get("metadata") if isinstance(patched.get("metadata"), dict) else {}
            if meta.get("name") != name or (res.namespaced and meta.get("namespace") != namespace):
                raise ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: metadata.name: Invalid value: '
                               f'{json.dumps(meta.get("name"))}: field is immutable')
            patched["apiVersion"], patched["kind"] = res.api_version, res.kind
            rv = meta.get("resourceVersion")
            expected_rv = rv if rv and rv != live["metadata"]["resourceVersion"] else None
            return 200, self._write(res, live, patched, manager=manager, subresource=subresource,
                                    expected_rv=expected_rv, dry_run=dry_run, field_validation=field_validation)

    @staticmethod
    def _check_patch_object(body: Any) -> dict:
        if not isinstance(body, dict):
            raise bad_request(f"a merge patch must be a JSON object; got {type(body).__name__}")
        return body

    def apply(self, res: Resource, namespace: str | None, name: str, body: Any, *, manager: str,
              subresource: str = "", force: bool = False, dry_run: bool = False,
              field_validation: str | None = None) -> tuple[int, dict]:
        """Server-side apply of the configuration `body` by `manager`; creates the object if absent."""
        config = copy.deepcopy(self._check_body(res, body, "object (YAML or JSON)"))
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request(f"an applied configuration needs apiVersion and kind ({res.api_version}, {res.kind})")
        self._place(res, config, namespace, name)
        expected_rv = config["metadata"].get("resourceVersion")
        self._strip_server_meta(config)
        with self.store.lock:
            live = self.store.get(res, namespace, name)
            if live is None:
                if subresource:
                    raise self._not_found(res, name)
                skeleton = {"apiVersion": res.api_version, "kind": res.kind,
                            "metadata": {k: v for k, v in config["metadata"].items() if k in ("name", "namespace")}}
                merged = server_side_apply(res, skeleton, config, manager, force=force, existed=False)
                if "status" in res.subresources:
                    merged.pop("status", None)
                merged["metadata"]["uid"] = str(uuid.uuid4())
                admission.admit_create(res, merged, self)
                self.admit(res, merged, None, field_validation=field_validation)
                return 201, self.store.create(res, merged, dry_run=dry_run, keep_uid=True)
            if expected_rv and expected_rv != live["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again")
            merged = server_side_apply(res, live, config, manager, force=force, subresource=subresource)
            lifecycle.keep_deletion_marks(merged, live)
            self.admit(res, merged, live, subresource=subresource, field_validation=field_validation)
            keep_time_of_a_no_op(merged, live)
            stored = self.store.update(res, merged, dry_run=dry_run)
            if not dry_run:
                lifecycle.finish_if_released(self, res, stored)
            return 200, stored

    @staticmethod
    def _not_found(res: Resource, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{_what(res)} "{name}" not found',
                        {"name": name, "group": res.group, "kind": res.plural})

    # -- scale -------------------------------------------------------------------------------

    def get_scale(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self.store.must_get(res, namespace, name)
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        meta = {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in obj["metadata"]}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in selector.items())}}

    def update_scale(self, res: Resource, namespace: str | None, name: str, scale: dict, *, manager: str,
                     dry_run: bool = False) -> dict:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise validation.invalid(Resource("autoscaling", "v1", "Scale", "scale", True), name, [
                {"reason": "FieldValueInvalid", "field": "spec.replicas",
                 "message": f"Invalid value: {json.dumps(replicas)}: must be a non-negative integer"}])
        with self.store.lock:
            live = self.store.must_get(res, namespace, name)
            new = copy.deepcopy(live)
            new.setdefault("spec", {})["replicas"] = replicas
            self._write(res, live, new, manager=manager, subresource="", expected_rv=None, dry_run=dry_run,
                        field_validation=None)
        return {**self.get_scale(res, namespace, name), "spec": {"replicas": replicas}}

    # -- delete ------------------------------------------------------------------------------

    def delete(self, res: Resource, namespace: str | None, name: str, *, options: dict | None = None,
               dry_run: bool = False) -> dict:
        """Delete as DeleteOptions say (lifecycle.py: finalizers, propagation, namespace termination);
        answers like the real server for this kind: the object while it is still there, else per kind."""
        options = options or {}
        dry_run = lifecycle.dry_run_of(options, dry_run)
        with self.store.lock:
            live = self.store.must_get(res, namespace, name)
            preconditions = options.get("preconditions") or {}
            for field in ("uid", "resourceVersion"):
                want = preconditions.get(field)
                if want and want != live["metadata"].get(field):
                    raise ApiError(409, "Conflict", f"Precondition failed: {field} in precondition: {want}, "
                                   f"{field} in object meta: {live['metadata'].get(field)}")
            obj, gone = lifecycle.delete(self, res, live, options, dry_run)
        if not gone or res.kind in _DELETE_RETURNS_OBJECT:
            return obj
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group, "kind": res.plural, "uid": live["metadata"]["uid"]}}

    def delete_collection(self, res: Resource, namespace: str | None, *, label_selector: str | None,
                          field_selector: str | None, options: dict | None = None, dry_run: bool = False) -> dict:
        with self.store.lock:
            for obj in self.store.list(res, namespace, label_selector, field_selector):
                meta = obj["metadata"]
                self.delete(res, meta.get("namespace"), meta["name"], options=options, dry_run=dry_run)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
