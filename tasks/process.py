"""The pyinfra process a playbook file (deploy.py, destroy.py) runs in: costs of its own that only
the playbook file can avoid, measured by bench/deploy_bench.py on a no-op rerun.

1. pyinfra orders operations by the call stack (pyinfra/api/util.py get_operation_order_from_stack:
   `inspect.stack()` and `getframeinfo` at every operation call). `inspect.getmodule` finds a
   frame's module by its file, and the playbook file, which pyinfra runs with `exec`, belongs to no
   module: each look-up of its frames scanned every loaded module (~1,300), three per operation,
   54 per no-op rerun, ~0.13 s (0.25 s under load). Listed as a module, the file is found in the
   look-up's cache.
2. By the end of the preparation the process holds ~130,000 objects (pyinfra, the Kubernetes
   client, boto3) that live until it ends. Python's collector scanned those the playbook's imports
   and steps made over and over while they were made, and all of them again in its last
   collections at exit (0.5-1 s of a ~3 s rerun). The playbook file pauses the collector before
   its imports; `playbook_process` freezes what exists
   once the steps are prepared (gc.freeze: never scanned again, at exit either) and turns the
   collector back on for the run. The price: what the preparation left as garbage in reference
   cycles (~2,000 objects on a no-op rerun) is kept until the process ends, as everything frozen is.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import types
from contextlib import contextmanager
from typing import Iterator

_FREEZE_AT_EXIT = []


@contextmanager
def playbook_process(playbook_file: str) -> Iterator[None]:
    """
    Prepare the playbook file's steps inside this block, after `gc.disable()` and its imports.

    + playbook_file: the file's `__file__` (the path pyinfra ran it by)

    .. code:: python

        gc.disable()
        from tasks import asr
        with playbook_process(__file__):
            asr.deploy_asr()
    """
    path = os.path.abspath(playbook_file)
    module = types.ModuleType(os.path.splitext(os.path.basename(path))[0], "a pyinfra playbook file, run by exec")
    module.__file__ = path
    sys.modules.setdefault(f"_pyinfra_playbook_file:{path}", module)
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
        if not _FREEZE_AT_EXIT:  # a fleet runs the file once per cluster, in one process
            atexit.register(gc.freeze)
            _FREEZE_AT_EXIT.append(True)
