"""Fill the YAML templates in files/ with inventory values.

Templates hold the structure; this only fills values, always through `tojson` (JSON is YAML), so
a value can never change the shape of a manifest or smuggle in a field. Undefined names fail.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

FILES = Path(__file__).resolve().parent.parent / "files"
PART_OF = "qwen3-speech"
MANAGED_BY = "pyinfra"
# libyaml's parser when PyYAML was built with it (the wheels are): the same safe constructor, but
# parsing every template of a run took ~0.3 s of a no-op rerun in pure Python.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_all(text: str) -> list:
    """Every YAML document of `text`, parsed safely (no Python objects), empty ones included."""
    return list(yaml.load_all(text, Loader=SAFE_LOADER))


def short_image(image: str | None) -> str:
    """An image reference for a one-line name: no registry host, a digest abbreviated to 12 hex
    digits (the full reference stays in the manifest, its diff and `status`), so the results
    table stays within a terminal's width."""
    if not image:
        return "?"
    first, slash, rest = image.partition("/")
    if slash and ("." in first or ":" in first):
        image = rest
    name, sep, digest = image.partition("@sha256:")
    return f"{name}@sha256:{digest[:12]}" if sep else image


def moving_tag(image: str) -> bool:
    """`:latest` or no tag, and no digest: what the image is can change between two pulls."""
    if "@sha256:" in image:
        return False
    name = image.rsplit("/", 1)[-1]
    return ":" not in name or name.endswith(":latest")


def pull_policy(image: str) -> str:
    """IfNotPresent for a digest (it cannot change, and a registry outage then cannot stop a pod
    whose node has the image); otherwise what Kubernetes would default it to (pkg/apis/core/v1
    defaults.go SetDefaults_Container: Always for `:latest` or no tag), said out loud."""
    return "Always" if moving_tag(image) else "IfNotPresent"


def labels(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The standard labels every object of this deploy carries."""
    out = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF,
           "app.kubernetes.io/managed-by": MANAGED_BY}
    out.update(extra or {})
    return out


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's compiled templates kept as Python keeps .pyc files: keyed by the template's path,
    checked against its source, in a directory of this user's in the temp dir (jinja2 bccache.py
    FileSystemBytecodeCache). Compiling the nine templates of a no-op rerun took ~0.1 s CPU of it.
    A cache that cannot be written is skipped, as a .pyc is: a run never stops for it."""

    def dump_bytecode(self, bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _bytecode_cache() -> _BytecodeCache | None:
    if sys.dont_write_bytecode:  # PYTHONDONTWRITEBYTECODE: as for Python's own caches
        return None
    try:
        return _BytecodeCache()
    except (OSError, RuntimeError):  # no temp dir of this user's that only it can write (jinja2 refuses it)
        return None


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(FILES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False, bytecode_cache=_bytecode_cache())
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    env.globals["labels"] = labels
    env.globals["pull_policy"] = pull_policy
    return env


def render(template: str, settings: Any, **values: Any) -> list[dict]:
    """Render files/<template> and parse it into manifests (empty documents dropped)."""
    text = _environment().get_template(template).render(s=settings, **values)
    try:
        return [doc for doc in load_all(text) if doc]
    except yaml.YAMLError as err:  # a template bug, not an inventory problem
        raise ValueError(f"files/{template} did not render to valid YAML: {err}") from err


def script(name: str) -> str:
    return (FILES / name).read_text()
