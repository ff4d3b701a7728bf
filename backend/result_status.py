"""A campaign's result status: its checks, "checks passed" or "needs review", stored on its row.

Why on the campaign row: the database, the analysis report, the CLI and every dashboard page
must say the same thing, so it is computed once -- when the controller settles the campaign
(`record_result_status`, called from `Controller._settle` in the same transaction that makes
the campaign SUCCEEDED / FAILED / CANCELLED) -- and read everywhere else
(`campaign_result_status`, `result_statuses`). The campaign's own status stays what it was
(SUCCEEDED means every job ran); the result status says whether the result can be trusted.

The checks come from the recorded summaries (`FitResult.payload`) of the campaign's
SUCCEEDED jobs: a train job's "diagnostics" (`sbi_engine.result_checks.ensemble_checks`) and
a fit-stage job's optional "checks" list (`sbi_engine.result_checks.fit_checks`). The rules
and limits live in `sbi_engine.result_checks`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from backend.db.engine import resolve_engine
from backend.db.models import FIT_KINDS, Campaign, Event, FitResult, Job
from backend.states import JobStatus, utcnow

if TYPE_CHECKING:  # pragma: no cover - the same classes, from the module's usual name
    from sbi_engine.result_checks import CheckRecord, ResultStatus


def _checks_module() -> ModuleType:
    """sbi_engine/result_checks.py loaded from its file: `import sbi_engine.result_checks`
    would run `sbi_engine/__init__.py`, which imports JAX, and the controller's settle step and
    the dashboard must not pay for (or depend on) that. The module is pure standard library;
    it is the same file the engine imports (see `backend.analysis.spec_engine` for the pattern)."""
    name = "_nsbi_result_checks"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("sbi_engine")
    if (
        package is None or package.submodule_search_locations is None
    ):  # pragma: no cover - a broken install
        raise ImportError("cannot find the sbi_engine package")
    root = Path(list(package.submodule_search_locations)[0])
    spec = importlib.util.spec_from_file_location(name, root / "result_checks.py")
    if spec is None or spec.loader is None:  # pragma: no cover - a broken install
        raise ImportError(f"cannot load {root / 'result_checks.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


checks = _checks_module()
CHECKS_PASSED: str = checks.CHECKS_PASSED
NEEDS_REVIEW: str = checks.NEEDS_REVIEW
EXIT_NEEDS_REVIEW = 3  # `nsbi analysis run`: the campaign succeeded but its result needs review
if not TYPE_CHECKING:  # (the type checker takes the class from the import above)
    ResultStatus = checks.ResultStatus
ensemble_checks = checks.ensemble_checks
fit_checks = checks.fit_checks
result_status = checks.result_status

__all__ = [
    "CHECKS_PASSED",
    "NEEDS_REVIEW",
    "EXIT_NEEDS_REVIEW",
    "checks",
    "ResultStatus",
    "campaign_checks",
    "compute_result_status",
    "record_result_status",
    "campaign_result_status",
    "result_statuses",
    "short_label",
    "badge",
    "badge_markdown",
]

log = logging.getLogger("nsbi.result_status")
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")  # campaign states whose result status is stored


def records_from_summaries(
    rows: Iterable[tuple[str, str | None, Mapping[str, Any] | None]],
) -> list[CheckRecord]:
    """Check records from (job kind, task, recorded summary) of finished jobs.

    A train summary with a "diagnostics" key gives the ensemble's checks (a summary without
    that key, e.g. of a test job, gives none); a fit-stage summary its "checks" list, if any.
    """
    out: list[CheckRecord] = []
    for kind, task, payload in rows:
        payload = payload if isinstance(payload, Mapping) else {}
        if kind == "train":
            if "diagnostics" in payload:
                diag = payload.get("diagnostics")
                out += ensemble_checks(
                    task or payload.get("task"), diag if isinstance(diag, Mapping) else None
                )
        elif kind in FIT_KINDS:
            out += fit_checks(payload)
    return out


def campaign_checks(session: Session, campaign_id: int) -> list[CheckRecord]:
    """Every check record of the campaign's SUCCEEDED jobs, in job order."""
    q = (
        sa.select(col(Job.kind), col(Job.task), col(FitResult.payload))
        .join(FitResult, col(FitResult.job_id) == Job.id)
        .where(col(Job.campaign_id) == campaign_id, col(Job.status) == JobStatus.SUCCEEDED)
        .order_by(col(Job.id))
    )
    return records_from_summaries((r.kind, r.task, r.payload) for r in session.execute(q))


def compute_result_status(session: Session, campaign_id: int) -> ResultStatus:
    """The campaign's result status from its jobs' recorded summaries (not stored)."""
    return result_status(campaign_checks(session, campaign_id))


def record_result_status(
    session: Session, campaign_ids: Iterable[int], *, actor: str = "controller"
) -> dict[int, ResultStatus]:
    """Compute and store the result status of each campaign (call when a campaign becomes
    final; the caller commits). Also writes one campaign Event (to_state "CHECKS_PASSED" or
    "NEEDS_REVIEW", reason: the summary, detail: the failed checks) so the history says when
    and why. A campaign whose checks cannot be read is logged and left without a status."""
    out: dict[int, ResultStatus] = {}
    now = utcnow()
    for cid in campaign_ids:
        camp = session.get(Campaign, cid)
        if camp is None:
            continue
        try:
            status = compute_result_status(session, cid)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a malformed summary
            log.warning("result status of campaign %s: cannot compute it: %s", cid, exc)
            continue
        doc = status.to_dict()
        camp.result_status = doc
        session.add(camp)
        session.add(
            Event(
                campaign_id=cid,
                time=now,
                from_state=camp.status,
                to_state=status.state.upper().replace(" ", "_"),
                reason=status.summary(),
                actor=actor,
                detail={"failed": doc["failed"], "n_checks": doc["n_checks"]},
            )
        )
        out[cid] = status
    return out


def campaign_result_status(
    campaign_id: int, engine: Engine | None = None, *, compute_missing: bool = True
) -> ResultStatus | None:
    """The result status of a campaign: the stored one once it is final; otherwise (a campaign
    still running or re-activated by a new fit, or one settled before this column existed)
    the status of the results recorded so far -- unless `compute_missing` is false, which
    returns only what is stored (None if nothing)."""
    with Session(resolve_engine(engine)) as s:
        row = s.execute(
            sa.select(col(Campaign.status), col(Campaign.result_status)).where(
                col(Campaign.id) == campaign_id
            )
        ).one_or_none()
        if row is None:
            return None
        status = ResultStatus.from_dict(row.result_status)
        if compute_missing and (status is None or row.status not in FINAL):
            status = compute_result_status(s, campaign_id)
        return status


def result_statuses(
    campaign_ids: Iterable[int] | None = None,
    engine: Engine | None = None,
    *,
    failing_so_far: bool = False,
) -> dict[int, ResultStatus | None]:
    """{campaign id: stored result status or None}, in one query (for lists of campaigns).

    With `failing_so_far`, a campaign that is not final (no stored status yet) whose finished
    jobs already failed a check gets that "needs review" status instead of None: a list must
    not say "checks pending" for a result already known to need review. One more query per
    such campaign; a campaign with no failed check so far stays None ("checks pending")."""
    q = sa.select(col(Campaign.id), col(Campaign.status), col(Campaign.result_status))
    if campaign_ids is not None:
        q = q.where(col(Campaign.id).in_(list(campaign_ids)))
    out: dict[int, ResultStatus | None] = {}
    with Session(resolve_engine(engine)) as s:
        for cid, state, doc in s.execute(q).all():
            status = ResultStatus.from_dict(doc)
            if failing_so_far and state not in FINAL:
                so_far = compute_result_status(s, int(cid))
                status = None if so_far.passed else so_far
            out[int(cid)] = status
    return out


def short_label(status: ResultStatus | None, campaign_status: str | None = None) -> str:
    """A table cell: 'checks passed', 'needs review (2)', 'pending' (not final yet) or '-'."""
    if status is None:
        return "pending" if campaign_status not in FINAL else "-"
    return status.state if status.passed else f"{status.state} ({len(status.failed)})"


def badge_markdown(
    status: ResultStatus | None, campaign_status: str | None = None, *, limit: int = 4
) -> str:
    """The dashboard's badge (Streamlit markdown): green 'checks passed', red 'needs review:
    <failed checks, value vs threshold>', grey 'checks pending' ('' with nothing to say)."""
    running = campaign_status is not None and campaign_status not in FINAL
    if status is None or (status.passed and not status.checks):
        text = badge(None, campaign_status) or ("no checks recorded" if status is not None else "")
        return f":gray-badge[{text}]" if text else ""
    so_far = " (results so far)" if running else ""
    if status.passed:
        n = len(status.checks)
        return (
            f":green-badge[{CHECKS_PASSED}] {n} check{'s' if n != 1 else ''}, none failed{so_far}"
        )
    shown = ", ".join(r.short().replace("[", "(").replace("]", ")") for r in status.failed[:limit])
    more = f" (+{len(status.failed) - limit} more)" if len(status.failed) > limit else ""
    return f":red-badge[{NEEDS_REVIEW}: {shown}{more}]{so_far}"


def badge(status: ResultStatus | None, campaign_status: str | None = None) -> str:
    """One line for tables and headers: 'checks passed (12 checks)', 'needs review: ...',
    or, where no status is stored, 'checks pending' (campaign not final) / '' (unknown)."""
    if status is not None:
        return status.summary()
    if campaign_status is not None and campaign_status not in FINAL:
        return "checks pending"
    return ""
