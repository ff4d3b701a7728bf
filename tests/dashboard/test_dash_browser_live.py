"""Browser test of the live path end to end: a real controller (in a thread of this test)
launches a real worker process through the local launcher; the worker reports a loss point
per evaluation and a resource sample every 5 s (its default interval); the controller ingests;
the Monitor page shows the curve growing point by point while the job runs, the job's output
tailing as it runs, the resource samples at their steady rate, and the note that there is no GPU
on this machine.

The job runs the tests' "noop" kind (no JAX): 50 evaluations, 0.4 s apart, and no checkpoint
until the end, so nothing but the per-evaluation flush can bring the points in early.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from dash_browser import (
    BROWSER_MARKS,
    chart_js,
    chromium_page,
    screenshot,
    select_dataframe_row,
    streamlit_server,
    wait_chart,
    wait_title,
)
from test_dash_browser import LOSS_MAX_STEP_JS

from dashboard import figures

pytestmark = BROWSER_MARKS

STEPS, STEP_S = 50, 0.4

# the newest "noop step N" line in the job output shown on the page (-1: none)
OUTPUT_MAX_STEP_JS = """() => {
  let best = -1;
  for (const el of document.querySelectorAll("[data-testid='stCode']")) {
    for (const m of el.innerText.matchAll(/noop step (\\d+) of/g)) best = Math.max(best, +m[1]);
  }
  return best;
}"""

# points on the resource chart's first line (-1: no chart)
RESOURCE_POINTS_JS = """() => {
  for (const gd of document.querySelectorAll(".js-plotly-plot")) {
    const title = gd.layout && gd.layout.title && gd.layout.title.text || "";
    if (!title.includes("CPU and memory") || !gd._fullData) continue;
    return (gd._fullData[0].x || []).length;
  }
  return -1;
}"""


def _campaign(url: str) -> int:
    from sqlmodel import Session

    from backend.db import Campaign, Job, get_engine, init_db
    from backend.states import CampaignStatus, DesiredState

    engine = get_engine(url)
    init_db(engine)
    with Session(engine) as s:
        camp = Campaign(
            name="live", config_hash="0" * 64, status=CampaignStatus.ACTIVE, launcher="local"
        )
        s.add(camp)
        s.flush()
        s.add(
            Job(
                campaign_id=camp.id,
                name="train-S_vs_B-g0-m0-0",
                kind="train",
                task="S_vs_B",
                members=[0],
                spec={
                    "kind": "noop",
                    "params": {
                        "steps": STEPS,
                        "step_s": STEP_S,
                        "checkpoint_every": 1000,
                        "echo": True,  # a line of output per step, tailed on the page
                    },
                },
                desired_state=DesiredState.RUN,
            )
        )
        s.commit()
        return int(camp.id)


class _ControllerThread(threading.Thread):
    def __init__(self, url: str, home: Path) -> None:
        super().__init__(name="test-controller", daemon=True)
        from backend.controller import Controller, ControllerConfig
        from backend.db import get_engine
        from backend.launchers.local import LocalLauncher
        from nsbi_testing import worker_env

        (home / "store").mkdir(exist_ok=True)
        env = worker_env()
        env.pop("NSBI_WORKER_INTERVAL_S", None)  # the default 5 s: metrics must not wait for it
        launcher = LocalLauncher(home / "launcher", max_concurrent=1, gpus=[], extra_env=env)
        self.controller = Controller(
            get_engine(url),
            f"file://{home / 'store'}",
            {"local": launcher},
            ControllerConfig(tick_interval_s=0.5),
        )
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.errors += list(self.controller.tick().errors)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))


def _job_state(url: str) -> str:
    import sqlalchemy as sa

    from backend.db import Job, get_engine

    with get_engine(url).connect() as conn:
        return conn.execute(sa.select(Job.__table__.c.status)).scalar_one()


def _resource_times(url: str) -> list[float]:
    import sqlalchemy as sa

    from backend.db import ResourceSample, get_engine

    with get_engine(url).connect() as conn:
        rows = conn.execute(
            sa.select(ResourceSample.__table__.c.time).order_by(ResourceSample.__table__.c.time)
        ).scalars()
        return [t.timestamp() for t in rows]


def test_monitor_streams_points_and_samples_while_the_job_runs(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("NSBI_STORE", f"file://{tmp_path / 'store'}")
    _campaign(url)
    ctl = _ControllerThread(url, tmp_path)
    with streamlit_server(tmp_path) as base, chromium_page(1440, 900) as page:
        page.goto(f"{base}/monitor")
        wait_title(page)
        page.get_by_label("Every (s)").fill("1")
        page.get_by_label("Every (s)").press("Enter")
        ctl.start()
        try:
            seen: list[int] = []  # the newest step on the chart while the job is RUNNING
            tailed: list[int] = []  # the newest step in the job's output shown while RUNNING
            selected = False
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                state = _job_state(url)
                n = page.evaluate(LOSS_MAX_STEP_JS)
                if state == "RUNNING" and n > 0:
                    seen.append(n)
                    if not selected:  # open the job's output: it tails while the job runs
                        select_dataframe_row(page.locator("[data-testid='stDataFrame']").last, 0)
                        selected = True
                    if (m := page.evaluate(OUTPUT_MAX_STEP_JS)) > 0:
                        tailed.append(m)
                if state in ("SUCCEEDED", "FAILED"):
                    break
                time.sleep(0.5)
            assert _job_state(url) == "SUCCEEDED", ctl.errors
            growth = sorted(set(seen))
            print(f"newest step on the loss chart while the job ran: {growth}")
            # the curve grew in many steps while the job ran, not all at once at the end
            assert len(growth) >= 5 and growth[0] < STEPS // 2, seen
            print(f"newest step in the job's output while it ran: {sorted(set(tailed))}")
            assert len(set(tailed)) >= 3 and min(tailed) < STEPS, tailed
            page.get_by_text("tailing while it runs").wait_for(state="detached", timeout=30_000)
            page.wait_for_function(f"({OUTPUT_MAX_STEP_JS})() >= {STEPS}", timeout=30_000)
            page.wait_for_function(f"({LOSS_MAX_STEP_JS})() >= {STEPS}", timeout=30_000)
            screenshot(page, "live-monitor-curve", show=page.locator(".js-plotly-plot").first)

            # resource samples: every 5 s while it ran (and a last one at the end)
            times = _resource_times(url)
            gaps = [b - a for a, b in zip(times, times[1:-1])]
            print(f"resource samples: {len(times)}, gaps (s): {[round(g, 2) for g in gaps]}")
            assert len(times) >= 3 and all(4.0 < g < 6.5 for g in gaps), gaps
            page.locator("[data-testid='stButtonGroup']").get_by_text("Resource usage").click()
            page.get_by_text("No GPU on this machine").wait_for(timeout=30_000)
            page.get_by_text("Workers sample every 5 s").wait_for()
            # the screen draws with the pinned colorway, the one the PNG export keeps
            wait_chart(page, "CPU and memory")
            colours = page.evaluate(
                f"() => {chart_js('CPU and memory')}._fullData.map(t => t.line.color)"
            )
            assert colours == [c.lower() for c in figures.COLORWAY[:2]], colours
            screenshot(page, "live-monitor-resources")
            page.wait_for_function(f"({RESOURCE_POINTS_JS})() >= {len(times) - 1}", timeout=30_000)
        finally:
            ctl.stop.set()
            ctl.join(timeout=30)
