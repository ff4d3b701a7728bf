"""One controller per database: a leader lease with a fencing token.

Every controller of a database (each ``nsbi controller``, each ``nsbi analysis run`` that drives
its own campaign) competes for one row of ``controller_lease`` (`backend.db.models`):

- **acquire**: a conditional UPDATE takes the row when it is free or its ``expires_at`` has
  passed, and adds 1 to ``token`` (the fencing token): ``UPDATE ... SET holder = me,
  token = token + 1, expires_at = now + ttl WHERE holder IS NULL OR expires_at < now``. Only
  one of several controllers racing for it changes the row (PostgreSQL re-checks the WHERE
  after waiting for the row lock; SQLite has one writer at a time).
- **renew**: the leader pushes ``expires_at`` forward every ``renew_s`` (``WHERE holder = me
  AND token = mine``); a standby tries to acquire at the same pace, so it takes over at most
  ``ttl_s + renew_s`` after the leader's last renewal.
- **fence**: every transaction the controller commits first runs ``UPDATE controller_lease
  SET token = token WHERE holder = me AND token = mine`` in the same transaction (``attach``
  hooks it to a session's ``before_commit``). No row means the lease was taken over: the
  commit is refused (`LeaseLost`) and the transaction rolls back. The UPDATE locks the lease
  row until the commit, so a takeover racing with the commit waits for it: a write is either
  committed under the token it was made with or not at all.

Time is the database's clock (seconds since the epoch), so controllers on different hosts
agree on expiry. Locally the leader counts its lease as valid for ``ttl_s - margin`` after
the start of its last successful renewal, and stops working (``is_leader()`` false) before
any standby may take over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from backend.db.models import ControllerLease

log = logging.getLogger("nsbi.controller")

LEASE_NAME = "controller"
TABLE = ControllerLease.__table__


class LeaseLost(RuntimeError):
    """This controller's lease was taken over: it must not write (the commit was refused)."""


@dataclass(frozen=True)
class LeaseView:
    """The lease row as another process sees it."""

    holder: str | None
    token: int
    expires_in_s: float  # negative: expired


def db_now(dialect: str) -> Any:
    """SQL for "now" in seconds since the epoch on the database's clock."""
    if dialect == "postgresql":
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)
    if dialect == "sqlite":
        return (sa.func.julianday("now") - 2440587.5) * 86400.0
    return sa.literal(time.time())  # pragma: no cover - only SQLite and PostgreSQL are supported


def holder_id(home: object = "") -> str:
    """A holder id unique to this process life: host, pid, home and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{home}:{uuid.uuid4().hex[:8]}"[-300:]


class LeaderLease:
    """This process's view of the leader lease; ``start()`` keeps it up on a thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = 10.0,
        renew_s: float = 3.0,
        holder: str | None = None,
        name: str = LEASE_NAME,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or renew_s <= 0 or renew_s >= ttl_s:
            raise ValueError(f"lease: need 0 < renew_s < ttl_s, got renew {renew_s}, ttl {ttl_s}")
        self.engine = engine
        self.ttl_s = float(ttl_s)
        self.renew_s = float(renew_s)
        self.margin_s = min(1.0, 0.1 * self.ttl_s)
        self.holder = holder or holder_id()
        self.name = name
        self.monotonic = monotonic
        self.token: int | None = None  # the token of the lease this process holds, if any
        self._valid_until = 0.0  # monotonic time until which the lease is surely ours
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dialect = engine.dialect.name
        self._announced: str | None = None  # the last role logged ("leader" / "standby")
        self._row_ok = False

    # ------------------------------------------------------------------ the row
    def _ensure_row(self) -> None:
        """Insert the lease row if no controller has yet (in its own transaction)."""
        if self._row_ok:
            return
        with self.engine.connect() as conn:
            exists = conn.execute(sa.select(TABLE.c.name).where(TABLE.c.name == self.name)).first()
        if exists is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.insert(TABLE).values(
                            name=self.name,
                            holder=None,
                            token=0,
                            expires_at=0.0,
                            acquired_at=0.0,
                            renewed_at=0.0,
                        )
                    )
            except IntegrityError:
                pass  # another controller inserted it first
        self._row_ok = True

    def view(self) -> LeaseView | None:
        """Who holds the lease now (None: no controller ever looked for it)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    TABLE.c.holder,
                    TABLE.c.token,
                    (TABLE.c.expires_at - db_now(self._dialect)).label("left"),
                ).where(TABLE.c.name == self.name)
            ).first()
        if row is None:
            return None
        return LeaseView(row.holder, int(row.token), float(row.left))

    # ------------------------------------------------------------------ acquire / renew / release
    def try_acquire(self) -> bool:
        """Renew the lease if this process holds it, else take it over if it is free or expired.
        True when this process is the leader afterwards. A database error leaves the state as
        it was (the lease then runs out locally)."""
        with self._lock:
            t0 = self.monotonic()
            try:
                token = self._renew() if self.token is not None else None
                if token is None:
                    token = self._take_over()
            except sa.exc.DBAPIError as exc:
                log.warning("lease: database error (%s); retrying", str(exc).splitlines()[0])
                return self.is_leader()
            if token is None:
                self.token = None
                self._valid_until = 0.0
                return False
            self.token = token
            self._valid_until = t0 + self.ttl_s - self.margin_s
            return True

    def _renew(self) -> int | None:
        now = db_now(self._dialect)
        with self.engine.begin() as conn:
            n = conn.execute(
                sa.update(TABLE)
                .where(
                    TABLE.c.name == self.name,
                    TABLE.c.holder == self.holder,
                    TABLE.c.token == self.token,
                )
                .values(expires_at=now + self.ttl_s, renewed_at=now)
            ).rowcount
        return self.token if n == 1 else None

    def _take_over(self) -> int | None:
        self._ensure_row()
        now = db_now(self._dialect)
        with self.engine.begin() as conn:
            n = conn.execute(
                sa.update(TABLE)
                .where(
                    TABLE.c.name == self.name,
                    sa.or_(TABLE.c.holder.is_(None), TABLE.c.expires_at < now),
                )
                .values(
                    holder=self.holder,
                    token=TABLE.c.token + 1,
                    expires_at=now + self.ttl_s,
                    acquired_at=now,
                    renewed_at=now,
                )
            ).rowcount
            if n != 1:
                return None
            return int(
                conn.execute(
                    sa.select(TABLE.c.token).where(
                        TABLE.c.name == self.name, TABLE.c.holder == self.holder
                    )
                ).scalar_one()
            )

    def release(self) -> None:
        """Give the lease up now (a clean shutdown): a standby takes over at its next try."""
        with self._lock:
            if self.token is None:
                return
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(TABLE)
                        .where(
                            TABLE.c.name == self.name,
                            TABLE.c.holder == self.holder,
                            TABLE.c.token == self.token,
                        )
                        .values(holder=None, expires_at=0.0)
                    )
            except sa.exc.DBAPIError as exc:
                log.warning("lease: could not release (%s)", str(exc).splitlines()[0])
            self.token = None
            self._valid_until = 0.0

    def is_leader(self) -> bool:
        """True while this process surely holds the lease (renewed less than ttl - margin ago)."""
        return self.token is not None and self.monotonic() < self._valid_until

    # ------------------------------------------------------------------ fencing
    def fence(self, session: Session) -> None:
        """In ``session``'s transaction: lock the lease row if it is still ours with our token;
        raise `LeaseLost` otherwise (the caller's commit must not happen)."""
        token = self.token
        if token is None:
            raise LeaseLost(f"lease: {self.holder} holds no lease; refusing to commit")
        n = (
            session.connection()
            .execute(
                sa.update(TABLE)
                .where(
                    TABLE.c.name == self.name,
                    TABLE.c.holder == self.holder,
                    TABLE.c.token == token,
                )
                .values(token=TABLE.c.token)
            )
            .rowcount
        )
        if n != 1:
            with self._lock:
                if self.token == token:
                    self.token = None
                    self._valid_until = 0.0
            raise LeaseLost(
                f"lease: token {token} of {self.holder} was taken over; the write was rolled back"
            )

    def attach(self, session: Session) -> Session:
        """Fence every commit of ``session`` (see the module docstring); returns it."""
        sa.event.listen(session, "before_commit", self.fence)
        return session

    # ------------------------------------------------------------------ the keeper thread
    def step(self) -> bool:
        """One try (renew or take over), logging role changes; True when leading."""
        leading = self.try_acquire()
        role = "leader" if leading else "standby"
        if role != self._announced:
            if leading:
                log.info(
                    "leader: this controller (%s) leads the database (fencing token %s)",
                    self.holder,
                    self.token,
                )
            else:
                seen = self._safe_view()
                who = (
                    f"{seen.holder} leads the database (token {seen.token}, lease ends in "
                    f"{max(0.0, seen.expires_in_s):.1f} s)"
                    if seen is not None and seen.holder
                    else "no controller leads the database"
                )
                verb = "lost the lease" if self._announced == "leader" else "waiting"
                log.log(
                    logging.WARNING if self._announced == "leader" else logging.INFO,
                    "standby: %s; %s; taking over if it is not renewed within %.0f s",
                    verb,
                    who,
                    self.ttl_s,
                )
            self._announced = role
        return leading

    def _safe_view(self) -> LeaseView | None:
        try:
            return self.view()
        except sa.exc.DBAPIError:
            return None

    def start(self) -> LeaderLease:
        """Try once now, then renew / try to take over every ``renew_s`` on a daemon thread."""
        self.step()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nsbi-lease", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the keeper must outlive one bad try
                log.exception("lease: renewal failed")

    def stop(self, *, release: bool = True) -> None:
        """Stop the keeper thread and (by default) release the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.renew_s))
            self._thread = None
        if release:
            self.release()
