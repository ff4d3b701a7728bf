"""The "noop" job kind: exercises the control plane in about a second, without JAX, and
injects faults on request (a deliberate failure, a hung worker).

Not part of the installed worker: a worker runs it only with ``NSBI_JOB_KIND_MODULES`` naming
this module (``nsbi_testing.worker_env()`` gives the variables), as the tests do.
"""

from __future__ import annotations

import json
import time
from typing import Any

from backend.jobkinds import JobContext, JobKind, Preempted


def run_noop(ctx: JobContext) -> dict[str, Any]:
    """``steps`` steps of ``step_s`` seconds, a metric per step, checkpoints.

    Resumes from the newest checkpoint of any attempt, so a retry runs fewer steps. Params:
    steps (10), step_s (0.05), checkpoint_every (1), and the faults: fail_on_attempts ([]) and
    fail_at_step (steps // 2) raise at that step on those attempts; ignore_stop (False: a stop
    request is honoured within one step; True simulates a hung worker for the SIGKILL tests);
    echo (False: True prints a line per step, the output the dashboard tails while it runs).
    """
    p = ctx.params
    steps = int(p.get("steps", 10))
    step_s = float(p.get("step_s", 0.05))
    every = max(1, int(p.get("checkpoint_every", 1)))
    fail_on = {int(a) for a in p.get("fail_on_attempts", [])}
    fail_at = int(p.get("fail_at_step", steps // 2))
    latest = ctx.checkpointer.load_latest()
    start = json.loads(latest[1])["step"] if latest else 0
    steps_run = 0
    ignore_stop = bool(p.get("ignore_stop", False))
    for step in range(start + 1, steps + 1):
        if ignore_stop:
            time.sleep(step_s)
        elif ctx.stop.event.wait(step_s):
            raise Preempted(ctx.stop.reason)
        ctx.writer.add_metrics(
            [
                {"member": -1, "step": step, "epoch": None, "name": "loss", "value": 1.0 / step},
                {
                    "member": 0,
                    "step": step,
                    "epoch": None,
                    "name": "train_loss",
                    "value": 2.0 / step,
                },
            ]
        )
        steps_run += 1
        if p.get("echo"):
            print(f"noop step {step} of {steps}", flush=True)
        ctx.set_progress(step=step)
        if step % every == 0 or step == steps:
            ctx.checkpointer.save(step, json.dumps({"step": step}).encode())
        if ctx.attempt in fail_on and step >= fail_at:
            raise RuntimeError(
                f"noop job: deliberate failure at step {step} on attempt {ctx.attempt}"
            )
    uri = ctx.put_artifact("noop.json", json.dumps({"steps": steps}).encode())
    return {
        "artifacts": {"noop": uri},
        "summary": {"steps": steps, "steps_run": steps_run, "resumed_from": start or None},
    }


KINDS = {"noop": JobKind(run_noop, cooperative=True)}
