"""The sandbox: a simulated EKS account on this machine (start it with `python -m sandbox up`).

Everything is read from the sandbox's state file, so nothing needs to be exported by hand.
QWEN3_SANDBOX_DIR points at another sandbox (tests run several side by side).
"""

import os
import sys

# pyinfra puts only the working directory on sys.path: add this project's, so the inventory
# works from any directory (`pyinfra /path/to/inventories/sandbox.py /path/to/deploy.py`).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.control import for_inventory, inventory_data  # noqa: E402

sandbox = [("@local", inventory_data(*for_inventory()))]
