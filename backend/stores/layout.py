"""Where each object of a job lives, relative to the job's folder in the store.

One place for the names so the worker (writer), the controller and ingest (readers) agree::

    <job>/spec.json
    <job>/attempts/<n>/heartbeat/<seq>.json
    <job>/attempts/<n>/metrics/<seq>.jsonl     resources/<seq>.jsonl
    <job>/attempts/<n>/output/<seq>.txt        (stdout and stderr, backend/worker_output.py)
    <job>/attempts/<n>/checkpoints/<step>.ckpt
    <job>/attempts/<n>/result.json             exit.json
    <job>/attempts/<n>/artifacts/...           (ensembles and other outputs)
"""

from __future__ import annotations

from backend.stores.base import SEGMENT_DIGITS

SPEC = "spec.json"
CANCEL = "cancel.json"  # written by the controller: a worker that sees it stops


def job_prefix(campaign: str, job: str) -> str:
    return f"campaigns/{campaign}/jobs/{job}"


def attempt_prefix(attempt: int) -> str:
    return f"attempts/{int(attempt)}"


def heartbeat_prefix(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/heartbeat"


def metrics_prefix(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/metrics"


def resources_prefix(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/resources"


def output_prefix(attempt: int) -> str:
    """The attempt's stdout and stderr as the worker copied them (numbered ``.txt`` segments)."""
    return f"{attempt_prefix(attempt)}/output"


def checkpoints_prefix(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/checkpoints"


def checkpoint_key(attempt: int, step: int) -> str:
    return f"{checkpoints_prefix(attempt)}/{int(step):0{SEGMENT_DIGITS + 2}d}.ckpt"


def result_key(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/result.json"


def exit_key(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/exit.json"


def artifacts_prefix(attempt: int) -> str:
    return f"{attempt_prefix(attempt)}/artifacts"
