"""Browser walk of dashboard items that the AppTests cover (Playwright, Debian chromium,
1440 x 900), on one seeded database and one dashboard:

- Campaigns: the form's refusals (negative ensemble size, 9,999 GPUs, a budget of 1e15) beside
  their fields after "Create and launch", nothing created; the estimate by task with machine
  type, GPUs, GPU-hours, price and spot pricing.
- Monitor: opens on the launched campaign with jobs (not a newer never-launched one); the
  selector carries no stale "(ACTIVE)" and the status reads SUCCEEDED; Retry disabled for a
  succeeded job; a failed attempt's traceback and output, and the download of that output;
  the GPU panel when the workers reported GPU readings.
- Diagnostics: an AUC of 0.509 on a signal task shows AMBER, not green.
- Fit: the scan's quality flags (a non-converged point, not monotonic) in a warning.
- Compare: "Grid points" overlays the chosen task's grid points.
- Usage and cost: local runs show CPU-hours and wall time; "Over time" ticks on whole days.

A second test checks the estimate "by task" of the default form: one row per ratio task with
its number of jobs. Screenshots: test-artifacts/screenshots/items-*.png.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
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
from test_dash_browser import METRIC_JS

pytestmark = BROWSER_MARKS

SIGNAL = "S_vs_B"  # the seed's task0 renamed: a signal task ("<process>_vs_<reference>")
LOG_TEXT = "step 380 train_loss 0.0123 (items walk)"
TRACEBACK = "RuntimeError: NaN loss at step 380"

# legend groups (one per compared run) of the Compare page's curves chart
COMPARE_GROUPS_JS = f"""() => {{
  const gd = {chart_js("Loss and validation curves")};
  if (!gd) return [];
  return [...new Set(gd._fullData.filter(t => t.showlegend !== false).map(t => t.legendgroup))];
}}"""

# rows (lists of cell texts, header first) of the accessible table of the dataframe whose
# header has the column `col` (Streamlit draws tables on a canvas; this table is in the DOM)
TABLE_JS = """(col) => {
  for (const t of document.querySelectorAll("[data-testid='stDataFrame'] table")) {
    const rows = [...t.querySelectorAll('tr')].map(
      r => [...r.querySelectorAll('th, td')].map(c => c.innerText.trim()));
    if (rows.length && rows[0].includes(col)) return rows;
  }
  return null;
}"""


# --------------------------------------------------------------------------- seeding


def _seed(tmp_path: Path, url: str) -> int:
    """One campaign (6 ensembles: 3 tasks x 2 grid points, jobs alternately SUCCEEDED and
    FAILED) settled as SUCCEEDED, with every item's data; and a newer never-launched one."""
    import dash_testkit as seed
    from test_dash_result_status import settle
    from test_dash_trust import _local_attempts, _patch_fit_payload

    from backend import service
    from backend.campaigns import DEMO_CONFIG
    from backend.db import Job, get_engine

    s = seed.seed(
        url,
        n_jobs=12,
        jobs_per_ensemble=2,
        train_states=("SUCCEEDED", "FAILED"),
        with_diagnostics=True,
    )
    jobs = Job.__table__.c
    with get_engine(url).begin() as conn:
        conn.execute(
            sa.update(Job.__table__)
            .where(jobs.campaign_id == s.campaign_id, jobs.task == "task0")
            .values(task=SIGNAL)
        )
    # item 1: barely better than chance on the signal task
    diag = seed.engine_diagnostics()
    diag["auc"], diag["member_auc"] = 0.509, [0.505, 0.513]
    settle(url, s.campaign_id, diag_by_task={SIGNAL: diag})  # status SUCCEEDED (item 4a)

    # item 2: a scan point that did not converge and a curve not monotonic right of the minimum
    def bad_scan(p):
        scan = p["scan"]
        scan["converged"][3] = False
        scan["non_monotonic"][17] = True
        scan["flags"] = ["not_converged", "non_monotonic_right"]

    _patch_fit_payload(url, s.campaign_id, "scan", bad_scan)
    # item 6: free local runs using 1.5 cores (the GPU readings stay: item 4d)
    _local_attempts(url)
    # item 4e: the failed job 2's attempt, with its traceback and its log in the launcher folder
    seed.failed_attempt_with_log(
        url,
        s.train_job_ids[1],
        tmp_path / "launcher",
        "nsbi-items-2",
        f"step 0 train_loss 0.9\n{LOG_TEXT}\n",
        f'{TRACEBACK}\nTraceback (most recent call last):\n  File "worker.py", line 300, in run',
    )
    # item 4b: a newer campaign that was never launched
    service.create_campaign({**DEMO_CONFIG, "name": "never-launched"})
    return s.campaign_id


def _n_campaigns(url: str) -> int:
    from backend.db import Campaign, get_engine

    with get_engine(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(Campaign.__table__)).scalar_one()


# --------------------------------------------------------------------------- browser helpers


def _click_until(click, done, tries: int = 3, timeout_ms: int = 20_000) -> None:
    """click(), then wait for done(timeout_ms); a click that lands while the script reruns
    can be dropped, so it is repeated (the last wait fails loudly)."""
    for i in range(tries):
        try:
            click()
            done(timeout_ms)
            return
        except Exception:  # noqa: BLE001 - retried; the last try raises
            if i == tries - 1:
                raise


INPUT_VALUE_JS = """([l, v]) => [...document.querySelectorAll('input[aria-label]')].some(
  i => i.getAttribute('aria-label') === l && i.value === v)"""


def _goto(page, name: str) -> None:
    """Open a page from the navigation; wait until its own title is drawn (the previous page's
    elements stay on screen, stale, while the new script runs)."""
    page.get_by_role("link", name=name).click()
    page.wait_for_function(
        "(t) => [...document.querySelectorAll(\"[data-testid='stApp'] h1\")]"
        ".some(h => h.innerText.trim() === t)",
        arg=name,
    )


def _shows_value(page, label: str, value: str, timeout_ms: int = 20_000) -> None:
    """The select box `label` shows `value` (waited for: a rerun may still be drawing it)."""
    try:
        page.wait_for_function(INPUT_VALUE_JS, arg=[label, value], timeout=timeout_ms)
    except Exception as exc:  # noqa: BLE001 - reported with what is shown
        shown = page.get_by_label(label, exact=True).input_value()
        raise AssertionError(f"{label!r} shows {shown!r}, expected {value!r}") from exc


def _choose(page, label: str, option: str) -> None:
    """Pick `option` in the select box labelled `label`."""
    box = page.get_by_label(label, exact=True)

    def click():
        box.click()
        page.get_by_role("option", name=option, exact=True).click(timeout=5_000)

    _click_until(
        click,
        lambda t: page.wait_for_function(INPUT_VALUE_JS, arg=[label, option], timeout=t),
    )


def _fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Tab")


def _below(page, label: str, text) -> None:
    """The error `text` is shown right under the field `label` (not only somewhere on the page)."""
    err = page.locator("[data-testid='stAlert']").filter(has_text=text)
    err.wait_for()
    f, e = page.get_by_label(label, exact=True).bounding_box(), err.bounding_box()
    assert f and e
    gap = e["y"] - (f["y"] + f["height"])
    overlap = min(f["x"] + f["width"], e["x"] + e["width"]) - max(f["x"], e["x"])
    assert 0 <= gap < 200 and overlap > 0, (label, text, f, e)


def _segment(page, name: str, done) -> None:
    group = page.locator("[data-testid='stButtonGroup']")
    _click_until(lambda: group.get_by_text(name, exact=True).click(), done)


def _row_marker(page, row: int) -> None:
    """Click the selection box of `row` in the first table on the page (a canvas)."""
    table = page.locator("[data-testid='stDataFrame']").first
    table.scroll_into_view_if_needed()
    select_dataframe_row(table, row)


BUTTONS_JS = """(prefix) => Object.fromEntries([...document.querySelectorAll('button')]
  .filter(b => b.innerText.trim().startsWith(prefix)).map(b => [b.innerText.trim(), b.disabled]))"""


def _buttons_are(page, prefix: str, expected: dict[str, bool], timeout_ms: int = 15_000) -> None:
    """The buttons whose label starts with `prefix` are {label: disabled} `expected` (read in
    one go: a rerun may replace them between two reads)."""
    try:
        page.wait_for_function(
            f"(p) => JSON.stringify(({BUTTONS_JS})(p)) === {json.dumps(json.dumps(expected, separators=(',', ':')))}",
            arg=prefix,
            timeout=timeout_ms,
        )
    except Exception as exc:  # noqa: BLE001 - reported with what is shown
        raise AssertionError(
            f"buttons {page.evaluate(BUTTONS_JS, prefix)}, expected {expected}"
        ) from exc


# --------------------------------------------------------------------------- the walk


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """One seeded database, one dashboard and one Chromium for the tests of this file:
    (base URL, database URL, campaign id, browser)."""
    home = tmp_path_factory.mktemp("items")
    url = f"sqlite:///{home / 'nsbi.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        cid = _seed(home, url)
        with streamlit_server(home) as base, chromium_page(1440, 900) as page:
            yield base, url, cid, page.context.browser


def test_items_walk(dashboard):
    base, url, cid, browser = dashboard
    n_before = _n_campaigns(url)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    # ---- Campaigns: the estimate by task, then refusals beside their fields (item 5)
    page.goto(base)
    wait_title(page)
    new = page.get_by_text("New campaign")
    _click_until(new.click, lambda t: page.get_by_label("Backend").wait_for(timeout=t))
    _choose(page, "Backend", "gce")
    _choose(page, "Machine type", "n1-standard-8")
    _choose(page, "GPU type", "nvidia-tesla-t4")
    _fill(page, "GPUs", "2")
    page.get_by_text("Spot (preemptible)").click()
    _fill(page, "Zones (comma separated)", "us-central1-a")
    _click_until(
        page.get_by_role("button", name="Estimate").click,
        lambda t: page.get_by_text("Estimate by task").wait_for(timeout=t),
    )
    page.wait_for_function(f"({TABLE_JS})('price (USD/h)') !== null")
    rows = page.evaluate(TABLE_JS, "price (USD/h)")
    head, body = rows[0], [dict(zip(rows[0], r)) for r in rows[1:] if len(r) == len(rows[0])]
    assert {"kind", "task", "GPU-hours", "price (USD/h)", "machine type", "GPU", "pricing"} <= (
        set(head)
    ), head
    train = [r for r in body if r["kind"] == "train"]
    assert train and all(r["task"] for r in train), body
    assert {r["machine type"] for r in body} == {"n1-standard-8"}
    assert {r["GPU"] for r in body} == {"2 × nvidia-tesla-t4"}
    assert {r["pricing"] for r in body} == {"spot"}
    assert all(float(r["GPU-hours"].replace(",", "")) > 0 for r in body), body
    assert all(float(r["price (USD/h)"].replace(",", "")) > 0 for r in body), body
    screenshot(page, "items-campaigns-estimate", show=page.get_by_text("Estimate by task"))

    _fill(page, "Ensemble size", "-3")
    _fill(page, "GPUs", "9999")
    _fill(page, "Budget (USD, 0 = none)", "1000000000000000")
    _click_until(  # a refused form: clicking again changes nothing
        page.get_by_role("button", name="Create and launch").first.click,
        lambda t: page.get_by_text("The form has problems").wait_for(timeout=t),
    )
    _below(page, "Ensemble size", "ensemble size must be at least 1")
    # (the page draws "<=" in a message as "≤")
    _below(page, "GPUs", re.compile(r"backend\.gpu_count: expected an integer (<=|≤) 16, got 9999"))
    _below(
        page,
        "Budget (USD, 0 = none)",
        re.compile(r"backend\.budget_usd: expected a number (<=|≤) 1e\+09, got 1000000000000000"),
    )
    assert page.get_by_text("Estimate by task").count() == 0  # no estimate of a refused form
    assert _n_campaigns(url) == n_before  # nothing created
    screenshot(page, "items-campaigns", show=page.get_by_text("ensemble size must be"))

    # ---- Monitor (item 4)
    _goto(page, "Monitor")
    # (b) the launched campaign with jobs, not the newer never-launched one; (a) no stale
    # "(ACTIVE)" in the selector, and the status reads SUCCEEDED
    _shows_value(page, "Campaign", f"{cid} · seeded")
    page.wait_for_function(f"({METRIC_JS})('Status') === 'SUCCEEDED'", timeout=30_000)
    # live off: no refresh between the clicks below
    _click_until(
        page.get_by_text("Live", exact=True).click,
        lambda t: page.get_by_role("switch", name="Live", checked=False).wait_for(timeout=t),
    )
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    # (c) the succeeded job 1 (row 0): nothing to retry
    _click_until(
        lambda: _row_marker(page, 0),
        lambda t: page.get_by_text("The selected jobs are finished").wait_for(timeout=t),
    )
    _buttons_are(page, "Retry jobs", {"Retry jobs": True})
    # with the failed job 2 (row 1) as well, Retry takes that one
    _click_until(
        lambda: _row_marker(page, 1),
        lambda t: page.get_by_role("button", name="Retry jobs (1)").wait_for(timeout=t),
    )
    _buttons_are(page, "Retry jobs", {"Retry jobs (1)": False})
    # (e) job 2 alone: its traceback and output, and the output as a file
    _click_until(
        lambda: _row_marker(page, 0),
        lambda t: page.get_by_text("History of job 2").wait_for(timeout=t),
    )
    page.get_by_text("Error and traceback").wait_for()
    codes = page.locator("[data-testid='stCode']")
    assert TRACEBACK in codes.filter(has_text="Traceback").first.inner_text()
    codes.filter(has_text=LOG_TEXT).first.wait_for()
    with page.expect_download() as got:
        page.get_by_role("button", name="Download output").click()
    download = got.value
    assert download.suggested_filename.endswith(".log")
    assert LOG_TEXT in Path(download.path()).read_text()
    screenshot(page, "items-monitor", show=page.get_by_text("Error and traceback"))
    # (d) GPU readings: the GPU panel, no "no GPU" note
    _segment(page, "Resource usage", lambda t: wait_chart(page, "GPU", timeout_ms=t))
    wait_chart(page, "CPU and memory")
    gpu = page.evaluate(
        f"""() => {{ const g = {chart_js("GPU")};
          return {{points: g._fullData.map(t => (t.x || []).length),
                   notes: (g._fullLayout.annotations || []).map(a => a.text)}}; }}"""
    )
    assert gpu["points"] and min(gpu["points"]) > 0, gpu
    assert any("GPU utilisation" in n for n in gpu["notes"]), gpu
    assert page.get_by_text("No GPU").count() == 0
    screenshot(page, "items-monitor-gpu", show=page.locator(".js-plotly-plot").first)

    # ---- Diagnostics: AUC 0.509 on a signal task is AMBER (item 1)
    _goto(page, "Diagnostics")
    # other pages list the campaign with its final status
    _shows_value(page, "Campaign", f"{cid} · seeded (SUCCEEDED)")
    task = page.get_by_label("Ratio task", exact=True)
    task.wait_for()
    if task.input_value() != SIGNAL:  # the page opens on the worst task
        _choose(page, "Ratio task", SIGNAL)
    auc = page.locator("[data-testid='stMarkdownContainer']").filter(
        has=page.locator("strong", has_text=re.compile(r"^AUC$"))
    )
    auc.wait_for()
    assert "0.509" in auc.inner_text() and "signal task" in auc.inner_text()
    badge = auc.locator(".stMarkdownBadge")
    assert badge.inner_text() == "AMBER"
    r, g, b = map(int, re.findall(r"\d+", badge.evaluate("e => getComputedStyle(e).color"))[:3])
    assert r > g, (r, g, b)  # orange text, not green
    screenshot(page, "items-diagnostics", show=auc)

    # ---- Fit: the scan's quality flags (item 2)
    _goto(page, "Fit")
    page.get_by_text("Fitted parameters").wait_for()
    warning = page.locator("[data-testid='stAlert']").filter(has_text="Scan needs a look")
    _segment(page, "Scan", lambda t: warning.wait_for(timeout=t))
    text = warning.inner_text()
    assert "some scan points did not converge" in text, text
    assert "not monotonic right of the best fit" in text, text
    assert "1 point(s) without a converged fit are left out of the curve" in text, text
    wait_chart(page, "Profile likelihood scan")
    n_points = page.evaluate(f"() => {chart_js('Profile likelihood scan')}._fullData[0].x.length")
    assert n_points == 20  # 21 scanned, the one that did not converge left out
    screenshot(page, "items-fit", show=warning)

    # ---- Compare: grid points of the chosen task (item 3)
    _goto(page, "Compare")
    page.wait_for_function(f"({COMPARE_GROUPS_JS})().length > 0")
    expected = [f"{cid} · {SIGNAL} g0", f"{cid} · {SIGNAL} g1"]
    _segment(
        page,
        "Grid points",
        lambda t: page.wait_for_function(
            f"({COMPARE_GROUPS_JS})().join('|') === {json.dumps('|'.join(expected))}",
            timeout=t,
        ),
    )
    _shows_value(page, "Task", SIGNAL)
    _choose(page, "Task", "task1")
    page.wait_for_function(
        f"({COMPARE_GROUPS_JS})().join('|') === '{cid} · task1 g0|{cid} · task1 g1'"
    )
    screenshot(page, "items-compare", show=page.locator(".js-plotly-plot").first)

    # ---- Usage and cost (item 6)
    _goto(page, "Usage and cost")
    page.wait_for_function(f"({METRIC_JS})('CPU-hours') !== null")
    cpu = page.evaluate(METRIC_JS, "CPU-hours")
    wall = page.evaluate(METRIC_JS, "Wall time")
    assert float(cpu.replace(",", "")) > 0, cpu
    assert re.fullmatch(r"\d+ h \d{2} min", wall) and not wall.startswith("0 h"), wall
    assert page.evaluate(METRIC_JS, "Total cost (USD)") == "0.00"  # local runs are free
    _segment(page, "Over time", lambda t: wait_chart(page, "over time", timeout_ms=t))
    ticks_js = f"""() => {{ const g = {chart_js("over time")};
      return g ? [...g.querySelectorAll('.xtick text')].map(t => t.textContent) : []; }}"""
    page.wait_for_function(f"({ticks_js})().length > 0")
    ticks = page.evaluate(ticks_js)
    print(f"usage over time: x ticks {ticks}")
    assert "cpu hours" in page.evaluate(f"() => {chart_js('over time')}.layout.title.text")
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t) for t in ticks), ticks  # whole days
    screenshot(page, "items-costs", show=page.locator(".js-plotly-plot").first)


# --------------------------------------------------------------------------- estimate by task


def test_estimate_breakdown_has_one_row_per_ratio_task(dashboard):
    base, url, _, browser = dashboard
    n_before = _n_campaigns(url)
    page = browser.new_page(viewport={"width": 1440, "height": 900})  # a session of its own
    page.set_default_timeout(60_000)
    page.goto(base)
    wait_title(page)
    new = page.get_by_text("New campaign")
    _click_until(new.click, lambda t: page.get_by_label("Backend").wait_for(timeout=t))
    _click_until(
        page.get_by_role("button", name="Estimate").click,
        lambda t: page.get_by_text("Estimate by task").wait_for(timeout=t),
    )
    page.wait_for_function(f"({TABLE_JS})('price (USD/h)') !== null")
    rows = page.evaluate(TABLE_JS, "price (USD/h)")
    body = [dict(zip(rows[0], r)) for r in rows[1:] if len(r) == len(rows[0])]
    screenshot(page, "items-campaigns-estimate-tasks", show=page.get_by_text("Estimate by task"))
    assert _n_campaigns(url) == n_before  # estimating creates nothing
    # the demo form: S and SBI against B and one systematic of B (up, down); ensemble 4 in jobs
    # of 2 members: 2 jobs per ratio task, in one row each
    train = {r["task"]: r["jobs"] for r in body if r["kind"] == "train"}
    assert train == {
        "S_vs_B": "2",
        "SBI_vs_B": "2",
        "m4l_scale_up_B": "2",
        "m4l_scale_down_B": "2",
    }, train
