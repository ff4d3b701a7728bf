"""The control plane's tables (SQLModel).

One row per campaign, job, job dependency edge, attempt, state-transition event, metric point,
resource sample, artifact and fit result; plus the controller's leader lease. Status columns
hold the string values of the enums in `backend.states`. All timestamps are timezone-aware UTC
(`UTCDateTime`).

Crash safety: an `Attempt` row is written in LAUNCHING state, with a unique
(job_id, attempt_no), *before* the launcher is called; a restarted controller that finds a
LAUNCHING attempt without an instance id knows a launch may be half done and can look it up
instead of launching a duplicate.

Idempotent ingest: `MetricPoint` has the composite primary key
(job_id, name, member, step, attempt_no) and `ResourceSample` a unique
(job_id, attempt_no, time), so re-ingesting a segment inserts nothing new
(`INSERT ... ON CONFLICT DO NOTHING`, see `backend.jobs_repo`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from backend.db.types import BigIntPK, JSONType, UTCDateTime
from backend.states import CampaignStatus, DesiredState, JobStatus, utcnow

# Deterministic constraint names, so Alembic migrations name the same thing on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_KINDS: tuple[str, ...] = ("train", "fit", "impacts", "scan", "toys")
FIT_KINDS: tuple[str, ...] = (
    "fit",
    "impacts",
    "scan",
    "toys",
)  # the kinds that use the trained ensembles


class Campaign(SQLModel, table=True):
    """A validated campaign config and the intents the user set on it."""

    __tablename__ = "campaign"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (sa.Index("ix_campaign_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    config_hash: str = Field(max_length=64, index=True)
    code_version: str = Field(default="", max_length=64)
    owner: str = Field(default="local", max_length=100)
    status: str = Field(default=CampaignStatus.CREATED, max_length=16)
    launcher: str = Field(default="local", max_length=32)
    budget_usd: float | None = None
    max_concurrency: int = 1
    retry_limit: int = 2
    estimate_gpu_hours: float = 0.0
    estimate_cost_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    launch_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancel_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # the result's checks (`sbi_engine.result_checks.ResultStatus.to_dict()`): "checks passed" or
    # "needs review" with the failed checks; written when the campaign settles, None before
    result_status: dict[str, Any] | None = Field(default=None, sa_type=JSONType, nullable=True)


class Job(SQLModel, table=True):
    """One unit of work (a pack of ensemble members, a fit, an NP subset, a toy batch)."""

    __tablename__ = "job"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "name"),
        sa.Index("ix_job_campaign_id_status", "campaign_id", "status"),
        sa.Index("ix_job_campaign_id_id", "campaign_id", "id"),  # paging one campaign's jobs
        sa.Index(
            "ix_job_campaign_id_kind_status", "campaign_id", "kind", "status"
        ),  # progress per kind
        sa.Index("ix_job_status_desired_state", "status", "desired_state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)  # one of JOB_KINDS
    task: str | None = Field(default=None, max_length=200)  # ratio task name for train jobs
    members: list[int] = Field(default_factory=list, sa_type=JSONType)  # ensemble member indices
    np_subset: list[str] = Field(default_factory=list, sa_type=JSONType)  # impacts / scans
    seeds: list[int] = Field(default_factory=list, sa_type=JSONType)  # toys
    depends_on: list[int] = Field(
        default_factory=list, sa_type=JSONType
    )  # job ids (see JobDependency)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)  # what the worker runs
    uri: str | None = None  # job URI in the artifact store, set when the spec is written

    status: str = Field(default=JobStatus.PENDING, max_length=16)
    status_reason: str = ""
    desired_state: str = Field(default=DesiredState.HOLD, max_length=8)
    cancel_requested: bool = False
    retry_requested: bool = False

    current_attempt: int = 0  # attempt_no of the newest attempt, 0 before the first launch
    retries: int = 0  # FAILED -> PENDING moves so far
    recoveries: int = 0  # all moves back to PENDING (retries + preemption recoveries)
    max_retries: int = 2
    priority: int = 0  # higher launches first

    launcher: str = Field(default="local", max_length=32)
    machine_type: str = Field(default="local", max_length=64)
    gpu_type: str | None = Field(default=None, max_length=64)
    gpu_count: int = 0
    spot: bool = False
    zones: list[str] = Field(default_factory=list, sa_type=JSONType)
    est_hours: float = 0.0  # wall-clock estimate used for budgets and estimates

    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_heartbeat: datetime | None = Field(default=None, sa_type=UTCDateTime)


class JobDependency(SQLModel, table=True):
    """One DAG edge: `job_id` waits until `depends_on_id` has SUCCEEDED."""

    __tablename__ = "job_dependency"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (sa.Index("ix_job_dependency_depends_on_id", "depends_on_id"),)

    job_id: int = Field(foreign_key="job.id", primary_key=True, ondelete="CASCADE")
    depends_on_id: int = Field(foreign_key="job.id", primary_key=True, ondelete="CASCADE")


class Attempt(SQLModel, table=True):
    """One try at running a job on one machine; written in LAUNCHING before the launch call."""

    __tablename__ = "attempt"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (
        sa.UniqueConstraint("job_id", "attempt_no"),
        sa.Index("ix_attempt_status", "status"),
        sa.Index("ix_attempt_launched_at", "launched_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", ondelete="CASCADE")
    attempt_no: int  # 1, 2, ... per job
    status: str = Field(default=JobStatus.LAUNCHING, max_length=16)
    launcher: str = Field(max_length=32)
    instance_id: str | None = Field(default=None, max_length=200)  # pid, VM name, ...
    machine_type: str = Field(default="local", max_length=64)
    gpu_type: str | None = Field(default=None, max_length=64)
    gpu_count: int = 0
    spot: bool = False
    zone: str | None = Field(default=None, max_length=64)
    region: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    launched_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # billing starts
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # billing stops
    last_heartbeat: datetime | None = Field(default=None, sa_type=UTCDateTime)
    exit_code: int | None = None
    failure_reason: str | None = None
    price_per_hour: float = 0.0  # USD/hour from the price catalogue at launch
    cost_usd: float = 0.0  # accrued: (ended_at or now - launched_at) x price_per_hour
    gpu_hours: float = 0.0
    ingest_cursor: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSONType
    )  # per stream: last seq
    # where the launcher that owns the instance keeps its records ("host:folder" for the local
    # launcher), written with the LAUNCHING row; None: any controller can observe the instance
    # (GCE). A controller elsewhere judges the attempt through the store, never as "gone".
    launched_from: str | None = Field(default=None, max_length=500)


class ControllerLease(SQLModel, table=True):
    """The leader lease: the one controller allowed to write the database (`backend.leader`).

    One row per lease name. Taken over with a conditional UPDATE once ``expires_at`` has passed
    (``token`` + 1 on every takeover); the leader renews it and checks ``holder`` and ``token`` in
    the same transaction as each of its state writes (fencing). Times are seconds since the
    epoch on the database's clock, so controllers on different hosts agree on expiry.
    """

    __tablename__ = "controller_lease"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping

    name: str = Field(primary_key=True, max_length=32)
    holder: str | None = Field(default=None, max_length=300)  # "host:pid:home:nonce"; None: free
    token: int = Field(default=0, sa_type=sa.BigInteger)  # fencing token, +1 per takeover
    expires_at: float = 0.0
    acquired_at: float = 0.0
    renewed_at: float = 0.0


class Event(SQLModel, table=True):
    """The audit trail: one row per job state transition or campaign intent."""

    __tablename__ = "event"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (
        sa.Index("ix_event_job_id_time", "job_id", "time"),
        sa.Index("ix_event_campaign_id_time", "campaign_id", "time"),
    )

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", ondelete="CASCADE")
    job_id: int | None = Field(default=None, foreign_key="job.id", ondelete="CASCADE")
    attempt_no: int | None = None
    time: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=32)
    reason: str = ""
    actor: str = Field(default="controller", max_length=32)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)


MAX_STEP_LEVEL = 16


def step_level_sql(column: str = "step") -> str:
    """SQL for the number of trailing zero bits of a step, capped at MAX_STEP_LEVEL (0 -> cap).

    Written out as a CASE so it is the same on SQLite and PostgreSQL (no bit functions needed).
    """
    whens = " ".join(f"WHEN {column} % {2**k} = 0 THEN {k}" for k in range(MAX_STEP_LEVEL, 0, -1))
    return f"CASE {whens} ELSE 0 END"


class MetricPoint(SQLModel, table=True):
    """A training/fit metric; the primary key makes re-ingest of a segment a no-op.

    member is -1 for job-level metrics (not tied to one ensemble member).

    level is generated by the database: the number of trailing zero bits of step. "Every
    2**k-th step" is then `level >= k`, an index range, so a long curve is thinned by reading
    only the points it returns (see `backend.metrics_view.metric_series`).
    """

    __tablename__ = "metric_point"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (
        sa.Index("ix_metric_point_job_id_name_member_level", "job_id", "name", "member", "level"),
        {"sqlite_with_rowid": False},  # clustered by (job, name, member, step)
    )

    job_id: int = Field(foreign_key="job.id", primary_key=True, ondelete="CASCADE")
    name: str = Field(primary_key=True, max_length=64)
    member: int = Field(default=-1, primary_key=True)
    step: int = Field(primary_key=True)
    attempt_no: int = Field(default=1, primary_key=True)
    epoch: int | None = None
    value: float
    level: int | None = Field(
        default=None,
        sa_column=sa.Column(
            "level", sa.SmallInteger, sa.Computed(step_level_sql(), persisted=True)
        ),
    )


class ResourceSample(SQLModel, table=True):
    """Host and per-GPU usage of one attempt at one time.

    gpus: [{"index", "util_percent", "memory_bytes", "memory_total_bytes", "power_w"}, ...]
    """

    __tablename__ = "resource_sample"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (sa.UniqueConstraint("job_id", "attempt_no", "time"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    job_id: int = Field(foreign_key="job.id", ondelete="CASCADE")
    attempt_no: int = 1
    time: datetime = Field(sa_type=UTCDateTime)
    cpu_percent: float | None = None
    rss_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    gpus: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)


class Artifact(SQLModel, table=True):
    """An object in the artifact store that the dashboard may link to."""

    __tablename__ = "artifact"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (sa.Index("ix_artifact_job_id", "job_id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", ondelete="CASCADE")
    attempt_no: int | None = None
    kind: str = Field(max_length=32)  # checkpoint, ensemble, result, workspace, log, ...
    uri: str = Field(unique=True)
    size_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    checksum: str | None = Field(default=None, max_length=128)  # "sha256:<hex>"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class FitResult(SQLModel, table=True):
    """The result a fit / impacts / scan / toys job wrote; one per job (upserted on ingest)."""

    __tablename__ = "fit_result"
    __table__: ClassVar[sa.Table]  # set by SQLAlchemy's declarative mapping
    __table_args__ = (sa.Index("ix_fit_result_campaign_id", "campaign_id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", unique=True, ondelete="CASCADE")
    campaign_id: int = Field(foreign_key="campaign.id", ondelete="CASCADE")
    kind: str = Field(max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    mu_hat: float | None = None
    sigma: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class _HasId(Protocol):
    id: int | None


def saved_id(row: _HasId) -> int:
    """The id of a row the database has numbered (SQLModel types `id` as `int | None` because a
    new object has none until it is flushed)."""
    if row.id is None:
        raise ValueError(f"{type(row).__name__} has no id yet: add and flush it first")
    return row.id
