"""Per-kind API semantics: one strategy per kind, as kube-apiserver's pkg/registry/*/*/strategy.go.

The registry asks `strategy_for(kind)` and calls its hooks (see base.Strategy). Adding a kind's
rules means adding a class with `@register` in the module of its API group, not touching HTTP code.
"""

from __future__ import annotations

from . import apps, batch, core, networking, pods, policy, storage  # noqa: F401 (each module registers its kinds)
from .base import STRATEGIES, Context, Strategy, strategy_for
from .core import DecodeError
from .quantity import QuantityError

__all__ = ["STRATEGIES", "Context", "DecodeError", "QuantityError", "Strategy", "strategy_for"]
