"""Inventory files, loaded the way pyinfra loads them, with one-line errors when they do not load."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from pyinfra.api.exceptions import PyinfraError


class InventoryNotLoadable(PyinfraError):
    """An inventory (or group data) file that raises while it is read; the message is one line."""


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
