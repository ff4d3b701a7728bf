"""The controller's loop when the database is away (in process; the real outage is in
test_postgres_restart.py): a pass that fails with a database error is logged as one line and
retried after the tick interval, doubling up to ``max_retry_backoff_s``; the first pass that
works brings back the normal interval."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from backend.controller import Controller, ControllerConfig, TickReport
from backend.db import create_engine, init_db


def test_failed_passes_back_off_and_recover(tmp_path, monkeypatch, caplog):
    engine = init_db(create_engine(f"sqlite:///{tmp_path / 'nsbi.db'}"))
    (tmp_path / "store").mkdir()
    config = ControllerConfig(tick_interval_s=0.05, max_retry_backoff_s=0.4)
    ctl = Controller(engine, (tmp_path / "store").as_uri(), {}, config)
    calls: list[float] = []

    def tick() -> TickReport:
        calls.append(time.monotonic())
        if 2 <= len(calls) <= 7:  # the database goes away for six passes
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
        return TickReport()

    monkeypatch.setattr(ctl, "tick", tick)
    with caplog.at_level(logging.WARNING, logger="nsbi.controller"):
        assert ctl.run_forever(max_ticks=10) == 10
    gaps = [round(b - a, 2) for a, b in zip(calls, calls[1:])]
    # after the failed passes 2..7: 0.05, 0.1, 0.2, 0.4, 0.4, 0.4 (capped); then 0.05 again
    expected = [0.05, 0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.05, 0.05]
    assert all(e - 0.02 <= g < e + 0.15 for g, e in zip(gaps, expected)), gaps
    failed = [r for r in caplog.records if "database error" in r.getMessage()]
    assert len(failed) == 6 and all(r.exc_info is None for r in failed)  # one line, no traceback
    assert "(ConnectionRefusedError: refused); retrying in 0.4 s" in failed[-1].getMessage()
    engine.dispose()
