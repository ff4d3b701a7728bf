"""Browser walk of issue 17 (Playwright, Debian chromium, 1440 x 900): a campaign whose ensemble
check fails shows "needs review" on Campaigns, Monitor and Fit; Diagnostics opens on the worst
task; the Fit page's tables; Compare; a job's output on Monitor; CPU-hours on Usage and cost; labels
not cut off; and no request leaves the machine. Saves a screenshot of every page under
test-artifacts/screenshots/ (trust-*.png), which CI keeps for reviewers."""

from __future__ import annotations

from urllib.parse import urlparse

from dash_browser import (
    BROWSER_MARKS,
    chromium_page,
    screenshot,
    streamlit_server,
    wait_chart,
    wait_title,
)
from test_dash_browser import METRIC_JS

pytestmark = BROWSER_MARKS

# elements whose text is cut off (ellipsis): metric values and button labels
CUT_OFF_JS = """() => {
  const out = [];
  const sel = "[data-testid='stMetricValue'] div, [data-testid='stMetricValue'], button p";
  for (const el of document.querySelectorAll(sel)) {
    if (el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1) out.push(el.innerText);
  }
  return out;
}"""


def _seed(tmp_path) -> int:
    import dash_testkit as seed
    from test_dash_result_status import settle, spoiled_diagnostics

    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    s = seed.seed(url, n_jobs=6, train_states=("SUCCEEDED", "FAILED"), with_diagnostics=True)
    settle(url, s.campaign_id, diag_by_task={"task1": spoiled_diagnostics()})
    seed.failed_attempt_with_log(
        url,
        s.train_job_ids[1],
        tmp_path / "launcher",
        "nsbi-2-1",
        "".join(f"step {i} train_loss {1 / (1 + i):.4f}\n" for i in range(0, 400, 20)),
        "RuntimeError: NaN loss at step 380\n"
        'Traceback (most recent call last):\n  File "worker.py", line 300, in run',
    )
    return s.campaign_id


def _badge(page) -> str:
    loc = page.get_by_text("needs review: task1 closure χ²/ndf 21 > 3").first
    loc.wait_for(timeout=60_000)
    return loc.inner_text()


def test_trust_walk_every_page(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    _seed(tmp_path)
    outside: list[str] = []
    with streamlit_server(tmp_path) as base, chromium_page(1440, 900) as page:
        page.on(
            "request",
            lambda r: (
                outside.append(r.url)
                if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                and not r.url.startswith(("data:", "blob:"))
                else None
            ),
        )
        page.goto(base)
        wait_title(page)
        # Campaigns: the result column says needs review; the demo button reads as in README
        # (the table is a canvas; its accessible cells are in the DOM, hidden)
        page.get_by_text("needs review").first.wait_for(state="attached")
        page.get_by_role("button", name="Launch demo campaign").wait_for()
        page.get_by_text("New campaign").click()
        page.get_by_role("button", name="Create and launch").first.wait_for()
        assert page.evaluate(CUT_OFF_JS) == []
        screenshot(page, "trust-campaigns")

        # Monitor: status in full, the badge, a failed job's output and traceback
        page.get_by_role("link", name="Monitor").click()
        wait_title(page)
        assert "needs review" in _badge(page)
        page.locator("[data-testid='stMetricValue']").first.wait_for()
        assert page.evaluate(CUT_OFF_JS) == []
        screenshot(page, "trust-monitor")

        # Diagnostics: opens on the worst task
        page.get_by_role("link", name="Diagnostics").click()
        wait_title(page)
        page.get_by_text("RED").first.wait_for()
        wait_chart(page, "Calibration: task1")
        screenshot(page, "trust-diagnostics")

        # Fit: badge, parameter table, impacts table, scan and toys
        page.get_by_role("link", name="Fit").click()
        wait_title(page)
        assert "needs review" in _badge(page)
        page.get_by_text("Fitted parameters").wait_for()
        page.get_by_text("Error breakdown of mu").wait_for()
        screenshot(page, "trust-fit-parameters")
        group = page.locator("[data-testid='stButtonGroup']")
        group.get_by_text("Impacts", exact=True).click()
        page.get_by_text("Impacts on mu").wait_for()
        screenshot(page, "trust-fit-impacts", show=page.get_by_text("Impacts on mu"))
        group.get_by_text("Toys", exact=True).click()
        page.get_by_text("Pull mean").wait_for()
        assert "±" in page.evaluate(METRIC_JS, "Pull mean")
        screenshot(page, "trust-fit-toys")
        group.get_by_text("Jobs", exact=True).click()
        page.get_by_text("all 4 fit-stage jobs finished").wait_for()
        screenshot(page, "trust-fit-jobs")

        # Compare: the campaign's ensembles side by side; the failed check shows there too
        page.get_by_role("link", name="Compare").click()
        wait_title(page)
        wait_chart(page, "Loss and validation")
        page.get_by_text("red: closure_chi2_ndf").first.wait_for(state="attached")
        # the fit results carry the campaign's result status with its failed check
        page.get_by_text("needs review: task1 closure χ²/ndf 21 > 3").first.wait_for(
            state="attached"
        )
        screenshot(page, "trust-compare")
        screenshot(
            page, "trust-compare-diagnostics", show=page.get_by_role("heading", name="Fit results")
        )

        # Usage and cost: CPU-hours and wall time next to cost and GPU-hours
        page.get_by_role("link", name="Usage and cost").click()
        wait_title(page)
        page.get_by_text("CPU-hours").first.wait_for()
        page.get_by_text("Wall time").first.wait_for()
        assert page.evaluate(CUT_OFF_JS) == []
        screenshot(page, "trust-costs")
    assert outside == [], outside  # nothing fetched from outside the machine
