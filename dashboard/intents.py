"""Write intents from the dashboard: create, estimate, launch, cancel, retry, start a fit.

Each is one `backend.service` call (the controller acts on the intent later); no Streamlit
here so the pages stay thin and these stay testable.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from dashboard.queries import as_dict


def _service():
    from backend import service

    return service


def estimate(config: Mapping[str, Any]) -> dict:
    """Cost and GPU-hour estimate of a config before it is created (validates it too)."""
    return as_dict(_service().estimate_campaign(dict(config)))


def create(config: Mapping[str, Any], *, launch: bool = False, owner: str = "dashboard") -> int:
    """Create a campaign from a config; optionally request its launch at once."""
    service = _service()
    campaign_id = service.create_campaign(dict(config), owner=owner)
    if launch:
        service.request_launch(campaign_id)
    return int(campaign_id)


def create_demo(*, launch: bool = True) -> int:
    """The one-click demo campaign (the backend's built-in config, named uniquely)."""
    from backend.campaigns import DEMO_CONFIG

    config = copy.deepcopy(DEMO_CONFIG)
    config["name"] = f"demo-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    return create(config, launch=launch)


def save_upload(name: str, data: bytes) -> str:
    """Keep an uploaded analysis file under <NSBI_HOME>/analyses/ (named by its content hash,
    so the same upload is one file) and return its path. Relative sample paths inside it are
    read relative to that folder: for file samples, give the path of the file instead."""
    import hashlib
    from pathlib import Path

    from backend.settings import get_settings

    folder = get_settings().home / "analyses"
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name).name or "analysis.yaml"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{stem}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def analysis_problems(path: str) -> list[str]:
    """Every problem of an analysis file ('FILE:LINE: key: message'); [] when it is valid."""
    return _service().analysis_file_problems(path)


def create_from_analysis(path: str, *, launch: bool = True, owner: str = "dashboard") -> int:
    """Create (and by default launch) the campaign of an analysis file; jobs an earlier run
    already did are reused. Raises AnalysisError (`.problems`) for an invalid file."""
    return int(_service().create_campaign_from_analysis_file(path, owner=owner, launch=launch))


def launch(campaign_ids: Sequence[int]) -> None:
    for cid in campaign_ids:
        _service().request_launch(int(cid))


def cancel(campaign_ids: Sequence[int] = (), job_ids: Sequence[int] = ()) -> None:
    service = _service()
    for cid in campaign_ids:
        service.request_cancel(campaign_id=int(cid))
    if job_ids:
        service.request_cancel(job_ids=[int(j) for j in job_ids])


def retry(campaign_ids: Sequence[int] = (), job_ids: Sequence[int] = ()) -> None:
    service = _service()
    for cid in campaign_ids:
        service.request_retry(campaign_id=int(cid))
    if job_ids:
        service.request_retry(job_ids=[int(j) for j in job_ids])


FIT_KINDS = ("fit", "impacts", "scan", "toys")


def start_fit(campaign_id: int, request: Mapping[str, Any]) -> int:
    """Start fit / impacts / scan / toys jobs on a campaign's trained ensembles; returns how many.

    `service.start_fit(campaign_id, request)` adds a new fit run (request keys: data, mu_true,
    steps, scan {low, high, points}, toys). A backend without it falls back to releasing the
    campaign's own still-PENDING fit-stage jobs with a launch request.
    """
    service = _service()
    fn = getattr(service, "start_fit", None)
    if fn is not None:
        return len(fn(campaign_id, dict(request)) or [])
    steps = set(request.get("steps") or FIT_KINDS)
    pending = [
        j
        for kind in steps & set(FIT_KINDS)
        for j in service.list_jobs(
            campaign_id=campaign_id, states=["PENDING"], kind=kind, limit=10_000
        )[0]
    ]
    if not pending:
        raise RuntimeError(
            f"campaign {campaign_id} has no pending {'/'.join(sorted(steps))} jobs to start; enable the fit, "
            "impacts, scan or toys stages in the campaign config (new fits on finished ensembles need "
            "backend.service.start_fit)"
        )
    service.request_launch(campaign_id)
    return len(pending)
