"""Write intents from the dashboard: create, estimate, launch, cancel, retry, start a fit.

Each is one `backend.service` call (the controller acts on the intent later); no Streamlit
here so the pages stay thin and these stay testable.
"""

from __future__ import annotations

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

    import copy
    import datetime as dt

    config = copy.deepcopy(DEMO_CONFIG)
    config["name"] = f"demo-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    return create(config, launch=launch)


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


def start_fit(campaign_id: int, request: Mapping[str, Any]) -> int:
    """Start fit / impacts / scan / toys jobs on a campaign's trained ensembles.

    Uses `service.start_fit(campaign_id, request)` when the backend offers it; returns the
    campaign that holds the new jobs.
    """
    service = _service()
    fn = getattr(service, "start_fit", None)
    if fn is None:
        raise NotImplementedError("the backend has no service.start_fit yet; fit jobs come with the campaign "
                                  "config (fit/impacts/scan/toys stages) and run after training")
    return int(fn(campaign_id, dict(request)) or campaign_id)
