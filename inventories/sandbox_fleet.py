"""Two (or more) sandboxes as a fleet: one `@cluster/<name>` host each, deployed in one run.

    QWEN3_SANDBOX_FLEET=staging=/tmp/sb-a:production=/tmp/sb-b pyinfra -y inventories/sandbox_fleet.py deploy.py

Each entry is `name=sandbox dir` (start each with `python -m sandbox up --dir ...`), entries
separated by ':' (os.pathsep). The host data is inventories/sandbox.py's, per sandbox; the
name is the host's (`@cluster/staging`) and its environment.
"""

import os
import sys

# The project root on sys.path: for `sandbox`, and for the @cluster connector's entry point.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.control import for_inventory, inventory_data  # noqa: E402


def _members(spec: str) -> list[tuple[str, str]]:
    members = []
    for entry in filter(None, spec.split(os.pathsep)):
        name, sep, root = entry.partition("=")
        if not sep or not name or not root:
            raise SystemExit(f"QWEN3_SANDBOX_FLEET entry {entry!r}: write it as name=/path/to/sandbox, "
                             f"entries separated by {os.pathsep!r}")
        members.append((name, root))
    if not members:
        raise SystemExit("QWEN3_SANDBOX_FLEET is empty: set it to name=/path/to/sandbox entries, "
                         f"separated by {os.pathsep!r}")
    return members


sandbox_fleet = [(f"@cluster/{name}", inventory_data(*for_inventory(root), environment=name))
                 for name, root in _members(os.environ.get("QWEN3_SANDBOX_FLEET", ""))]
