"""Browser tests: Playwright drives Debian's Chromium against `streamlit run app.py`.

Each test starts its own dashboard on a free loopback port with DATABASE_URL / NSBI_HOME in a
temp dir, and plays the controller's part by writing job states and metric points straight
into the database, so the monitor must pick them up live (no page reload).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from dash_browser import (
    BROWSER_MARKS,
    chart_js,
    chromium_page,
    screenshot,
    streamlit_server,
    wait_chart,
    wait_title,
)

from dashboard import formatting

pytestmark = BROWSER_MARKS

METRIC_JS = """(label) => {
  for (const m of document.querySelectorAll("[data-testid='stMetric']")) {
    const l = m.querySelector("[data-testid='stMetricLabel']");
    const v = m.querySelector("[data-testid='stMetricValue']");
    if (l && v && l.innerText.trim() === label) return v.innerText.trim();
  }
  return null;
}"""

# Largest step drawn on the loss chart (found by its title), or -1 while there is none.
LOSS_MAX_STEP_JS = """() => {
  let best = -1;
  for (const gd of document.querySelectorAll(".js-plotly-plot")) {
    const title = gd.layout && gd.layout.title && gd.layout.title.text || "";
    if (!title.includes("loss") || !gd._fullData) continue;
    for (const t of gd._fullData) {  // decoded traces (gd.data may hold base64 typed arrays)
      const xs = t.x || [];
      for (let i = 0; i < xs.length; i++) if (typeof xs[i] === "number" && xs[i] > best) best = xs[i];
    }
  }
  return best;
}"""


def _metric(page, label: str) -> str | None:
    return page.evaluate(METRIC_JS, label)


def _wait_metric(page, label: str, value: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _metric(page, label) == value:
            return
        time.sleep(0.25)
    raise AssertionError(
        f"metric {label!r} is {_metric(page, label)!r}, expected {value!r} within {timeout_s} s"
    )


def _write_metrics(url: str, job_id: int, steps: range) -> None:
    from backend.db import MetricPoint, get_engine

    rows = [
        {
            "job_id": job_id,
            "name": name,
            "member": m,
            "step": s,
            "attempt_no": 1,
            "value": (1.0 + 0.1 * k + 0.05 * m) / (1 + 0.1 * s),
        }
        for k, name in enumerate(("train_loss", "val_loss"))
        for m in range(2)
        for s in steps
    ]
    with get_engine(url).begin() as conn:
        conn.execute(sa.insert(MetricPoint.__table__), rows)


def _set_running(url: str, job_ids: list[int], status: str = "RUNNING") -> None:
    from backend.db import Job, get_engine

    with get_engine(url).begin() as conn:
        conn.execute(
            sa.update(Job.__table__)
            .where(Job.__table__.c.id.in_(job_ids))
            .values(status=status, started_at=datetime.now(UTC))
        )


def test_form_launch_and_live_monitor(tmp_path, monkeypatch):
    from backend import service
    from backend.db import get_engine, init_db

    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    init_db(get_engine(url))
    with streamlit_server(tmp_path) as base, chromium_page() as page:
        page.goto(base)
        wait_title(page)
        page.get_by_text("New campaign").click()
        name = page.get_by_label("Name", exact=True)
        name.fill("browser-made")
        name.press("Tab")
        page.get_by_role("button", name="Create and launch").click()
        page.get_by_text("created and launch requested").wait_for()
        screenshot(page, "campaign-created")
        (c,) = service.list_campaigns()
        assert (c.name, c.status) == ("browser-made", "ACTIVE")

        page.get_by_role("link", name="Monitor").click()
        wait_title(page)
        page.evaluate("() => { window.__noReload = 'same document'; }")
        _wait_metric(page, "Pending", str(c.n_jobs))
        page.get_by_text("No training metrics yet").wait_for()

        train, _ = service.list_jobs(campaign_id=c.id, kind="train")
        first = min(j.id for j in train)
        _set_running(url, [first, first + 1])
        _write_metrics(url, first, range(0, 10))
        _wait_metric(page, "Running", "2")
        page.wait_for_function(f"({LOSS_MAX_STEP_JS})() >= 9", timeout=60_000)
        _write_metrics(url, first, range(10, 40))
        page.wait_for_function(f"({LOSS_MAX_STEP_JS})() >= 39", timeout=60_000)
        assert page.evaluate("() => window.__noReload") == "same document"  # updated without reload
        screenshot(page, "monitor-live", show=page.locator("[data-testid='stPlotlyChart']").first)


def test_start_fit_and_see_pulls_and_impacts(tmp_path, monkeypatch):
    import dash_testkit as seed

    from backend import service

    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    seeded = seed.seed(url, n_jobs=4, train_states=("SUCCEEDED",))
    with streamlit_server(tmp_path) as base, chromium_page() as page:
        page.goto(f"{base}/fit")
        wait_title(page)
        _wait_metric(page, "best-fit mu", formatting.with_error(seeded.mu_hat, seeded.sigma))
        page.get_by_text("Fitted parameters").wait_for()  # the page opens on the table
        page.get_by_text("Start a fit").click()
        started = page.get_by_text(re.compile(r"\d+ fit job\(s\) started"))
        for _ in range(2):  # a click that lands while the script is still rerunning can be dropped
            page.get_by_role("button", name="Start fit").click()
            try:
                started.wait_for(timeout=30_000)
                break
            except Exception:  # noqa: BLE001 - retried once, then the wait below fails loudly
                pass
        started.wait_for(timeout=30_000)
        n_new = int(started.inner_text().split()[0])
        jobs, _ = service.list_jobs(campaign_id=seeded.campaign_id, limit=1000)
        new = [j for j in jobs if "-r2" in j.name]
        assert len(new) == n_new and {j.kind for j in new} == {"fit", "impacts", "scan", "toys"}
        assert all(
            j.status == "PENDING" and j.desired_state == "RUN" for j in new
        )  # the campaign was launched
        # the new run opens with its live progress; run 1 keeps its results
        page.get_by_text(f"Run 2: 0 of {n_new} fit-stage jobs finished").wait_for()
        # the progress follows the jobs as they start and finish, without a reload
        page.evaluate("() => { window.__noReload = 'same document'; }")
        new_ids = sorted(j.id for j in new)
        _set_running(url, new_ids[:2])
        page.get_by_text(f"Run 2: 0 of {n_new} fit-stage jobs finished · 2 running").wait_for(
            timeout=30_000
        )
        _set_running(url, new_ids[1:2], status="FAILED")  # finished (no result needed to count)
        page.get_by_text(
            f"Run 2: 1 of {n_new} fit-stage jobs finished · 1 running · {n_new - 2} waiting"
            " · 1 failed"
        ).wait_for(timeout=30_000)
        assert page.evaluate("() => window.__noReload") == "same document"
        screenshot(page, "fit-run-progress")
        for _ in range(3):  # the live progress fragment's reruns can close an open menu
            page.locator("[data-testid='stSelectbox']").filter(has_text="Fit run").click()
            try:
                page.get_by_role("option", name="run 1").click(timeout=10_000)
                break
            except Exception:  # noqa: BLE001 - retried; the wait below fails loudly
                pass
        page.get_by_text("Fitted parameters").wait_for()
        page.locator("[data-testid='stButtonGroup']").get_by_text("Pulls", exact=True).click()
        wait_chart(page, "Nuisance-parameter pulls")
        screenshot(page, "fit-pulls", show=page.locator("[data-testid='stPlotlyChart']").first)
        page.locator("[data-testid='stButtonGroup']").get_by_text("Impacts", exact=True).click()
        wait_chart(page, "Impact on mu")
        n_bars = page.evaluate(f"() => {chart_js('Impact on mu')}._fullData[0].y.length")
        assert n_bars == len(seed.NPS)
        screenshot(page, "fit-impacts", show=page.locator("[data-testid='stPlotlyChart']").first)
