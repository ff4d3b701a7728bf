"""SIGTERM while the main thread holds its stop event's lock: the state `Event.wait` is in
while it re-acquires the lock. A controller terminated between passes hung there for ever (a
CI run of test_faults.py left one behind). Each case runs in a subprocess with a deadline, so a
deadlock fails the test instead of hanging the suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The handler runs at the first bytecode boundary after os.kill, inside the `with` block, in the
# thread that holds the lock, exactly as when the signal lands in Event.wait's re-acquire.
SIGNAL_WITH_LOCK_HELD = textwrap.dedent(
    """
    import os, signal, sys, threading
    from backend.jobkinds import StopFlag
    from backend.signal_safe import handler_setting

    case = sys.argv[1]
    if case == "naive":
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    elif case == "handler_setting":
        stop = threading.Event()
        signal.signal(signal.SIGTERM, handler_setting(stop))
    else:  # the worker's stop flag, set as its signal handler sets it
        flag = StopFlag()
        stop = flag.event
        signal.signal(signal.SIGTERM, lambda *_: flag.set("received SIGTERM", from_signal=True))
    with stop._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes: the pending handler runs among them
            pass
    print("stopped" if stop.wait(10) else "never set", flush=True)
    """
)

# The controller's own handler, taken from a running `run_forever` and called by a thread that
# holds the stop event's lock (a handler that calls stop.set() deadlocks that thread).
CONTROLLER = textwrap.dedent(
    """
    import signal, sys, threading, time
    from pathlib import Path
    from backend.controller import Controller, ControllerConfig
    from backend.db import create_engine, init_db
    from backend.launchers.local import LocalLauncher

    tmp = Path(sys.argv[1])
    engine = init_db(create_engine(f"sqlite:///{tmp / 'nsbi.db'}"))
    (tmp / "store").mkdir()
    ctl = Controller(engine, (tmp / "store").as_uri(), {"local": LocalLauncher(tmp / "var", gpus=[])},
                     ControllerConfig(tick_interval_s=0.05))
    stop = threading.Event()

    def terminate_with_the_lock_held():
        while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            time.sleep(0.01)
        handler = signal.getsignal(signal.SIGTERM)
        with stop._cond:
            handler(signal.SIGTERM, None)

    threading.Thread(target=terminate_with_the_lock_held, daemon=True).start()
    ticks = ctl.run_forever(stop)
    print(f"stopped after {ticks} passes", flush=True)
    """
)


def _run(script: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_handler_that_calls_set_deadlocks_with_the_lock_held():
    """The hazard is real: the naive handler never returns (this is what hung the controller)."""
    with pytest.raises(subprocess.TimeoutExpired):
        _run(SIGNAL_WITH_LOCK_HELD, "naive", timeout=5)


@pytest.mark.parametrize("case", ["handler_setting", "stop_flag"])
def test_signal_safe_handlers_set_the_event_once_the_lock_is_free(case):
    out = _run(SIGNAL_WITH_LOCK_HELD, case)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stopped"


def test_controller_stops_on_sigterm_while_its_stop_lock_is_held(tmp_path):
    out = _run(CONTROLLER, str(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("stopped after ")
