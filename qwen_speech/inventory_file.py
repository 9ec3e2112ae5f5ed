"""Inventory files and pyinfra's command line, checked from config.py with one-line errors.

pyinfra reads config.py before it parses --data or applies --limit, so that is where a malformed
--data (pyinfra's own parser raises a bare ValueError: an "internal exception" and a traceback)
and a --limit that selects no host (pyinfra warns, runs nothing and exits 0) are stopped.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from pyinfra.api.exceptions import PyinfraError


class InventoryNotLoadable(PyinfraError):
    """An inventory (or group data) file that raises while it is read; the message is one line."""


class CommandLineError(PyinfraError):
    """A --data or --limit argument pyinfra would mishandle; the message is one line."""


def run_file(path: str | Path) -> dict:
    """Execute an inventory or group-data file and return its names, or raise InventoryNotLoadable."""
    try:
        return runpy.run_path(str(path))
    except SyntaxError as err:
        where = f"line {err.lineno}" + (f", column {err.offset}" if err.offset else "")
        raise InventoryNotLoadable(f"inventory file {path} does not load: {type(err).__name__} at {where}: "
                                   f"{err.msg}; fix that line") from None
    except SystemExit as err:  # sandbox.control.for_inventory: the sandbox is not running
        raise InventoryNotLoadable(f"inventory file {path} does not load: {err}") from None
    except Exception as err:
        raise InventoryNotLoadable(f"inventory file {path} does not load: {type(err).__name__}: {err}") from None


def check_loads() -> None:
    """From pyinfra's config.py: load the inventory argument once, if it is a Python file."""
    import click

    context = click.get_current_context(silent=True)
    inventory = (context.params.get("inventory") if context is not None else None) or ""
    if inventory.endswith(".py") and Path(inventory).is_file():
        run_file(inventory)
        group_data = Path(inventory).resolve().parent / "group_data"
        for path in sorted(group_data.glob("*.py")) if group_data.is_dir() else ():
            run_file(path)


def check_command_line() -> None:
    """From pyinfra's config.py: refuse a --data without '=' and a --limit that selects no host."""
    import click

    context = click.get_current_context(silent=True)
    if context is None:
        return
    for arg in context.params.get("data") or ():
        if "=" not in arg or not arg.split("=", 1)[0].strip():
            raise CommandLineError(f"--data {arg!r} is not of the form --data key=value "
                                   f"(e.g. --data asr_max_model_len=2048)")
    limit = tuple(context.params.get("limit") or ())
    if limit:
        _check_limit_selects_a_host(context.params.get("inventory") or "", limit)


def _check_limit_selects_a_host(inventory_arg: str, limit: tuple[str, ...]) -> None:
    """Match --limit as pyinfra's _apply_inventory_limit does: a group name, else a host-name glob."""
    from fnmatch import fnmatch

    from pyinfra_cli.inventory import make_inventory

    inventory = make_inventory(inventory_arg)
    if any(inventory.get_group(pattern, default=None) or any(fnmatch(host.name, pattern) for host in inventory)
           for pattern in limit):
        return
    hosts = ", ".join(sorted(host.name for host in inventory)) or "none"
    groups = ", ".join(sorted(inventory.groups)) or "none"
    raise CommandLineError(f"--limit {' '.join(limit)} matches no host of {inventory_arg} "
                           f"(hosts: {hosts}; groups: {groups}); name one of them, or drop --limit")
