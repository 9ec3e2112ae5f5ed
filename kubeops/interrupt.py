"""Ctrl-C stops the run: at once, writing nothing more, saying where it stopped, exit code 130.

pyinfra 3.10's CLI installs its own SIGINT handler (pyinfra_cli/main.py: it prints "Exiting upon
user request!" and raises SystemExit(0) in whatever greenlet runs), which our operations' waits
and pyinfra's own loop can swallow: the run went on polling, sometimes writing, and exited 0.
`install()` replaces that handler once the deploy is being prepared (pyinfra has set its own by
then): it names the step that was running, runs the registered cleanups (releasing the deploy
lock) and ends the process with 130 (128 + SIGINT, what a shell reports), so one Ctrl-C is
enough and no later step starts. Everything the playbook does is idempotent, so a rerun resumes.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

EXIT_CODE = 128 + signal.SIGINT

_state: dict = {"hint": "rerun the same command", "installed": False}
_steps: dict[str, str] = {}  # host name -> the step it runs now: a fleet run has several at once
_cleanups: list[Callable[[], None]] = []


def step_started(label: str, host_name: str = "") -> None:
    """Remember the step whose work runs now on this host (for the summary line)."""
    _steps[host_name] = label


def interrupted() -> bool:
    """True once Ctrl-C (or SIGTERM) has arrived: the run is ending."""
    return bool(_state.get("interrupted"))


def on_interrupt(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` when the run is interrupted, before the process ends (errors are ignored)."""
    _cleanups.append(cleanup)


def install(rerun_hint: str) -> None:
    """Take over SIGINT (and SIGTERM) for this run. Idempotent."""
    _state["hint"] = rerun_hint
    if _state["installed"]:
        return
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    _state["installed"] = True


def _interrupted(signum, frame) -> None:  # noqa: ANN001 (signal handler signature)
    # pyinfra's CLI runs under gevent (monkey.patch_all in pyinfra_cli/__init__.py). A signal that
    # lands while every greenlet sleeps runs this handler in the hub, where a blocking call (the
    # lock's release over HTTP) raises BlockingSwitchOutError: the cleanup failed silently and the
    # rerun found the lock held. There, hand the work to a greenlet the hub runs next.
    try:
        import gevent
        in_hub = gevent.getcurrent() is gevent.get_hub()
    except ImportError:  # not under pyinfra's CLI
        in_hub = False
    _state["interrupted"] = True  # from now on no write starts (connection.check_before_writing)
    if in_hub:
        gevent.spawn(_finish, signum)
        return
    _finish(signum)


def _finish(signum: int) -> None:
    if len(_steps) > 1:
        step = ", ".join(f"{label} on {name}" for name, label in _steps.items())
    else:
        step = next(iter(_steps.values()), "the preparation (nothing was written yet)")
    what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    sys.stdout.flush()
    print(f"\n--> Interrupted ({what}) during {step}; nothing more is written. Everything done so far is "
          f"kept and a rerun resumes from there: {_state['hint']}", file=sys.stderr, flush=True)
    for cleanup in _cleanups:
        try:
            cleanup()
        except Exception:  # the run is ending; a failed cleanup must not keep it alive
            pass
    sys.stderr.flush()
    # Not sys.exit: SystemExit raised inside a greenlet or one of pyinfra's handlers can be caught
    # and the run would carry on. Nothing is buffered that matters (pyinfra writes no state file).
    os._exit(128 + signum)
