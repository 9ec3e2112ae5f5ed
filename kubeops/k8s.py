"""pyinfra operations for Kubernetes objects: applied, absent, ready.

They behave like pyinfra's own operations: the body reads the live state whenever pyinfra asks
it for commands (during change detection, and again when executing, in operation order, so it
sees what earlier operations did), yields nothing when there is nothing to do (so a rerun
reports no change and a `--dry` run is honest), and prints a unified diff of each object under
`--diff`. The work itself (apply, delete, wait) is a Python command, so a later step's objects
are applied only after an earlier step's objects are ready.

The connection comes from `kubeops.connection.kube_for(host)`; the deploy registers it once.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import click
from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, operation
from pyinfra.api.exceptions import OperationError

from . import changes, interrupt, waiter
from .client import KubeApiError, KubeUnreachable
from .connection import WriteRefused, check_before_writing, kube_for, registered
from .kinds import Ref


def _say(label: str, line: str) -> None:
    logger.info(f"    [{host.name}] {label}: {line}")


def _show_diff(plan: changes.Plan) -> None:
    verb = {"create": "Will create", "update": "Will change"}[plan.action]
    logger.info(f"    [{host.name}] {verb} {click.style(str(plan.ref), bold=True)}")
    for line in plan.diff:
        if line.startswith(("+++", "---")):
            continue
        colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
        logger.info("      " + (click.style(line, fg=colour) if colour else line))
    if plan.action == "update" and not plan.diff:
        logger.info("      (only the applied-manifest marker changes)")


def _diff_wanted() -> bool:
    """Diffs print once: during change detection, or at execution when detection was skipped (-y)."""
    return bool(state.config.DIFF) and not (state.is_executing and state.check_for_changes)


def _fail(label: str, message: str) -> bool:
    host.log_styled(f"{label}: {message}", fg="red", log_func=logger.error)
    return False


def report_retries(label: str) -> None:
    """One line for the transient API errors this host's connection rode out since the last report."""
    kube = registered(host)
    summary = kube.retries.take_summary() if kube is not None else None
    if summary:
        _say(label, summary)


def _run_safely(label: str, work: Callable[[], object]) -> bool:
    """Run the execute-time work; turn our errors into one red line instead of a traceback.

    First the host's write guard (the deploy lock) must agree; the step is noted for the summary
    an interrupted run prints."""
    interrupt.step_started(label, host.name)
    try:
        check_before_writing(host)
        return work() is not False
    except (waiter.WaitFailed, KubeApiError, KubeUnreachable, WriteRefused) as err:
        return _fail(label, str(err))
    finally:
        report_retries(label)


API_ERRORS = (KubeApiError, KubeUnreachable)


def changed_this_run() -> bool:
    """Whether an operation of this host that has already run in this run changed something (or
    waited for something: a command ran). False on a rerun that found everything in place."""
    for op_data in state.ops[host].values():
        meta = op_data.operation_meta
        if meta.is_complete() and meta.did_change():
            return True
    return False


def failed(label: str, err: Exception):
    """What an operation yields when reading the live state failed: during change detection a clean
    pyinfra error; while executing a command that fails the operation with the server's message."""
    if not state.is_executing:
        raise OperationError(f"{label}: {err}")
    yield python_command(label, lambda: _fail(label, str(err)))


def python_command(label: str, work: Callable[[], object]) -> FunctionCommand:
    """A command that runs `work()` at execute time; False or a Kubernetes error fails the operation
    with one clear line (named by `label`) instead of a traceback."""
    return FunctionCommand(lambda state, host: _run_safely(label, work), (), {})


# Waits left for later: (host name, step) -> the objects an `applied(wait=step)` changed or found
# not ready. Written by applied()'s body each time pyinfra asks it for commands (so at execution
# it says what that run applied), read by the `awaited(step)` that comes after it.
_LATER: dict[tuple[str, str], list[Ref]] = {}


@operation(is_idempotent=True)
def applied(manifests: Iterable[dict] | Callable[[], Iterable[dict]], field_manager: str = "pyinfra",
            wait: bool | str = False, timeout: float = 300, poll: float = 2.0, unschedulable_grace: float = 0.0,
            label: str = "apply"):
    """
    Make Kubernetes objects match their manifests, with server-side apply.

    + manifests: object dicts (apiVersion, kind, metadata.name, ...), applied in this order; or a
      function returning them, called when the operation runs (for values an earlier operation makes)
    + field_manager: the field manager named in server-side apply; the playbook owns what it applies
    + wait: True: after applying, wait until every object is ready (see ``kubeops.waiter.READY``);
      a step name ("5. ASR"): apply now and leave that wait to a later ``k8s.awaited(step=...)``,
      so the operations in between run while these objects get ready
    + timeout: seconds to wait for each object
    + poll: seconds between readiness checks
    + unschedulable_grace: seconds a pod may stay unschedulable (a node may be coming) before the wait fails
    + label: how progress and errors name this step

    Only the objects whose live state differs are applied; with ``--diff`` each one's change is
    printed as YAML. With ``wait``, an object that is unchanged but not ready (pods lost to a Spot
    interruption, say) is waited for; failing pods stop the wait with their reason.

    **Example:**

    .. code:: python

        k8s.applied(
            name="Create the namespace",
            manifests=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hosthree"}}],
        )
        k8s.applied(name="ASR", manifests=asr_manifests, wait="5. ASR")  # applied, not waited for
        ...                                                               # other steps meanwhile
        k8s.awaited(name="ASR is Ready", step="5. ASR", timeout=1500)      # waited for here
    """
    kube = kube_for(host)
    if callable(manifests):
        manifests = manifests()
    stamped = [changes.with_applied_hash(m) for m in manifests]
    try:
        plans = changes.plan_all(kube, stamped, field_manager=field_manager)
    except API_ERRORS as err:
        yield from failed(label, err)
        return
    to_apply = [p for p in plans if p.changes]
    to_wait = [p.ref for p in plans if wait and (p.changes or not waiter.is_ready(p.live))]
    if isinstance(wait, str):  # waited for by awaited(step=wait)
        _LATER[(host.name, wait)], to_wait = to_wait, []
    if _diff_wanted():
        for plan in to_apply:
            _show_diff(plan)
    if not to_apply and not to_wait:
        report_retries(label)
        host.noop(", ".join(str(p.ref) for p in plans) + " up to date")
        return

    def apply_then_wait():
        for plan in to_apply:
            kube.apply(plan.manifest, field_manager=field_manager)
            _say(label, f"{plan.action}d {plan.ref}")
        _wait_ready(kube, to_wait, timeout, poll, unschedulable_grace, label)

    yield python_command(label, apply_then_wait)


def _wait_ready(kube, refs: list[Ref], timeout: float, poll: float, unschedulable_grace: float, label: str) -> None:
    for ref in refs:
        waiter.wait_until_ready(kube, ref, timeout=timeout, poll=poll, unschedulable_grace=unschedulable_grace,
                                progress=lambda line: _say(label, line))
        _say(label, f"{ref} is ready")


@operation(is_idempotent=True)
def awaited(step: str, timeout: float = 300, poll: float = 2.0, unschedulable_grace: float = 0.0,
            label: str | None = None):
    """
    Wait for the objects an earlier ``applied(wait=step)`` of this run applied or found not ready.

    + step: the name given as that operation's ``wait``
    + timeout: seconds to wait for each object, counted from here
    + poll: seconds between readiness checks
    + unschedulable_grace: seconds a pod may stay unschedulable (a node may be coming) before the wait fails
    + label: how progress and errors name this step (default: ``step``)

    Nothing to wait for (everything was up to date and ready) is a no-op without an API request.

    **Example:**

    .. code:: python

        k8s.awaited(name="ASR is Ready", step="5. ASR", timeout=1500)
    """
    label = label or step
    refs = _LATER.get((host.name, step), [])
    if not refs:
        host.noop(f"{step}: nothing applied that is not ready")
        return
    kube = kube_for(host)
    if _diff_wanted():
        for ref in refs:
            if ref.kind in waiter.READY:  # a Service, say, is ready once it exists: no line for it
                logger.info(f"    [{host.name}] Will wait for {click.style(str(ref), bold=True)} to be ready")

    yield python_command(label, lambda: _wait_ready(kube, refs, timeout, poll, unschedulable_grace, label))


@operation(is_idempotent=True)
def absent(refs: Iterable[Ref], wait: bool = True, timeout: float = 300, poll: float = 2.0,
           label: str = "delete"):
    """
    Make sure Kubernetes objects do not exist.

    + refs: the objects (``kubeops.kinds.Ref``) to delete; missing ones are fine
    + wait: wait until each one is really gone (finalizers, dependants)
    + timeout: seconds to wait for each object
    + poll: seconds between checks
    + label: how progress and errors name this step

    **Example:**

    .. code:: python

        k8s.absent(
            name="Remove the TTS Deployment",
            refs=[Ref("apps/v1", "Deployment", "qwen3-tts", "hosthree")],
        )
    """
    kube = kube_for(host)
    try:
        present = [ref for ref in refs if kube.get(ref) is not None]
    except API_ERRORS as err:
        yield from failed(label, err)
        return
    if _diff_wanted():
        for ref in present:
            logger.info(f"    [{host.name}] Will delete {click.style(str(ref), bold=True)}")
    if not present:
        report_retries(label)
        host.noop("already absent: " + ", ".join(str(r) for r in refs))
        return

    def delete_then_wait():
        for ref in present:
            kube.delete(ref)
            _say(label, f"deleted {ref}")
        if wait:
            for ref in present:
                _wait_gone(kube, ref, timeout, poll, label)

    yield python_command(label, delete_then_wait)


def _wait_gone(kube, ref: Ref, timeout: float, poll: float, label: str) -> None:
    deadline = time.monotonic() + timeout
    beat = waiter.Heartbeat(f"{ref} to be gone", timeout, lambda line: _say(label, line), kube.progress_interval,
                            announce=False)
    while kube.get(ref) is not None:
        beat.update(f"{ref}: deleting")
        if time.monotonic() >= deadline:
            raise waiter.WaitTimedOut(f"{ref} still exists after {timeout:.0f}s (finalizers? `kubectl describe` it)")
        time.sleep(poll)
    _say(label, f"{ref} is gone")


@operation(is_idempotent=True)
def ready(refs: Iterable[Ref], timeout: float = 300, poll: float = 2.0, label: str = "wait"):
    """
    Wait until Kubernetes objects are ready, without changing them.

    + refs: the objects to wait for
    + timeout: seconds to wait for each object
    + poll: seconds between checks
    + label: how progress and errors name this step

    **Example:**

    .. code:: python

        k8s.ready(name="ASR is serving", refs=[Ref("apps/v1", "Deployment", "qwen3-asr", "hosthree")])
    """
    kube = kube_for(host)
    refs = list(refs)
    try:
        pending = [ref for ref in refs if not waiter.is_ready(kube.get(ref))]
    except API_ERRORS as err:
        yield from failed(label, err)
        return
    if not pending:
        report_retries(label)
        host.noop("ready: " + ", ".join(str(r) for r in refs))
        return

    yield python_command(label, lambda: _wait_ready(kube, pending, timeout, poll, 0.0, label))
