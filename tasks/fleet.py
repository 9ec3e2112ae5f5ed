"""One cluster of a fleet failing stops that cluster only.

pyinfra prepares a deploy file for every host in parallel, but an exception in any one of them
ends the whole run (pyinfra_cli/util.py _parallel_load_hosts re-raises it): with a fleet
inventory, staging missing its ALB controller stopped production too. `only_this_host()` turns
a host's DeployBlocked (raised before anything is written) into pyinfra's own failed host
(State.fail_hosts): its error is logged under its name, its remaining steps are skipped, the
other hosts go on, and pyinfra exits 1 because a host failed (pyinfra_cli/cli.py _exit).
With no other host still running (`@local`, or the last of a fleet) the error propagates as it
always did: the run stops with pyinfra's error line.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from pyinfra import host, logger, state

from tasks.context import DeployBlocked, host_tag


@contextmanager
def only_this_host() -> Iterator[None]:
    """Steps inside run for this host; a DeployBlocked fails this host alone while others remain."""
    try:
        yield
    except DeployBlocked as err:
        if not [other for other in state.inventory.get_active_hosts() if other.name != host.name]:
            raise
        for line in str(err).splitlines():
            logger.error(f"    {host_tag()}{line}")
        state.fail_hosts({state.inventory.get_host(host.name)})
