"""Teardown of the Qwen3 speech deploy, in reverse order; models and time-slicing are kept.

    pyinfra inventories/sandbox.py destroy.py --dry --diff          # what would be removed
    pyinfra -y inventories/sandbox.py destroy.py                    # remove the services
    pyinfra -y inventories/sandbox.py destroy.py --data purge_models=true --data purge_time_slicing=true

Deleted: the Ingresses (and so the ALB), TTS, ASR, the seeding Jobs. Kept unless purged: the
PVC and the model data on EFS, the record of seeded commits, the time-slicing config.
The EFS file system itself is never deleted.
"""

import gc
import os
import sys

# pyinfra puts only the working directory on sys.path: add this project's, so the deploy runs
# from any directory (`pyinfra /path/to/inventories/production.py /path/to/deploy.py`).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pyinfra turns bytecode writing off for its whole run (pyinfra_cli/main.py: "Don't write out
# deploy.pyc/config.pyc", files it runs with exec, which write none anyway), so this project's
# packages were compiled from source on every run (~0.2 s CPU of a no-op rerun): cache them as
# any package is, unless the operator asked not to (PYTHONDONTWRITEBYTECODE).
sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
# The imports and the steps' preparation below make objects that live to the end of the run, and
# Python's collector scanned them over and over as they were made: paused until they are
# prepared, then they are frozen (tasks/process.py).
gc.disable()

from tasks import preflight, teardown
from tasks.connect import connect
from tasks.fleet import only_this_host
from tasks.process import playbook_process

with playbook_process(__file__), only_this_host():  # tasks/process.py; a fleet: one cluster failing stops only itself
    connect()
    preflight.find_device_plugin_for_teardown()
    teardown.tear_down()
