"""Browser test of the Compare page (Playwright, Debian chromium, 1440 x 900): ensembles of two
campaigns overlaid in one colour each, log scale and smoothing, the settings table with the
differences highlighted, campaigns side by side. Screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

from dash_browser import (
    BROWSER_MARKS,
    chart_js,
    chromium_page,
    screenshot,
    streamlit_server,
    wait_title,
)

from dashboard import figures

pytestmark = BROWSER_MARKS

CURVES_JS = f"""() => {{
  const gd = {chart_js("Loss and validation curves")};
  if (!gd) return null;
  const lines = gd._fullData.filter(t => t.showlegend !== false);
  return {{groups: [...new Set(lines.map(t => t.legendgroup))],
          colours: [...new Set(lines.map(t => t.line.color))],
          yaxis: gd._fullLayout.yaxis.type, traces: gd._fullData.length}};
}}"""


def test_compare_overlays_ensembles_and_campaigns(tmp_path, monkeypatch):
    import dash_testkit as seed

    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    first = seed.seed(
        url, n_jobs=12, jobs_per_ensemble=2, with_diagnostics=True, train_states=("SUCCEEDED",)
    )
    second = seed.seed(
        url,
        n_jobs=12,
        jobs_per_ensemble=2,
        name="second",
        seed_value=1,
        train_states=("SUCCEEDED",),
    )
    with streamlit_server(tmp_path) as base, chromium_page(1440, 900) as page:
        page.goto(f"{base}/compare")
        wait_title(page)
        page.wait_for_function(f"(({CURVES_JS})() || {{groups: []}}).groups.length === 6")
        shown = page.evaluate(CURVES_JS)
        # the newest campaign's six ensembles, one colour each; task, grid point and width differ
        assert shown["groups"] == [
            f"{second.campaign_id} · task{e % 3} g{e // 3}" for e in range(6)
        ]
        assert shown["colours"] == [c.lower() for c in figures.COMPARE_COLOURS[:6]]
        assert shown["yaxis"] == "linear" and shown["traces"] == 24  # smoothed + faint raw
        page.get_by_text("Fit results").wait_for()
        page.get_by_text("settings differ between the runs").wait_for()
        assert "3 of" in page.get_by_text("settings differ between the runs").inner_text()
        screenshot(page, "compare-ensembles")

        page.get_by_text("Log scale").click()
        page.wait_for_function(f"(({CURVES_JS})() || {{}}).yaxis === 'log'")
        settings = page.get_by_text("Settings", exact=True)
        settings.scroll_into_view_if_needed()
        screenshot(page, "compare-settings", show=page.get_by_text("settings differ"))

        page.locator("[data-testid='stButtonGroup']").get_by_text("Campaigns").click()
        page.wait_for_function(f"(({CURVES_JS})() || {{groups: []}}).groups.length === 2")
        groups = page.evaluate(CURVES_JS)["groups"]
        assert groups == [f"{second.campaign_id} · second", f"{first.campaign_id} · seeded"]
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        screenshot(page, "compare-campaigns")
