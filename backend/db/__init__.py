"""The control plane's database: tables, engine factory, sessions and migrations."""

from backend.db.engine import create_engine, dispose_engines, get_engine, session_scope
from backend.db.migrate import init_db, upgrade
from backend.db.models import (
    JOB_KINDS,
    Artifact,
    Attempt,
    Campaign,
    Event,
    FitResult,
    Job,
    JobDependency,
    MetricPoint,
    ResourceSample,
)

__all__ = [
    "JOB_KINDS",
    "Artifact",
    "Attempt",
    "Campaign",
    "Event",
    "FitResult",
    "Job",
    "JobDependency",
    "MetricPoint",
    "ResourceSample",
    "create_engine",
    "dispose_engines",
    "get_engine",
    "init_db",
    "session_scope",
    "upgrade",
]
