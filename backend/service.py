"""What the dashboard and the CLI call: create campaigns, write intents, read views.

A facade: every name here is defined in the module that does that one job, and re-exported
so callers keep one import (``from backend import service``):

    backend.campaign_create     create_campaign (the campaign row, its jobs and DAG edges)
    backend.intents             request_launch / request_cancel / request_retry
    backend.fit_starts          start_fit (a new fit run on the trained ensembles)
    backend.analysis.campaign   analysis campaigns (content keys, reuse of earlier results)
    backend.listings            campaign summaries and details, job pages, events, progress
    backend.results_view        fit-stage results and train diagnostics
    backend.metrics_view        metric curves and resource samples, downsampled
    backend.compare_view        ensembles across campaigns, their settings, mean curves
    backend.cost_view           estimates before launch and accrued cost summaries
    backend.budget              the budget rule the controller applies
    backend.campaign_rows       NotFound / IntentError

Writes are *intents* only (launch requested, cancel requested, retry requested); the
controller acts on them. Reads return frozen dataclasses or plain dicts, never ORM rows, so
callers can keep them after the session closes. Every function takes an optional `engine`
(default: the cached engine for `DATABASE_URL`). Code inside the backend imports the owning
module instead of this one.
"""

from __future__ import annotations

from backend.analysis.campaign import (
    analysis_file_problems,
    analysis_plan,
    campaign_analysis,
    create_campaign_from_analysis,
    create_campaign_from_analysis_file,
)
from backend.budget import BudgetDecision, budget_allows_launch
from backend.campaign_create import create_campaign
from backend.campaign_rows import IntentError, NotFound
from backend.compare_view import ensemble_curves, ensemble_diagnostics, ensembles
from backend.cost_view import cost_summary, estimate_campaign
from backend.db.models import FIT_KINDS
from backend.fit_starts import start_fit
from backend.intents import request_cancel, request_launch, request_retry
from backend.listings import (
    CampaignDetail,
    CampaignSummary,
    JobRow,
    campaign_ids,
    campaign_job_records,
    campaign_progress,
    get_campaign,
    get_job,
    job_attempts,
    job_events,
    list_campaigns,
    list_jobs,
)
from backend.metrics_view import metric_names, metric_series, resource_series
from backend.results_view import campaign_diagnostics, fit_results

__all__ = [
    "FIT_KINDS",
    "BudgetDecision",
    "CampaignDetail",
    "CampaignSummary",
    "IntentError",
    "JobRow",
    "NotFound",
    "analysis_file_problems",
    "analysis_plan",
    "budget_allows_launch",
    "campaign_analysis",
    "campaign_diagnostics",
    "campaign_job_records",
    "campaign_ids",
    "campaign_progress",
    "cost_summary",
    "ensemble_curves",
    "ensemble_diagnostics",
    "ensembles",
    "create_campaign",
    "create_campaign_from_analysis",
    "create_campaign_from_analysis_file",
    "estimate_campaign",
    "fit_results",
    "get_campaign",
    "get_job",
    "job_attempts",
    "job_events",
    "list_campaigns",
    "list_jobs",
    "metric_names",
    "metric_series",
    "request_cancel",
    "request_launch",
    "request_retry",
    "resource_series",
    "start_fit",
]
