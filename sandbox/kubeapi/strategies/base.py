"""The strategy of one kind, as pkg/registry/<group>/<kind>/strategy.go has it upstream.

The generic registry (registry.py) calls, for every write that is not a status write:
  create: default -> prepare_for_create -> validate
  update: default -> prepare_for_update -> validate_update (validate + what may not change)
A kind says only what is special about it by overriding these; kinds without a strategy of their
own get this base class (no defaults, nothing beyond the schema and metadata checks).
Defaults run on every write, as upstream decodes every request body into a defaulted object, so a
patch or an apply that removes a defaulted field gets it back.
"""

from __future__ import annotations

from typing import Any, Protocol


class Context(Protocol):
    """What a strategy may ask the registry for (upstream: the REST storage around a strategy)."""

    def allocate_cluster_ip(self) -> str: ...


class Strategy:
    kind = ""

    def default(self, obj: dict) -> None:
        """pkg/apis/<group>/v1/defaults.go: fill unset fields; also canonical quantities."""

    def prepare_for_create(self, obj: dict, ctx: Context) -> None:
        """Server-set fields on create (generated selectors, allocated IPs, folded stringData)."""

    def prepare_for_update(self, obj: dict, old: dict, ctx: Context) -> None:
        """Server-set fields on update (kept allocations)."""

    def validate(self, obj: dict) -> list[dict]:
        """pkg/apis/<group>/validation: the causes why `obj` is not a valid object of this kind."""
        return []

    def validate_update(self, obj: dict, old: dict) -> list[dict]:
        """Validate<Kind>Update: `validate` plus the fields that may not change."""
        return self.validate(obj)

    def warnings_on_create(self, obj: dict) -> list[str]:
        return []

    def warnings_on_update(self, obj: dict, old: dict) -> list[str]:
        return []


STRATEGIES: dict[str, Strategy] = {}
_GENERIC = Strategy()


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: one instance per kind in the table the registry looks in."""
    STRATEGIES[cls.kind] = cls()
    return cls


def strategy_for(kind: str) -> Strategy:
    return STRATEGIES.get(kind, _GENERIC)


def spec_of(obj: dict) -> dict | None:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else None


def get_in(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
